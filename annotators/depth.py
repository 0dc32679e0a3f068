"""Depth: relative inverse depth from a transformers depth-estimation model, near = bright.

Models: DPT-Hybrid MiDaS (``Intel/dpt-hybrid-midas``, the one ControlNet 1.0 used) and
Depth Anything V2 (small/base/large). The map is the model's relative inverse depth resized
back to the input size and min-max normalised per image (as ControlNet's MiDaS annotator
does), stored as 8-bit (or 16-bit) 1-channel PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annotators import hf_models
from annotators.base import Annotation, Param
from annotators.registry import register
from annotators.weights import (
    WeightsError,
)


@dataclass(frozen=True)
class DepthModel:
    """A published depth model: hub id, architecture family and size."""

    repo_id: str
    family: str  # "dpt-hybrid" or "depth-anything-v2"
    size: str = ""


#: short name -> published model (``model=`` also takes a hub id or a local folder)
MODELS: dict[str, DepthModel] = {
    "dpt-hybrid": DepthModel("Intel/dpt-hybrid-midas", "dpt-hybrid"),
    "depth-anything-v2-small": DepthModel(
        "depth-anything/Depth-Anything-V2-Small-hf", "depth-anything-v2", "small"
    ),
    "depth-anything-v2-base": DepthModel(
        "depth-anything/Depth-Anything-V2-Base-hf", "depth-anything-v2", "base"
    ),
    "depth-anything-v2-large": DepthModel(
        "depth-anything/Depth-Anything-V2-Large-hf", "depth-anything-v2", "large"
    ),
}
DEFAULT_MODEL = "dpt-hybrid"
#: models the speed benchmark runs (at real size)
BENCHMARK_MODELS = ("dpt-hybrid", "depth-anything-v2-small")

#: Depth Anything V2 backbone (DINOv2) sizes: hidden, layers, heads, out_indices, fusion, neck
_DA_SIZES = {
    "small": (384, 12, 6, [3, 6, 9, 12], 64, [48, 96, 192, 384]),
    "base": (768, 12, 12, [3, 6, 9, 12], 128, [96, 192, 384, 768]),
    "large": (1024, 24, 16, [5, 12, 18, 24], 256, [256, 512, 1024, 1024]),
}


# -- configs, written from code (published values, or tiny ones with the same classes) --------
def dpt_hybrid_config(tiny: bool = False) -> Any:
    """DPT-Hybrid MiDaS: ViT-B/16 on a BiT-R50 stem, 384x384 (values of Intel/dpt-hybrid-midas)."""
    from transformers import BitConfig, DPTConfig

    if tiny:
        bit = BitConfig(
            global_padding="same",
            layer_type="bottleneck",
            depths=[1, 1, 1],
            hidden_sizes=[16, 32, 64, 128],
            embedding_size=8,
            num_groups=4,
            out_features=["stage1", "stage2", "stage3"],
            embedding_dynamic_padding=True,
        )
        return DPTConfig(
            is_hybrid=True,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=64,
            backbone_out_indices=[0, 1, 2, 3],
            reassemble_factors=[1, 1, 1, 0.5],
            neck_hidden_sizes=[16, 32, 32, 32],
            fusion_hidden_size=16,
            backbone_config=bit,
            backbone_featmap_shape=[1, 64, 24, 24],
            readout_type="project",
        )
    bit = BitConfig(
        global_padding="same",
        layer_type="bottleneck",
        depths=[3, 4, 9],
        out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True,
    )
    return DPTConfig(
        is_hybrid=True,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=384,
        patch_size=16,
        backbone_out_indices=[2, 5, 8, 11],
        readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5],
        neck_hidden_sizes=[256, 512, 768, 768],
        fusion_hidden_size=256,
        use_batch_norm_in_fusion_residual=False,
        backbone_config=bit,
        backbone_featmap_shape=[1, 1024, 24, 24],
        neck_ignore_stages=[0, 1],
    )


def depth_anything_v2_config(size: str = "small", tiny: bool = False) -> Any:
    """Depth Anything V2 (DINOv2 ViT-S/B/L 14 + DPT head), relative depth."""
    from transformers import DepthAnythingConfig, Dinov2Config

    if tiny:
        hidden, layers, heads, out_idx, fusion, neck = 32, 4, 2, [1, 2, 3, 4], 16, [8, 16, 32, 32]
        extra = {"head_hidden_size": 8}
    else:
        hidden, layers, heads, out_idx, fusion, neck = _DA_SIZES[size]
        extra = {}
    backbone = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        out_indices=out_idx,
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=hidden,
        patch_size=14,
        fusion_hidden_size=fusion,
        neck_hidden_sizes=neck,
        depth_estimation_type="relative",
        **extra,
    )


def image_processor(family: str) -> Any:
    """The published image processor settings of a family."""
    from transformers import DPTImageProcessor

    if family == "dpt-hybrid":  # squash to 384x384, [-1, 1] (MiDaS DPT normalisation)
        return DPTImageProcessor(
            size={"height": 384, "width": 384},
            keep_aspect_ratio=False,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
    return DPTImageProcessor(  # short side >= 518, multiple of 14, ImageNet normalisation
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


def build_model(spec: DepthModel, tiny: bool = False) -> Any:
    """A randomly initialised network of ``spec``'s architecture."""
    from transformers import DepthAnythingForDepthEstimation, DPTForDepthEstimation

    if spec.family == "dpt-hybrid":
        return DPTForDepthEstimation(dpt_hybrid_config(tiny))
    return DepthAnythingForDepthEstimation(depth_anything_v2_config(spec.size, tiny))


