"""``teed`` (TEED soft edges) and ``anyline`` (MistoLine's Anyline lines: TEED + fine detail).

``teed``: the TED network (:mod:`annotators.nets.teed`, ``7_model.pth`` as ComfyUI and the
WebUI ControlNet extension load it) on RGB 0..255; the map is the sigmoid of the mean of its
four outputs, quantised by ControlNet's ``safe_step`` (2 steps: 0, 127, 255) unless
``safe_steps=0``, as controlnet_aux's ``TEEDdetector``.

``anyline``: controlnet_aux's ``AnylineDetector`` (after TheMistoAI/ComfyUI-Anyline) with
``MTEED.pth``: the TEED map (safe_step 2) merged with a detail layer (how much darker each
pixel is than its Gaussian blur, scaled by the median, specks under 12 pixels removed). The
merge is the reference's uint8 arithmetic ``t + b - t * b`` modulo 256 where the detail
layer ``t`` is non-zero, kept exactly because MistoLine was trained on such maps.
Inputs are padded (edge pixels repeated) to a multiple of 8 and the maps cropped back.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from annotators.base import Annotation, Param
from annotators.learned import LEARNED_PARAMS, LearnedAnnotator, gray_annotations
from annotators.registry import register
from annotators.weights import WeightsFile

TEED_WEIGHTS = WeightsFile(
    "7_model.pth",
    repo_id="bdsqlsz/qinglong_controlnet-lllite",
    subfolder="Annotators",
    size_hint="0.2 MB",
    licence="MIT (xavysp/TEED)",
)
ANYLINE_WEIGHTS = WeightsFile(
    "MTEED.pth",
    repo_id="TheMistoAI/MistoLine",
    subfolder="Anyline",
    size_hint="0.25 MB",
    licence="openrail++ (TheMistoAI/MistoLine)",
)
#: stride-2 convolution + stride-2 pool, up-sampled back: sides must divide by 4; 8 is safe
TEED_MULTIPLE = 8
#: the detail layer's 4-connected specks smaller than this are removed: the reference's
#: ``remove_small_objects(min_size=36)`` on a 3-channel copy counts each pixel 3 times.
#: scikit-image 0.26 reads ``min_size`` as an inclusive ``max_size``, so controlnet_aux on it
#: removes 12-pixel specks too (``min_area=13``); 12 is Anyline as published (scikit-image < 0.26).
ANYLINE_MIN_AREA = 12


def build_teed() -> Any:
    """The TED network (58,910 parameters), published parameter names."""
    from annotators.nets.teed import TEED

    return TEED()


def safe_step(x: np.ndarray, step: int) -> np.ndarray:
    """ControlNet's ``safe_step``: quantise 0..1 to ``step + 1`` levels (float32)."""
    y = x.astype(np.float32) * float(step + 1)
    return y.astype(np.int32).astype(np.float32) / float(step)


def edge_probability(outputs: np.ndarray, safe_steps: int) -> np.ndarray:
    """uint8 map from TEED's four (H, W) logit maps: sigmoid of their mean, optional safe_step."""
    edge = 1 / (1 + np.exp(-np.mean(outputs, axis=0).astype(np.float64)))
    if safe_steps:
        edge = safe_step(edge, safe_steps)
    return (edge * 255.0).clip(0, 255).astype(np.uint8)


def detail_layer(
    rgb: np.ndarray, sigma: float, threshold: float, min_area: int = ANYLINE_MIN_AREA
) -> np.ndarray:
    """Anyline's fine lines: how much darker each pixel is than its blur (min over channels),
    scaled so the median of values above ``threshold`` maps to 127; specks < ``min_area`` removed."""
    x = rgb.astype(np.float32)
    intensity = np.min(cv2.GaussianBlur(x, (0, 0), sigma) - x, axis=2).clip(0, 255)
    above = intensity[intensity > threshold]
    median = float(np.median(above)) if above.size else float("nan")
    intensity /= max(16, median)  # an empty selection (nan) falls back to 16, as the reference
    layer = (intensity * 127).clip(0, 255).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (layer > 0).astype(np.uint8), connectivity=4
    )
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False  # background
    return layer * keep[labels]


def merge_layers(edges: np.ndarray, detail: np.ndarray) -> np.ndarray:
    """The reference's ``combine_layers`` on uint8: ``t + b - t * b`` (mod 256) where t > 0."""
    t, b = detail.astype(np.int64), edges.astype(np.int64)
    return np.where(detail > 0, (t + b - t * b) % 256, b).astype(np.uint8)


class _TEEDBase(LearnedAnnotator):
    """Shared loading and network run of ``teed`` and ``anyline`` (different checkpoints)."""

    checkpoint: WeightsFile = TEED_WEIGHTS

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        return [cls.checkpoint]

    def _load_networks(self) -> list[dict[str, Any]]:
        self.model, ident = self.load_torch(self.checkpoint, build_teed)
        return [ident]

    def edge_maps(self, images: list[np.ndarray], safe_steps: int) -> list[np.ndarray]:
        """uint8 TEED maps, batched per image size, padded to a multiple of 8 and cropped back."""
        import torch

        self.load()
        maps: list[np.ndarray] = [np.empty(0)] * len(images)
        for group, batch in self.padded_batches(images, TEED_MULTIPLE):
            height, width = images[group[0]].shape[:2]
            with torch.inference_mode(), self.autocast():
                outs = torch.cat(self.model(batch), dim=1).float()
            outs = outs[:, :, :height, :width].cpu().numpy()
            for i, one in zip(group, outs, strict=True):
                maps[i] = edge_probability(one, safe_steps)
        return maps


@register
class TEED(_TEEDBase):
    """TEED soft edges (58K-parameter network): grey on black, 1 channel."""

    name = "teed"
    version = "1"
    outputs = ("teed",)
    stats = ("teed_mean",)
    description = "TEED soft edges, grey on black (1 channel); needs 7_model.pth"
    reference = "controlnet_aux 0.0.10 TEEDdetector (safe_steps=2)"
    checkpoint = TEED_WEIGHTS
    params = (
        Param("safe_steps", 2, "ControlNet safe_step levels - 1 (2: 0, 127, 255); 0 = off"),
        *LEARNED_PARAMS,
    )

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        return gray_annotations("teed", self.edge_maps(images, self.config["safe_steps"]))


@register
class Anyline(_TEEDBase):
    """Anyline (MistoLine's preprocessor): TEED edges with fine detail lines, 1 channel."""

    name = "anyline"
    version = "1"
    outputs = ("anyline",)
    stats = ("anyline_mean",)
    description = "Anyline lines (MistoLine), white on black (1 channel); needs MTEED.pth"
    reference = "controlnet_aux 0.0.10 AnylineDetector"
    checkpoint = ANYLINE_WEIGHTS
    params = (
        Param("gaussian_sigma", 2.0, "blur of the detail layer (the reference's 2.0)"),
        Param("intensity_threshold", 3.0, "detail values above this set its median scale"),
        Param(
            "min_area",
            ANYLINE_MIN_AREA,
            "detail specks smaller than this (pixels, 4-connected) are removed (12: as published; "
            "13: controlnet_aux on scikit-image >= 0.26)",
        ),
        *LEARNED_PARAMS,
    )

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        cfg = self.config
        maps = [
            merge_layers(
                edges,
                detail_layer(
                    rgb, cfg["gaussian_sigma"], cfg["intensity_threshold"], cfg["min_area"]
                ),
            )
            for rgb, edges in zip(images, self.edge_maps(images, 2), strict=True)
        ]
        return gray_annotations("anyline", maps)
