"""Soft edges (``hed``) and scribbles derived from them (``scribble``), as ControlNet 1.1 makes them.

The network is the RGB-input HED that ControlNet 1.1 ships (checkpoint ``ControlNetHED.pth``
from lllyasviel/Annotators): five VGG-style blocks, each with a 1x1 side projection. The map
is the sigmoid of the mean of the five side outputs, each resized to the input size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from annotators.base import Annotation, Param, edge_density
from annotators.inference import (
    TORCH_PARAMS,
    TorchAnnotator,
    autocast,
    groups_by_size,
    load_network,
    random_state,
    to_tensor,
    write_state,
)
from annotators.registry import register
from annotators.weights import WeightsFile

HED_WEIGHTS = WeightsFile("ControlNetHED.pth", size_hint="29 MB")
#: (input channels, output channels, convolutions) of block1..block5
HED_BLOCKS = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))
#: blocks 2-5 start with a 2x2 max pool, so the input is padded to a multiple of 16
HED_MULTIPLE = 16


def build_hed() -> Any:
    """The ControlNetHED_Apache2 network (parameter names as in the published checkpoint)."""
    import torch
    from torch import nn

    class SideBlock(nn.Module):
        """3x3 conv + ReLU stack (``convs``) and a 1x1 side output (``projection``)."""

        def __init__(self, cin: int, cout: int, layers: int) -> None:
            super().__init__()
            self.convs = nn.Sequential(
                *[nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(layers)]
            )
            self.projection = nn.Conv2d(cout, 1, 1)

        def forward(self, x: torch.Tensor, pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
            if pool:
                x = nn.functional.max_pool2d(x, kernel_size=2, stride=2)
            for conv in self.convs:
                x = nn.functional.relu(conv(x))
            return x, self.projection(x)

    class HED(nn.Module):
        """Input: RGB 0..255 float; output: five side maps at strides 1, 2, 4, 8, 16."""

        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
            for index, (cin, cout, layers) in enumerate(HED_BLOCKS, start=1):
                self.add_module(f"block{index}", SideBlock(cin, cout, layers))

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            h = x - self.norm
            sides = []
            for index in range(1, len(HED_BLOCKS) + 1):
                h, side = getattr(self, f"block{index}")(h, pool=index > 1)
                sides.append(side)
            return sides

    return HED()


def load_hed(
    weights_dir: str = "",
    device: str = "cpu",
    offline: bool | None = None,
    spec: WeightsFile = HED_WEIGHTS,
) -> tuple[Any, dict[str, Any]]:
    """The HED network with its checkpoint loaded (strict), and the file's identity."""
    return load_network(spec, build_hed, weights_dir=weights_dir, device=device, offline=offline)


def write_random_weights(folder: Path, *, tiny: bool = False) -> list[Path]:
    """Write a random ``ControlNetHED.pth`` in the published layout (always real size)."""
    path = Path(folder) / HED_WEIGHTS.filename
    write_state(path, random_state(build_hed))
    return [path]


def safe_step(edges: np.ndarray, step: int = 2) -> np.ndarray:
    """ControlNet's "safe" quantisation of a 0..1 soft-edge map into ``step`` + 1 levels."""
    levels = (edges.astype(np.float32) * float(step + 1)).astype(np.int32)
    return levels.astype(np.float32) / float(step)


def soft_edges(
    model: Any, images: list[np.ndarray], device: str, precision: str
) -> list[np.ndarray]:
    """Float64 0..1 soft-edge maps (sigmoid of the mean of the side outputs), one per image."""
    import torch

    maps: list[np.ndarray] = [np.empty(0)] * len(images)
    for group in groups_by_size(images):
        height, width = images[group[0]].shape[:2]
        batch = to_tensor([images[i] for i in group], HED_MULTIPLE, device)
        with torch.inference_mode(), autocast(device, precision):
            sides = model(batch)
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


class _HEDBase(TorchAnnotator):
    """Holds the HED network (shared per process between ``hed`` and ``scribble``)."""

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        return [HED_WEIGHTS]

    @classmethod
    def benchmark_variants(cls) -> list[dict[str, Any]]:
        """Parameter sets a speed benchmark runs (defaults)."""
        return [{}]

    def _load_networks(self) -> list[dict[str, Any]]:
        self.model, ident = load_hed(self.config["weights_dir"], self.device)
        return [ident]

    def edges_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """uint8 soft-edge maps for a batch of images."""
        self.load()
        soft = soft_edges(self.model, images, self.device, self.precision)
        return [to_uint8(e, self.config["safe"]) for e in soft]


@register
class HEDEdges(_HEDBase):
    """HED soft edges: grey edges on black, 1 channel (ControlNet 1.1 softedge/HED)."""

    name = "hed"
    version = "1"
    outputs = ("hed",)
    description = "HED soft edges, grey on black (1 channel); needs ControlNetHED.pth"
    params = (
        Param("safe", False, 'ControlNet "safe" quantisation (3 levels) before scaling to 0..255'),
        *TORCH_PARAMS,
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
    description = "binary white strokes from HED edges (1 channel); needs ControlNetHED.pth"
    params = (
        Param("threshold", 127.0, "nms: keep blurred maxima above this value"),
        Param("sigma", 3.0, "nms: Gaussian blur sigma before thinning"),
        Param("blur", 3.0, "Gaussian blur sigma after thinning"),
        Param("cutoff", 4, "pixels above this after the blur become 255, the rest 0"),
        Param("safe", False, "quantise the HED map first (as hed.safe)"),
        *TORCH_PARAMS,
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
