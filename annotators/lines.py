"""Straight line segments, 1 px white on black: classical LSD / probabilistic Hough (no weights)
or the M-LSD network (``backend="mlsd"``, checkpoint ``mlsd_large_512_fp32.pth``).

Classical detectors plug in through ``BACKENDS`` (one image at a time); M-LSD runs batched
through :mod:`annotators.mlsd` and is loaded once per annotator instance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from annotators.base import Annotation, Param, edge_density
from annotators.learned import LearnedAnnotator, learned_params
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


#: backend name -> function(rgb, config) -> segments (classical, per image).
BACKENDS: dict[str, Callable[[np.ndarray, dict], Segments]] = {
    "lsd": detect_lsd,
    "hough": detect_hough,
}
#: learned backends, run batched by the annotator itself
LEARNED_BACKENDS = ("mlsd",)


def draw_segments(shape: tuple[int, int], segments: Segments) -> np.ndarray:
    """Draw segments as 1 px white lines on a black HxW uint8 canvas.

    Endpoints are truncated towards zero (``int()``), as ControlNet's M-LSD annotator does.
    """
    canvas = np.zeros(shape, np.uint8)
    for x1, y1, x2, y2 in np.trunc(np.asarray(segments, np.float64)).astype(np.int64):
        cv2.line(canvas, (int(x1), int(y1)), (int(x2), int(y2)), 255, 1, cv2.LINE_8)
    return canvas


def filter_short(segments: Segments, min_length: float) -> Segments:
    """Drop segments shorter than ``min_length`` pixels."""
    if len(segments) == 0:
        return segments
    lengths = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    return segments[lengths >= min_length]


@register
class Lines(LearnedAnnotator):
    """Straight line segments (MLSD-style map) from a pluggable detector backend."""

    name = "lines"
    version = "2"
    outputs = ("lines",)
    stats = ("lines_segments", "lines_density")
    description = "straight line segments, 1 px white on black (1 channel)"
    params = (
        Param("backend", "lsd", "segment detector", choices=("lsd", "hough", "mlsd")),
        Param("min_length", 20, "lsd/hough: drop segments shorter than this many pixels"),
        Param("canny_low", 100, "hough: Canny low threshold"),
        Param("canny_high", 200, "hough: Canny high threshold"),
        Param("hough_threshold", 50, "hough: accumulator votes needed"),
        Param("max_gap", 5, "hough: largest gap bridged inside one segment"),
        Param("score_threshold", 0.1, "mlsd: segment score threshold", maximum=1),
        Param("distance_threshold", 0.1, "mlsd: segment length threshold (half-resolution px)"),
        # thresholds are tuned in fp32, so M-LSD runs in fp32 unless asked otherwise
        *learned_params("mlsd: ", precision="fp32"),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.wants_gpu = self.uses_weights()

    def _validate(self) -> None:
        super()._validate()
        backend = self.config["backend"]
        if backend not in BACKENDS and backend not in LEARNED_BACKENDS:
            raise ValueError(
                f"lines: backend {backend!r} is not available "
                f"(have: {sorted(BACKENDS) + list(LEARNED_BACKENDS)})"
            )

    def uses_weights(self) -> bool:
        """Only backend mlsd loads a network."""
        return self.config["backend"] in LEARNED_BACKENDS

    @classmethod
    def weights_files(cls) -> list[Any]:
        """The M-LSD checkpoint (needed only by ``backend="mlsd"``)."""
        from annotators.mlsd import MLSD_WEIGHTS

        return [MLSD_WEIGHTS]

    @classmethod
    def weights_by_backend(cls) -> dict[str, list[Any]]:
        """Only backend mlsd needs weights."""
        return {"lsd": [], "hough": [], "mlsd": cls.weights_files()}

    @classmethod
    def benchmark_variants(cls) -> list[dict[str, Any]]:
        """Parameter sets a speed benchmark of learned annotators runs."""
        return [{"backend": "mlsd"}]

    @classmethod
    def needs_weights(cls) -> bool:
        """False: the default backends are classical; backend mlsd loads in :meth:`load`."""
        return False

    def _load_networks(self) -> list[dict[str, Any]]:
        if not self.uses_weights():
            return []
        from annotators.mlsd import MLSD_WEIGHTS, build_mlsd

        self._model, ident = self.load_torch(MLSD_WEIGHTS, build_mlsd)
        return [ident]

    def detect(self, images: list[np.ndarray]) -> list[Segments]:
        """Segments for each image with the configured backend."""
        cfg = self.config
        if cfg["backend"] == "mlsd":
            from annotators.mlsd import detect_segments

            self.load()
            return detect_segments(
                self._model,
                images,
                self.device,
                cfg["score_threshold"],
                cfg["distance_threshold"],
                cfg["precision"],
                self.network_batch_size(),
            )
        detector = BACKENDS[cfg["backend"]]
        return [filter_short(detector(rgb, cfg), cfg["min_length"]) for rgb in images]

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        results = []
        for rgb, segments in zip(images, self.detect(images), strict=True):
            lines = draw_segments(rgb.shape[:2], segments)
            results.append(
                Annotation(
                    maps={"lines": lines},
                    stats={
                        "lines_segments": float(len(segments)),
                        "lines_density": edge_density(lines),
                    },
                )
            )
        return results
