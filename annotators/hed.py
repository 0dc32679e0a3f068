"""Soft edges (``hed``) and scribbles derived from them (``scribble``), as ControlNet 1.1 makes them.

The network is the RGB-input HED that ControlNet 1.1 ships (checkpoint ``ControlNetHED.pth``
from lllyasviel/Annotators): five VGG-style blocks, each with a 1x1 side projection. The map
is the sigmoid of the mean of the five side outputs, each resized to the input size.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from annotators.base import Annotation, Param, edge_density
from annotators.learned import LEARNED_PARAMS, LearnedAnnotator, load_network
from annotators.registry import register
from annotators.weights import WeightsFile

#: published as float16 tensors (29.4 MB for 14.7 M parameters); loaded into a float32 network
HED_WEIGHTS = WeightsFile("ControlNetHED.pth", size_hint="29 MB")
#: blocks 2-5 start with a 2x2 max pool, so the input is padded to a multiple of 16
HED_MULTIPLE = 16


def build_hed() -> Any:
    """The ControlNetHED_Apache2 network (parameter names as in the published checkpoint)."""
    from annotators.nets.hed import HED

    return HED()


def load_hed(
    weights_dir: str = "",
    device: str = "cpu",
    offline: bool | None = None,
    spec: WeightsFile = HED_WEIGHTS,
) -> tuple[Any, dict[str, Any]]:
    """The HED network with its checkpoint loaded (strict), and the file's identity."""
    return load_network(spec, build_hed, weights_dir=weights_dir, device=device, offline=offline)


def safe_step(edges: np.ndarray, step: int = 2) -> np.ndarray:
    """ControlNet's "safe" quantisation of a 0..1 soft-edge map into ``step`` + 1 levels."""
    levels = (edges.astype(np.float32) * float(step + 1)).astype(np.int32)
    return levels.astype(np.float32) / float(step)


def to_uint8(edges: np.ndarray, safe: bool) -> np.ndarray:
    """0..1 map -> uint8 0..255, after "safe" quantisation when asked."""
    if safe:
        edges = safe_step(edges)
    return (edges * 255.0).clip(0, 255).astype(np.uint8)


def nms(edges: np.ndarray, threshold: float = 127, sigma: float = 3.0) -> np.ndarray:
    """ControlNet's thinning: blur, keep pixels that are a maximum along any of 4 directions,
    then binarise (> threshold -> 255)."""
    x = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), sigma)
    kernels = (
        np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], np.uint8),  # horizontal
        np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], np.uint8),  # vertical
        np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.uint8),  # diagonal
        np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], np.uint8),  # anti-diagonal
    )
    kept = np.zeros_like(x)
    for kernel in kernels:
        np.putmask(kept, cv2.dilate(x, kernel=kernel) == x, x)
    out = np.zeros(edges.shape, np.uint8)
    out[kept > threshold] = 255
    return out


def scribble_from_soft_edges(
    edges: np.ndarray,
    threshold: float = 127,
    sigma: float = 3.0,
    blur: float = 3.0,
    cutoff: int = 4,
) -> np.ndarray:
    """Binary scribble from a uint8 soft-edge map, as ControlNet 1.1 makes its scribble data:
    nms(threshold, sigma) -> Gaussian blur(blur) -> pixels > cutoff become 255, the rest 0."""
    thin = nms(edges, threshold, sigma)
    blurred = cv2.GaussianBlur(thin, (0, 0), blur)
    return np.where(blurred > cutoff, 255, 0).astype(np.uint8)


class _HEDBase(LearnedAnnotator):
    """Holds the HED network (shared per process between ``hed`` and ``scribble``)."""

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        return [HED_WEIGHTS]

    @classmethod
    def benchmark_variants(cls) -> list[dict[str, Any]]:
        """Parameter sets a speed benchmark runs (defaults)."""
        return [{}]

    def _load_networks(self) -> list[dict[str, Any]]:
        self.model, ident = self.load_torch(HED_WEIGHTS, build_hed)
        return [ident]

    def soft_edges(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Float64 0..1 soft-edge maps (sigmoid of the mean of the side outputs), one per image."""
        import torch

        self.load()
        maps: list[np.ndarray] = [np.empty(0)] * len(images)
        for group, batch in self.padded_batches(images, HED_MULTIPLE):
            height, width = images[group[0]].shape[:2]
            with torch.inference_mode(), self.autocast():
                sides = self.model(batch)
            size = batch.shape[-2:]
            resized = [
                torch.nn.functional.interpolate(
                    s.float(), size=size, mode="bilinear", align_corners=False
                )
                for s in sides
            ]
            fused = torch.sigmoid(torch.stack(resized).mean(dim=0).double())[:, 0, :height, :width]
            for i, edge in zip(group, fused.cpu().numpy(), strict=True):
                maps[i] = edge
        return maps

    def edges_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """uint8 soft-edge maps for a batch of images."""
        return [to_uint8(e, self.config["safe"]) for e in self.soft_edges(images)]


@register
class HEDEdges(_HEDBase):
    """HED soft edges: grey edges on black, 1 channel (ControlNet 1.1 softedge/HED)."""

    name = "hed"
    version = "1"
    outputs = ("hed",)
    stats = ("hed_mean",)
    description = "HED soft edges, grey on black (1 channel); needs ControlNetHED.pth"
    params = (
        Param("safe", False, 'ControlNet "safe" quantisation (3 levels) before scaling to 0..255'),
        *LEARNED_PARAMS,
    )

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        return [
            Annotation(maps={"hed": e}, stats={"hed_mean": float(e.mean()) / 255.0})
            for e in self.edges_batch(images)
        ]


@register
class Scribble(_HEDBase):
    """Scribbles: binary white strokes on black, derived from HED soft edges (ControlNet 1.1)."""

    name = "scribble"
    version = "1"
    outputs = ("scribble",)
    stats = ("scribble_density",)
    description = "binary white strokes from HED edges (1 channel); needs ControlNetHED.pth"
    params = (
        Param("threshold", 127.0, "nms: keep blurred maxima above this value"),
        Param("sigma", 3.0, "nms: Gaussian blur sigma before thinning"),
        Param("blur", 3.0, "Gaussian blur sigma after thinning"),
        Param("cutoff", 4, "pixels above this after the blur become 255, the rest 0"),
        Param("safe", False, "quantise the HED map first (as hed.safe)"),
        *LEARNED_PARAMS,
    )

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        cfg = self.config
        results = []
        for edges in self.edges_batch(images):
            strokes = scribble_from_soft_edges(
                edges, cfg["threshold"], cfg["sigma"], cfg["blur"], cfg["cutoff"]
            )
            results.append(
                Annotation(
                    maps={"scribble": strokes}, stats={"scribble_density": edge_density(strokes)}
                )
            )
        return results
