"""Depth: relative inverse depth from a transformers depth-estimation model, near = bright.

Models: DPT-Hybrid MiDaS (``Intel/dpt-hybrid-midas``, the one ControlNet 1.0 used), Depth
Anything V1 (small/base/large, the transformers ports ``LiheYoung/depth-anything-*-hf``; BFL's
FLUX.1 Depth uses large) and Depth Anything V2 (small/base/large). Licences differ per model
(V2 base/large are CC-BY-NC-4.0): ``hintset annotators`` lists them, the manifest records them. The map is the model's relative inverse depth resized
back to the input size and min-max normalised per image (as ControlNet's MiDaS annotator
does), stored as 8-bit (or 16-bit) 1-channel PNG. Marigold depth (``marigold-depth-v1-1``, a
diffusers pipeline: :mod:`annotators.marigold`) gives affine-invariant depth, inverted to near =
bright before the same normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annotators import hf_models, marigold
from annotators.base import Annotation, Param
from annotators.registry import register


@dataclass(frozen=True)
class DepthModel:
    """A published depth model: hub id, architecture family and size."""

    repo_id: str
    family: str  # "dpt-hybrid", "depth-anything-v1" or "depth-anything-v2"
    size: str = ""
    licence: str = ""


#: short name -> published model (``model=`` also takes a hub id or a local folder)
MODELS: dict[str, DepthModel] = {
    "dpt-hybrid": DepthModel("Intel/dpt-hybrid-midas", "dpt-hybrid", licence="Apache-2.0"),
    **{
        f"depth-anything-v1-{size}": DepthModel(
            f"LiheYoung/depth-anything-{size}-hf", "depth-anything-v1", size, "Apache-2.0"
        )
        for size in ("small", "base", "large")
    },
    "depth-anything-v2-small": DepthModel(
        "depth-anything/Depth-Anything-V2-Small-hf", "depth-anything-v2", "small", "Apache-2.0"
    ),
    "depth-anything-v2-base": DepthModel(
        "depth-anything/Depth-Anything-V2-Base-hf", "depth-anything-v2", "base", "CC-BY-NC-4.0"
    ),
    "depth-anything-v2-large": DepthModel(
        "depth-anything/Depth-Anything-V2-Large-hf", "depth-anything-v2", "large", "CC-BY-NC-4.0"
    ),
    **marigold.DEPTH_MODELS,  # type: ignore[dict-item]
}
DEFAULT_MODEL = "dpt-hybrid"
#: models the speed benchmark runs (at real size)
BENCHMARK_MODELS = ("dpt-hybrid", "depth-anything-v2-small")


def dpt_hybrid_forward(model: Any, pixels: Any) -> Any:
    """DPT-hybrid at any size that is a multiple of 32, as MiDaS runs it: position embeddings
    interpolated to the patch grid (transformers' own forward only takes the config's size)."""
    dpt, config = model.dpt, model.config
    height, width = pixels.shape[-2:]
    grid = (height // config.patch_size, width // config.patch_size)
    embedded = dpt.embeddings(pixels, interpolate_pos_encoding=True)
    hidden = embedded.last_hidden_states
    features = list(embedded.intermediate_activations)
    for index, layer in enumerate(dpt.encoder.layer):
        hidden = layer(hidden)
        if index in config.backbone_out_indices[2:]:
            features.append(hidden)
    fused = model.neck(features, *grid)
    return model.head(fused).unsqueeze(1)


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
    """Monocular relative depth (MiDaS DPT-Hybrid, Depth Anything V1 or V2), near = bright."""

    name = "depth"
    version = "2"
    outputs = ("depth",)
    stats = ("depth_mean",)
    description = "relative inverse depth, normalised per image, near = bright (1 channel)"
    wants_gpu = True
    gpu_batch_size = 8  # ViT-L (Depth Anything large) at 518 px
    reference = "controlnet_aux 0.0.10 MidasDetector (dpt-hybrid)"
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
            "working short side in pixels, aspect kept (0 = the model's own: 384 DPT-hybrid, "
            "518 Depth Anything; Marigold: see processing_resolution)",
        ),
        Param("bits", 8, "PNG bit depth", choices=(8, 16)),
        *marigold.PARAMS,
        *hf_models.HF_PARAMS,
    )

    # -- Marigold (a diffusers pipeline, not a transformers model) ---------------------------
    def is_marigold(self) -> bool:
        """The configured model is a published Marigold depth pipeline."""
        return self.config["model"] in marigold.DEPTH_MODELS

    def _validate(self) -> None:
        super()._validate()
        marigold.validate(self.name, self.config)

    def requirements(self) -> tuple[tuple[str, str], ...]:
        return marigold.requirements() if self.is_marigold() else super().requirements()

    def find_weights(self) -> None:
        if self.is_marigold():
            marigold.resolve_pipeline(self.model_id(), self.config["weights_dir"])
        else:
            super().find_weights()

    def weights_identity(self) -> list[dict[str, Any]]:
        if self._loaded is None and self.is_marigold():
            return marigold.find_identity(self.model_id(), self.config["weights_dir"])
        return super().weights_identity()

    def _load_networks(self) -> list[dict[str, Any]]:
        if not self.is_marigold():
            return super()._load_networks()
        self._marigold = marigold.MarigoldRunner(
            "depth",
            self.model_id(),
            self.config,
            self.device,
            self.dtype,
            self.network_batch_size,
        )
        return self._marigold.load()

    def _prepare(self, model: Any, folder: Path, repo: str) -> hf_models.Preprocess:
        if getattr(model.config, "is_hybrid", False):
            # as ControlNet's MiDaS: the whole image at the working size, aspect kept
            # (position embeddings interpolated), here padded to a multiple of 32 and cropped back
            return hf_models.Preprocess.from_folder(folder, multiple=32, pad=True)
        return hf_models.Preprocess.from_folder(folder, multiple=32)

    def forward(self, pixels: Any) -> Any:
        """(B, 1, h, w) relative inverse depth."""
        if getattr(self._model.config, "is_hybrid", False):
            return dpt_hybrid_forward(self._model, pixels)
        return self._model(pixel_values=pixels).predicted_depth.unsqueeze(1)

    def predict_depth(
        self, images: list[np.ndarray], at_image_size: bool = True
    ) -> list[np.ndarray]:
        """Float32 relative inverse depth (near = large) for each RGB image, at its own HxW
        (or at the network's working size; Marigold: always the image's size)."""
        if self.is_marigold():
            self.load()
            return self._marigold.predict(images)
        return [d[0].cpu().numpy().astype(np.float32) for d in self.predict(images, at_image_size)]

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
