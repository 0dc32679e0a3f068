"""Canny edges: white edges on black, ``cv2.Canny`` on the RGB image (as ControlNet does)."""

from __future__ import annotations

import cv2
import numpy as np

from annotators.base import Annotation, Annotator, Param, edge_density
from annotators.registry import register


@register
class Canny(Annotator):
    """Canny edge map; optional Gaussian blur and per-sample random thresholds (ControlNet 1.1)."""

    name = "canny"
    version = "1"
    outputs = ("canny",)
    stats = ("canny_density", "canny_low", "canny_high")  # low/high with random_thresholds
    description = "Canny edges, white on black (1 channel)"
    fork_safe = True
    params = (
        Param("low", 100, "lower hysteresis threshold"),
        Param("high", 200, "upper hysteresis threshold"),
        Param("blur", 0.0, "Gaussian blur sigma applied first (0 = off)"),
        Param(
            "random_thresholds",
            False,
            "draw low in [50,150] and high in [max(low+1,150),250] per sample (ControlNet 1.1 style)",
        ),
        Param("seed", 0, "seed for random thresholds (combined with the sample key)"),
    )

    def _validate(self) -> None:
        low, high = self.config["low"], self.config["high"]
        if not 0 <= low <= high:
            raise ValueError(f"canny: need 0 <= low <= high, got low={low} high={high}")
        if self.config["blur"] < 0:
            raise ValueError(f"canny: blur must be >= 0, got {self.config['blur']}")
        if not self.config["random_thresholds"]:
            self.stats = ("canny_density",)

    def thresholds(self, rng: np.random.Generator) -> tuple[int, int]:
        """The (low, high) pair used for one sample."""
        if not self.config["random_thresholds"]:
            return int(self.config["low"]), int(self.config["high"])
        low = int(rng.integers(50, 151))
        high = int(rng.integers(max(low + 1, 150), 251))
        return low, high

    def _annotate(self, rgb: np.ndarray, rng: np.random.Generator) -> Annotation:
        low, high = self.thresholds(rng)
        if self.config["blur"] > 0:
            rgb = cv2.GaussianBlur(rgb, (0, 0), self.config["blur"])
        edges = cv2.Canny(rgb, low, high)
        stats = {"canny_density": edge_density(edges)}
        if self.config["random_thresholds"]:
            stats.update(canny_low=float(low), canny_high=float(high))
        return Annotation(maps={"canny": edges}, stats=stats)
