"""Straight line segments, 1 px white on black: classical LSD / probabilistic Hough (no weights).

The M-LSD network (``backend="mlsd"``) plugs in through ``BACKENDS``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from annotators.base import Annotation, Annotator, Param, edge_density
from annotators.registry import register

#: segments as an (N, 4) float array of x1, y1, x2, y2 in pixel coordinates
Segments = np.ndarray


def detect_lsd(rgb: np.ndarray, config: dict) -> Segments:
    """OpenCV's Line Segment Detector on the gray image."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    detector = cv2.createLineSegmentDetector(cv2.LSD_REFINE_STD)
    found = detector.detect(gray)[0]
    if found is None:
        return np.zeros((0, 4), np.float32)
    return found.reshape(-1, 4)


def detect_hough(rgb: np.ndarray, config: dict) -> Segments:
    """Probabilistic Hough transform on Canny edges."""
    edges = cv2.Canny(rgb, config["canny_low"], config["canny_high"])
    found = cv2.HoughLinesP(
        edges,
        rho=1,
        theta=np.pi / 180,
        threshold=config["hough_threshold"],
        minLineLength=config["min_length"],
        maxLineGap=config["max_gap"],
    )
    if found is None:
        return np.zeros((0, 4), np.float32)
    return found.reshape(-1, 4).astype(np.float32)


#: backend name -> function(rgb, config) -> segments. Learned backends register here.
BACKENDS: dict[str, Callable[[np.ndarray, dict], Segments]] = {
    "lsd": detect_lsd,
    "hough": detect_hough,
}


def draw_segments(shape: tuple[int, int], segments: Segments) -> np.ndarray:
    """Draw segments as 1 px white lines on a black HxW uint8 canvas."""
    canvas = np.zeros(shape, np.uint8)
    for x1, y1, x2, y2 in np.rint(segments).astype(np.int32):
        cv2.line(canvas, (int(x1), int(y1)), (int(x2), int(y2)), 255, 1, cv2.LINE_8)
    return canvas


def filter_short(segments: Segments, min_length: float) -> Segments:
    """Drop segments shorter than ``min_length`` pixels."""
    if len(segments) == 0:
        return segments
    lengths = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    return segments[lengths >= min_length]


@register
class Lines(Annotator):
    """Straight line segments (MLSD-style map) from a pluggable detector backend."""

    name = "lines"
    version = "1"
    outputs = ("lines",)
    description = "straight line segments, 1 px white on black (1 channel)"
    params = (
        Param("backend", "lsd", "segment detector", choices=("lsd", "hough", "mlsd")),
        Param("min_length", 20, "drop segments shorter than this many pixels"),
        Param("canny_low", 100, "hough: Canny low threshold"),
        Param("canny_high", 200, "hough: Canny high threshold"),
        Param("hough_threshold", 50, "hough: accumulator votes needed"),
        Param("max_gap", 5, "hough: largest gap bridged inside one segment"),
        Param("score_threshold", 0.1, "mlsd: segment score threshold"),
        Param("distance_threshold", 0.1, "mlsd: segment length threshold (model units)"),
        Param("device", "auto", "mlsd: cpu, cuda or auto", choices=("auto", "cpu", "cuda")),
        Param("weights_dir", "", "mlsd: folder holding mlsd_large_512_fp32.pth"),
    )

    def _validate(self) -> None:
        if self.config["backend"] not in BACKENDS:
            raise ValueError(
                f"lines: backend {self.config['backend']!r} is not available "
                f"(have: {sorted(BACKENDS)})"
            )

    def _annotate(self, rgb: np.ndarray, rng: np.random.Generator) -> Annotation:
        segments = BACKENDS[self.config["backend"]](rgb, self.config)
        segments = filter_short(segments, self.config["min_length"])
        lines = draw_segments(rgb.shape[:2], segments)
        return Annotation(
            maps={"lines": lines},
            stats={"lines_segments": float(len(segments)), "lines_density": edge_density(lines)},
        )
