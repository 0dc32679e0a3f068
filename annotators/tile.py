"""``tile``: a degraded copy of the image, the condition of ControlNet 1.1's tile model.

Modes:
- ``pyramid`` (default): ControlNet 1.1's ``DownSampleDetector`` (lllyasviel's annotator
  code): ``level`` times add Gaussian noise (sigma ``noise``) and ``cv2.pyrDown``, then
  ``level`` times ``cv2.pyrUp`` and add noise again. Noise is seeded per sample.
- ``resample``: shrink by ``factor`` (``cv2.INTER_AREA``) and enlarge back
  (``cv2.INTER_CUBIC``), as the tile "resample" preprocessors do; with
  ``random_factor`` the factor is drawn per sample in [1, factor].
- ``blur``: Gaussian blur with sigma ``sigma``.

Every mode returns the input's exact size (odd sizes go back up to their own size).
"""

from __future__ import annotations

import cv2
import numpy as np

from annotators.base import Annotation, Annotator, Param
from annotators.registry import register


def pyramid_degrade(
    rgb: np.ndarray, rng: np.random.Generator, level: int = 3, noise: float = 16.0
) -> np.ndarray:
    """Noise + pyrDown ``level`` times, then pyrUp + noise back to the input's exact size."""
    h = rgb.astype(np.float32)
    sizes = []
    for _ in range(level):
        h += rng.normal(0.0, noise, size=h.shape).astype(np.float32)
        sizes.append((h.shape[1], h.shape[0]))
        h = cv2.pyrDown(h)
    for size in reversed(sizes):
        h = cv2.pyrUp(h, dstsize=size)
        h += rng.normal(0.0, noise, size=h.shape).astype(np.float32)
    return h.clip(0, 255).astype(np.uint8)


def resample(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by ``factor`` (area) and enlarge back to the same size (bicubic)."""
    height, width = rgb.shape[:2]
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    low = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)


@register
class Tile(Annotator):
    """ControlNet 1.1 tile condition: the image downsampled / blurred back to its size (RGB)."""

    name = "tile"
    version = "1"
    outputs = ("tile",)
    stats = ("tile_factor",)  # mode=resample only
    description = "tile: the image degraded (noisy pyramid, resample or blur), RGB, seeded"
    params = (
        Param("mode", "pyramid", "degradation", choices=("pyramid", "resample", "blur")),
        Param("level", 3, "pyramid: pyrDown/pyrUp levels (ControlNet 1.1: 3)"),
        Param("noise", 16.0, "pyramid: Gaussian noise sigma added at each level (ControlNet: 16)"),
        Param(
            "factor", 4.0, "resample: downsampling factor (or its upper bound if random)", minimum=1
        ),
        Param("random_factor", False, "resample: draw the factor per sample in [1, factor]"),
        Param("sigma", 3.0, "blur: Gaussian sigma in pixels", minimum=0.1),
        Param("seed", 0, "base seed for noise / random factors, combined with the sample key"),
    )

    def _validate(self) -> None:
        if self.config["mode"] != "resample":
            self.stats = ()

    def _annotate(self, rgb: np.ndarray, rng: np.random.Generator) -> Annotation:
        cfg = self.config
        stats: dict[str, float] = {}
        if cfg["mode"] == "pyramid":
            out = pyramid_degrade(rgb, rng, cfg["level"], cfg["noise"])
        elif cfg["mode"] == "resample":
            factor = (
                float(rng.uniform(1.0, cfg["factor"])) if cfg["random_factor"] else cfg["factor"]
            )
            out = resample(rgb, factor)
            stats["tile_factor"] = factor
        else:
            out = cv2.GaussianBlur(rgb, (0, 0), cfg["sigma"])
        return Annotation(maps={"tile": out}, stats=stats)
