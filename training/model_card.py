"""Model card (README.md) and sample grid written into an exported ControlNet's diffusers folder."""

from __future__ import annotations

import sys
from pathlib import Path


def render_samples(checkpoint: Path, model, out: Path, n: int = 2) -> Path | None:
    """Generate ``n`` validation samples (condition | generated | original, captioned) with the
    exported weights on the run's base; None (with a warning) when base or data are missing."""
    from PIL import Image

    from training.config import TrainConfig
    from training.validate import generate_rows, label_grid, read_validation

    try:
        config = TrainConfig.from_json((Path(checkpoint) / "config.json").read_text())
        samples = read_validation(config, n)
        pipe = base_pipeline(config.base_model, model)
        grid = generate_rows(pipe, samples, config.resolution)
    except (OSError, ValueError) as err:
        print(f"warning: no sample grid in the model card: {err}", file=sys.stderr)
        return None
    step = Path(checkpoint).name.rpartition("-")[2]
    captions = [s["caption"] for s in samples]
    Image.fromarray(label_grid(grid, captions, int(step) if step.isdigit() else 0)).save(out)
    return Path(out)


def base_pipeline(base_model: str, controlnet):
    """The ControlNet pipeline of ``base_model``'s family with ``controlnet``, DDIM."""
    import torch

    from training.families import family_class, family_of_controlnet

    family = family_class(family_of_controlnet(dict(controlnet.config)))
    return family.base_pipeline(base_model, controlnet.to(torch.float32))


def model_card(meta: dict[str, str], single_file: str, has_samples: bool) -> str:
    """README.md for the diffusers folder: what was trained on what, and how to load it."""
    sdxl = meta["hintset.architecture"] == "sdxl"
    pipe = "StableDiffusionXLControlNetPipeline" if sdxl else "StableDiffusionControlNetPipeline"
    conditions = meta["hintset.conditions"]
    tags = ["controlnet", "hintset", "diffusers", "stable-diffusion-xl" if sdxl
            else "stable-diffusion", *conditions.split(",")]  # fmt: skip
    lines = [
        "---",
        f"base_model: {meta['hintset.base_model']}",
        "library_name: diffusers",
        "tags:",
        *[f"- {t}" for t in tags],
        "---",
        "",
        f"# ControlNet ({conditions}) trained with hintset",
        "",
        "| | |",
        "| --- | --- |",
        f"| base model | `{meta['hintset.base_model']}` ({'SDXL' if sdxl else 'SD 1.x/2.x'}) |",
        f"| condition | `{conditions}` ({meta['hintset.conditioning_channels']} input channels) |",
        f"| steps | {meta['hintset.steps']} |",
        f"| resolution | {meta['hintset.resolution']} |",
        f"| dataset | `{meta['hintset.dataset']}` |",
        f"| dataset manifest sha256 | `{meta['hintset.dataset_manifest_sha256']}` |",
        "",
    ]
    if has_samples:
        lines += ["![samples: condition | generated | original](samples.png)", ""]
    lines += [
        "## Use",
        "",
        "```python",
        f"from diffusers import ControlNetModel, {pipe}",
        "",
        'controlnet = ControlNetModel.from_pretrained("path/to/diffusers")',
        f'pipe = {pipe}.from_pretrained("{meta["hintset.base_model"]}", controlnet=controlnet)',
        'image = pipe("a caption", image=control_image).images[0]  # control_image: PIL RGB',
        "```",
        "",
        f"The single file `{single_file}` (next to this folder) holds the same weights"
        + (
            " with diffusers key names, the layout ComfyUI loads for SDXL ControlNets."
            if sdxl
            else " in the original ControlNet layout (`control_model.*`) for AUTOMATIC1111 and "
            "ComfyUI, with its original config as a same-name `.yaml`. Offline in diffusers: "
            f'`ControlNetModel.from_single_file("{single_file}", config="path/to/diffusers")`.'
        ),
        "",
    ]
    return "\n".join(lines)