def write_random_weights(
    folder: Path, *, tiny: bool = False, models: tuple[str, ...] | list[str] | None = None
) -> list[Path]:
    """Random weights for depth models as ``folder/<hub id>/`` (config, safetensors, processor).

    ``tiny`` uses tiny configs with the same architecture classes; otherwise the published
    sizes (no download). ``models`` defaults to the ones the speed benchmark runs.
    """
    written: list[Path] = []
    for name in models or BENCHMARK_MODELS:
        spec = MODELS[name]
        written += hf_models.save_random(
            Path(folder) / spec.repo_id,
            lambda spec=spec: build_model(spec, tiny),
            lambda spec=spec: image_processor(spec.family),
        )
    return written


# -- the map ------------------------------------------------------------------------------
def normalize_depth(depth: np.ndarray, bits: int = 8) -> np.ndarray:
    """Relative inverse depth (near = large) -> per-image min-max normalised uint8/uint16, near = bright."""
    depth = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, span = float(depth.min()), float(depth.max() - depth.min())
    unit = (depth - low) / span if span > 0 else np.zeros_like(depth)
    top = 65535.0 if bits == 16 else 255.0
    return (unit * top).clip(0, top).astype(np.uint16 if bits == 16 else np.uint8)


@register
class Depth(hf_models.HFAnnotator):
    """Monocular relative depth (MiDaS DPT-Hybrid or Depth Anything V2), near = bright."""

    name = "depth"
    version = "1"
    outputs = ("depth",)
    description = "relative inverse depth, normalised per image, near = bright (1 channel)"
    wants_gpu = True
    task = "depth"
    models = MODELS
    default_model = DEFAULT_MODEL
    benchmark_models = BENCHMARK_MODELS
    params = (
        Param(
            "model",
            DEFAULT_MODEL,
            f"one of {', '.join(MODELS)}, or a hub id / local folder of a transformers "
            "depth-estimation model",
        ),
        Param(
            "resolution",
            0,
            "working short side in pixels (0 = the model's own: 384x384 DPT-hybrid, 518 Depth Anything)",
        ),
        Param("bits", 8, "PNG bit depth", choices=(8, 16)),
        *hf_models.HF_PARAMS,
    )

    def _prepare(self, model: Any, folder: Path, repo: str) -> hf_models.Preprocess:
        fixed = bool(getattr(model.config, "is_hybrid", False))
        pre = hf_models.Preprocess.from_folder(folder, fixed=fixed, multiple=32)
        if fixed and self.config["resolution"] not in (0, *pre.size):
            raise WeightsError(
                f"depth: {repo} only runs at {pre.size[0]}x{pre.size[1]}; use resolution=0"
            )
        return pre

    def predict_depth(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Float32 relative inverse depth (near = large) for each RGB image, at its own HxW."""
        import torch

        results: list[np.ndarray | None] = [None] * len(images)
        for idx, pixels in self.batches(images):
            with torch.inference_mode():
                pred = self._model(pixel_values=pixels).predicted_depth  # (B, h, w)
            pred = pred.float().unsqueeze(1)
            for j, i in enumerate(idx):
                height, width = images[i].shape[:2]
                full = torch.nn.functional.interpolate(
                    pred[j : j + 1], size=(height, width), mode="bilinear", align_corners=False
                )
                results[i] = full[0, 0].cpu().numpy().astype(np.float32)
        return results  # type: ignore[return-value]

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        out = []
        for depth in self.predict_depth(images):
            depth_map = normalize_depth(depth, self.config["bits"])
            top = 65535.0 if self.config["bits"] == 16 else 255.0
            out.append(
                Annotation(
                    maps={"depth": depth_map},
                    stats={"depth_mean": float(depth_map.mean()) / top},
                )
            )
        return out
