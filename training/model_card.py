"""Model card (README.md) and sample grid written into an exported ControlNet's diffusers folder."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from training.families import family_of_architecture


def render_samples(checkpoint: Path, model, out: Path, n: int = 2) -> list[str] | None:
    """Generate ``n`` validation samples (condition | generated | original, captioned) with the
    exported weights on the run's base into ``out``; their captions, or None (with a warning)
    when base or data are missing."""
    from PIL import Image

    from training.config import TrainConfig
    from training.validate import generate_rows, label_grid, read_validation

    try:
        config = TrainConfig.from_json((Path(checkpoint) / "config.json").read_text())
        samples = read_validation(config, n)
        pipe = base_pipeline(config.base_model, model)
        grid = generate_rows(pipe, samples, config.resolution, image_arg=_family(model).IMAGE_ARG)
    except (OSError, ValueError) as err:
        print(f"warning: no sample grid in the model card: {err}", file=sys.stderr)
        return None
    step = Path(checkpoint).name.rpartition("-")[2]
    captions = [s["caption"] for s in samples]
    Image.fromarray(label_grid(grid, captions, int(step) if step.isdigit() else 0)).save(out)
    return captions


def _family(controlnet):
    """The family class a ControlNet model belongs to."""
    from training.families import family_class, family_of_controlnet

    return family_class(family_of_controlnet(dict(controlnet.config), type(controlnet).__name__))


def base_pipeline(base_model: str, controlnet):
    """The ControlNet pipeline of ``base_model``'s family with ``controlnet`` (SD: DDIM)."""
    import torch

    return _family(controlnet).base_pipeline(base_model, controlnet.to(torch.float32))


def base_info(base_model: str) -> dict[str, str]:
    """What a base says about itself: its hub id (a hub id, or a local Hugging Face cache
    snapshot; never another local path), licence (its model card) and prediction type."""
    import yaml

    info: dict[str, str] = {}
    path = Path(base_model)
    if not path.exists():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", base_model):
            info["hub_id"] = base_model
        return info
    if m := re.search(r"models--([^/]+)--([^/]+)/snapshots/", path.resolve().as_posix() + "/"):
        info["hub_id"] = f"{m[1]}/{m[2]}"
    try:
        sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        info["prediction_type"] = {"v_prediction": "v"}.get(sched["prediction_type"], "epsilon")
    except (OSError, ValueError, KeyError):
        pass
    try:
        head = (path / "README.md").read_text().split("---")[1]
        info["license"] = str(yaml.safe_load(head)["license"])
    except (OSError, IndexError, ValueError, KeyError, TypeError, yaml.YAMLError):
        pass
    return info


def front_matter(meta: dict[str, str], captions: list[str] | None) -> dict:
    """The card's metadata for the Hub: valid YAML whatever the captions and paths hold, a
    ``base_model`` only when it is a hub id (never a local path), licence, pipeline tag, tags."""
    family = family_of_architecture(meta["hintset.architecture"])
    tags = ["controlnet", "hintset", "diffusers", family.TAG,
            *meta["hintset.conditions"].split(",")]  # fmt: skip
    info = base_info(meta["hintset.base_model"])
    card: dict = {"license": info.get("license", "other"), "library_name": "diffusers",
                  "pipeline_tag": "text-to-image", "tags": tags}  # fmt: skip
    if "hub_id" in info:
        card.update(base_model=info["hub_id"], base_model_relation="adapter")
    if captions:
        card["widget"] = [{"text": c, "output": {"url": "samples.png"}} for c in captions]
    return card


def model_card(
    meta: dict[str, str],
    single_file: str | None,
    captions: list[str] | None,
    problem: str | None = None,
) -> str:
    """README.md for the diffusers folder: what was trained on what, and how to load it."""
    import yaml

    family = family_of_architecture(meta["hintset.architecture"])
    pipe, net = family.pipeline_class().__name__, family.controlnet_class().__name__
    conditions = meta["hintset.conditions"]
    base = meta["hintset.base_model"]
    lines = [
        "---",
        yaml.safe_dump(front_matter(meta, captions), sort_keys=False, allow_unicode=True).strip(),
        "---",
        "",
        f"# ControlNet ({conditions}) trained with hintset",
        "",
        "| | |",
        "| --- | --- |",
        f"| base model | `{base}` ({family.LABEL}) |",
        f"| condition | `{conditions}` ({meta['hintset.conditioning_channels']} input channels) |",
        f"| steps | {meta['hintset.steps']} |",
        f"| resolution | {meta['hintset.resolution']} |",
        f"| dataset | `{meta['hintset.dataset']}` |",
        f"| dataset manifest sha256 | `{meta['hintset.dataset_manifest_sha256']}` |",
        "",
    ]
    if captions:
        lines += ["![samples: condition | generated | original](samples.png)", ""]
    lines += [
        "## Use",
        "",
        "```python",
        f"from diffusers import {net}, {pipe}",
        "",
        f'controlnet = {net}.from_pretrained("path/to/diffusers")',
        f"pipe = {pipe}.from_pretrained({base!r}, controlnet=controlnet)",
        f'image = pipe("a caption", {family.IMAGE_ARG}=control_image).images[0]  # PIL RGB',
        "# control_image: the condition map as a PIL RGB image",
        "```",
        "",
    ]
    if problem:
        lines += [
            f"These weights load in diffusers only: their base is not a standard {family.LABEL} "
            f"({problem}), and AUTOMATIC1111 and ComfyUI rebuild a ControlNet from a single "
            "file assuming the standard numbers"
            + (
                f"; `{single_file}` is written for diffusers' `from_single_file` only."
                if single_file
                else ", so no single file was written."
            ),  # fmt: skip
            "",
        ]
    if single_file and not problem:
        lines += [
            f"The single file `{single_file}` (next to this folder) holds the same weights"
            + (
                f" with diffusers key names, the layout ComfyUI loads for {family.LABEL} "
                "ControlNets."
                if family.SINGLE_FILE == "diffusers"
                else " in the original ControlNet layout (`control_model.*`) for AUTOMATIC1111 "
                "and ComfyUI, which read its numbers from the key shapes. Offline in diffusers: "
                f'`ControlNetModel.from_single_file("{single_file}", config="path/to/diffusers")`.'
            ),
            "",
        ]
    return "\n".join(lines)
