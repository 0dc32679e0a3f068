"""Export a training checkpoint: diffusers folder + one .safetensors in the original ControlNet
key layout (``control_model.input_blocks...``) that AUTOMATIC1111 and ComfyUI load."""

from __future__ import annotations

import re
from pathlib import Path

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


def export(checkpoint: Path, output: Path, *, fp16: bool = False, ema: bool = False) -> dict:
    """Write OUTPUT/diffusers (save_pretrained) and OUTPUT/<name>.safetensors (original keys)."""
    import torch
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    checkpoint, output = Path(checkpoint), Path(output)
    sub = "controlnet_ema" if ema and (checkpoint / "controlnet_ema").exists() else "controlnet"
    model = ControlNetModel.from_pretrained(checkpoint / sub)
    if fp16:
        model = model.to(torch.float16)
    folder = output / "diffusers"
    model.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    original = to_original(state, dict(model.config))
    single = output / f"controlnet-{checkpoint.name}.safetensors"
    output.mkdir(parents=True, exist_ok=True)
    tmp = single.with_suffix(".tmp")
    save_file(original, str(tmp), metadata={"format": "pt"})
    tmp.replace(single)
    return {"diffusers": folder, "single_file": single, "tensors": len(original)}
