"""Export a training checkpoint: diffusers folder + one .safetensors in the layout the UIs load
for the family (original ``control_model.*`` keys for SD 1.x/2.x; diffusers keys for SDXL, SD3
and FLUX.1, which ComfyUI's load_controlnet reads as they are)."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from training.families import family_class, family_of_controlnet, split_union

PREFIX = "control_model."

_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
]


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def to_original_key(key: str, layers_per_block: int) -> str:
    """One diffusers ControlNetModel key -> its key in the original (ldm/cldm) layout."""
    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "controlnet_cond_embedding.conv_in": "input_hint_block.0",
        "controlnet_mid_block": "middle_block_out.0",
    }
    head, _, leaf = key.rpartition(".")
    if head in fixed:
        return f"{PREFIX}{fixed[head]}.{leaf}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)", head):
        return f"{PREFIX}input_hint_block.{2 * (int(m[1]) + 1)}.{leaf}"
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)", head):
        return f"{PREFIX}zero_convs.{m[1]}.0.{leaf}"
    step = layers_per_block + 1
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"{PREFIX}input_blocks.{1 + int(m[1]) * step + int(m[2])}.0.{_resnet(m[3])}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        return f"{PREFIX}input_blocks.{1 + int(m[1]) * step + int(m[2])}.1.{m[3]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"{PREFIX}input_blocks.{1 + int(m[1]) * step + layers_per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{PREFIX}middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"{PREFIX}middle_block.1.{m[1]}"
    if head == "controlnet_cond_embedding.conv_out":
        raise AssertionError("handled by caller")
    raise KeyError(f"no original-layout name for {key}")


def to_original(state: dict, config: dict) -> dict:
    """Whole state dict -> original layout (general in block and hint-block counts)."""
    n_hint = len(config.get("conditioning_embedding_out_channels", (16, 32, 96, 256)))
    out_idx = 2 * (2 * (n_hint - 1) + 1)  # conv_in, 2 convs per step, then conv_out
    lpb = config["layers_per_block"]
    result = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        if head == "controlnet_cond_embedding.conv_out":
            result[f"{PREFIX}input_hint_block.{out_idx}.{leaf}"] = value
        else:
            result[to_original_key(key, lpb)] = value
    return result


def single_file_problem(config: dict) -> str | None:
    """The settings the UIs cannot rebuild from a single file (None: none): the family's
    ``SINGLE_FILE_STANDARD`` (SD's numbers for AUTOMATIC1111/ComfyUI, FLUX's/SD3's head size)."""
    family = family_class(family_of_controlnet(config))
    got = family.single_file_settings(config)
    wrong = [f"{k}={v}" for k, v in got.items() if v != family.SINGLE_FILE_STANDARD[k]]
    return ", ".join(wrong) or None


def cldm_yaml(config: dict) -> str:
    """The original ``cldm.ControlNet`` config for these weights (the numbers cldm_v15.yaml
    holds), written next to the single file for tools built on lllyasviel's ControlNet code
    (AUTOMATIC1111's extension ignores it since 1.1.400: it reads the numbers from the keys)."""
    import yaml

    mc = config["block_out_channels"][0]
    heads = config["attention_head_dim"]
    params = {
        "image_size": 32,
        "in_channels": config["in_channels"],
        "hint_channels": config["conditioning_channels"],
        "model_channels": mc,
        "attention_resolutions": [
            2**i for i, t in enumerate(config["down_block_types"]) if t.startswith("CrossAttn")
        ],  # fmt: skip
        "num_res_blocks": config["layers_per_block"],
        "channel_mult": [c // mc for c in config["block_out_channels"]],
        "use_spatial_transformer": True,
        "transformer_depth": 1,
        "context_dim": config["cross_attention_dim"],
        "use_checkpoint": True,
        "legacy": False,
        "use_linear_in_transformer": bool(config.get("use_linear_projection")),
    }
    if isinstance(heads, int):
        params["num_heads"] = heads
    else:  # SD 2.x lists heads per level; the original config gives the channels per head
        params["num_head_channels"] = mc // heads[0]
    tree = {"model": {"target": "cldm.cldm.ControlLDM", "params": {
        "control_stage_config": {"target": "cldm.cldm.ControlNet", "params": params}}}}  # fmt: skip
    return yaml.safe_dump(tree, sort_keys=False)


def _file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_metadata(checkpoint: Path, model_config: dict) -> dict[str, str]:
    """What the weights are: base model, condition(s), steps, resolution, dataset manifest sha256
    (string values, as safetensors metadata requires)."""
    from training.config import TrainConfig

    cfg_path = checkpoint / "config.json"
    cfg = TrainConfig.from_json(cfg_path.read_text()) if cfg_path.is_file() else None
    step = checkpoint.name.rpartition("-")[2]
    manifest = Path(cfg.data) / "manifest.json" if cfg else None
    meta = {
        "format": "pt",
        "hintset.base_model": cfg.base_model if cfg else "unknown",
        "hintset.architecture": family_class(family_of_controlnet(model_config)).ARCHITECTURE,
        "hintset.conditions": cfg.condition if cfg else "unknown",
        "hintset.conditioning_channels": str(model_config.get("conditioning_channels", 3)),
        "hintset.steps": step if step.isdigit() else "unknown",
        "hintset.resolution": str(cfg.resolution) if cfg else "unknown",
        "hintset.dataset": cfg.data if cfg else "unknown",
        "hintset.dataset_manifest_sha256": (
            _file_sha256(manifest) if manifest and manifest.is_file() else "unknown"
        ),
    }
    if cfg:
        meta["hintset.train_config"] = cfg.to_json()
    if cfg and cfg.union:  # map -> slot id and the whole table (also in config.json)
        from training.families.union import union_record

        family = split_union(family_of_controlnet(model_config))[0]
        meta["hintset.union"] = json.dumps(union_record(family, cfg.conditions, cfg.data))
    return meta


def modelspec(meta: dict[str, str], config: dict, layout: str, title: str) -> dict[str, str]:
    """Stability AI ModelSpec 1.0.0 keys (``modelspec.*``), which model browsers such as
    SwarmUI read; architecture ids as SwarmUI registers ControlNets."""
    from training.model_card import base_info

    info = base_info(meta["hintset.base_model"])
    base = Path(meta["hintset.base_model"])
    if single_file_problem(config):
        arch = "hintset-custom/controlnet"  # not a standard ControlNet: own id (see spec)
    else:
        arch = family_class(family_of_controlnet(config)).modelspec_architecture(config, info)
    res = meta["hintset.resolution"]
    spec = {
        "sai_model_spec": "1.0.0",
        "architecture": arch,
        "implementation": "diffusers" if layout == "diffusers"
        else "https://github.com/lllyasviel/ControlNet",
        "title": title,
        "description": f"ControlNet ({meta['hintset.conditions']}) trained with hintset for "
        f"{meta['hintset.steps']} steps on {info.get('hub_id') or base.name}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resolution": f"{res}x{res}" if res.isdigit() else "",
        "prediction_type": info.get("prediction_type", ""),
        "license": info.get("license", ""),
    }  # fmt: skip
    return {f"modelspec.{k}": v for k, v in spec.items() if v}


def read_evaluation(path: Path) -> dict:
    """A ``hintset evaluate`` summary (REPORT folder or its summary.json), or ValueError."""
    path = Path(path)
    file = path / "summary.json" if path.is_dir() else path
    try:
        summary = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--evaluation {path}: no readable summary.json ({err})") from None
    if not isinstance(summary, dict) or "runs" not in summary or "metrics" not in summary:
        raise ValueError(f"--evaluation {path}: not a hintset evaluate summary.json")
    return summary


def export(
    checkpoint: Path,
    output: Path,
    *,
    fp16: bool = False,
    ema: bool = False,
    samples: int = 2,
    nonstandard_single_file: bool = False,
    evaluation: Path | None = None,
) -> dict:
    """Write OUTPUT/diffusers (save_pretrained + model card README.md + samples.png) and
    OUTPUT/controlnet-<checkpoint>.safetensors with metadata: original ``control_model.`` keys
    for SD 1.x/2.x (+ the cldm .yaml), diffusers keys for SDXL, SD3 and FLUX.1 (the family's
    ``SINGLE_FILE``: what ComfyUI loads for them).
    A ControlNet the UIs would rebuild wrongly (tiny bases) gets no single file unless
    ``nonstandard_single_file``: it exports for diffusers only."""
    import torch
    from safetensors.torch import save_file

    from pipeline.atomic import atomic_save, atomic_write, normal_modes
    from training.model_card import model_card, render_samples

    checkpoint, output = Path(checkpoint), Path(output)
    summary = read_evaluation(evaluation) if evaluation else None  # refused before any work
    sub = "controlnet_ema" if ema and (checkpoint / "controlnet_ema").exists() else "controlnet"
    family = family_class(
        family_of_controlnet(json.loads((checkpoint / sub / "config.json").read_text()))
    )
    model = family.controlnet_class().from_pretrained(checkpoint / sub)
    if fp16:
        model = model.to(torch.float16)
    config = {"_class_name": type(model).__name__, **model.config}
    meta = export_metadata(checkpoint, config)
    if "hintset.union" in meta:  # the slot table travels in config.json (diffusers ignores it)
        model.register_to_config(_hintset_union=json.loads(meta["hintset.union"]))
    folder = output / "diffusers"
    model.save_pretrained(folder)
    normal_modes(folder)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta["hintset.layout"] = family.SINGLE_FILE
    single = output / f"controlnet-{checkpoint.name}.safetensors"
    meta.update(modelspec(meta, config, meta["hintset.layout"], f"{output.name} {single.stem}"))
    problem = single_file_problem(config)
    if problem:
        meta["hintset.loads_in"] = "diffusers"
    if problem and not nonstandard_single_file:
        print(f"warning: no single file: this ControlNet ({problem}) is not one AUTOMATIC1111 "
              "or ComfyUI can rebuild (they assume the standard model's numbers and would load it "
              "wrongly); it "
              "exports for diffusers only (--nonstandard-single-file writes it anyway)",
              file=sys.stderr)  # fmt: skip
        single = None
    cldm = family.SINGLE_FILE == "cldm"
    tensors = to_original(state, config) if cldm else state
    if single is not None:
        atomic_save(single, lambda tmp: save_file(tensors, tmp, metadata=meta))
        if cldm:
            atomic_write(single.with_suffix(".yaml"), cldm_yaml(config).encode())
    captions = (
        render_samples(checkpoint, model, folder / "samples.png", samples) if samples else None
    )
    card = model_card(meta, single.name if single else None, captions, problem, summary)
    atomic_write(folder / "README.md", card.encode())
    return {"diffusers": folder, "single_file": single, "tensors": len(tensors),
            "metadata": meta, "samples": folder / "samples.png" if captions else None}  # fmt: skip
