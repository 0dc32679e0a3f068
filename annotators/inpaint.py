"""``inpaint``: random masks for inpainting ControlNets, seeded per sample.

The mask is written as ``{key}.inpaint.png``: 1 channel, white (255) = region to fill,
black = kept. ControlNet 1.1's inpaint model was trained on 50% random masks and 50%
optical-flow occlusion masks (the latter need video; not made here). Mask kinds:
- ``strokes``: free-form brush strokes (thick polylines with round joints);
- ``boxes``: axis-aligned rectangles;
- ``percentile``: ControlNet 1.1's ``img2mask`` rule: one random colour channel of the
  image, inverted half of the time, masked where it is below a random percentile in [10, 90);
- ``mixed`` (default): one of the three per sample.

With ``masked_image=true`` a second map ``{key}.inpaintmasked.png`` (RGB) holds the image
with the masked pixels set to 0. ControlNet 1.1 feeds masked pixels as -1 (on a 0..1 scale),
which a PNG cannot hold: a trainer sets them from the mask.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from annotators.base import Annotation, Annotator, Param
from annotators.registry import register

KINDS = ("strokes", "boxes", "percentile")


def stroke_mask(height: int, width: int, rng: np.random.Generator, max_strokes: int) -> np.ndarray:
    """Free-form brush strokes: 1..max_strokes polylines of 2..8 segments, width 3-12% of the short side."""
    mask = np.zeros((height, width), np.uint8)
    short = min(height, width)
    for _ in range(int(rng.integers(1, max_strokes + 1))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        thickness = max(1, int(round(rng.uniform(0.03, 0.12) * short)))
        for _ in range(int(rng.integers(2, 9))):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.1, 0.4) * short
            nx = float(np.clip(x + length * np.cos(angle), 0, width - 1))
            ny = float(np.clip(y + length * np.sin(angle), 0, height - 1))
            cv2.line(mask, (int(x), int(y)), (int(nx), int(ny)), 255, thickness, cv2.LINE_8)
            cv2.circle(mask, (int(nx), int(ny)), thickness // 2, 255, -1)
            x, y = nx, ny
    return mask


def box_mask(height: int, width: int, rng: np.random.Generator, max_boxes: int) -> np.ndarray:
    """1..max_boxes rectangles, each side 10-50% of the image side."""
    mask = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, max_boxes + 1))):
        bw = max(1, int(rng.uniform(0.1, 0.5) * width))
        bh = max(1, int(rng.uniform(0.1, 0.5) * height))
        x0 = int(rng.integers(0, width - bw + 1))
        y0 = int(rng.integers(0, height - bh + 1))
        mask[y0 : y0 + bh, x0 : x0 + bw] = 255
    return mask


def percentile_mask(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ControlNet 1.1's img2mask: a random channel, inverted half the time, below a random
    percentile in [10, 90) -> masked."""
    channel = rgb[:, :, int(rng.integers(0, 3))]
    if rng.uniform(0, 1) < 0.5:
        channel = 255 - channel
    threshold = np.percentile(channel, int(rng.integers(10, 90)))
    return np.where(channel < threshold, 255, 0).astype(np.uint8)


def random_mask(
    rgb: np.ndarray, rng: np.random.Generator, kind: str, max_shapes: int
) -> np.ndarray:
    """A uint8 mask (255 = fill) of ``kind`` (``mixed`` draws one kind per sample)."""
    if kind == "mixed":
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
    height, width = rgb.shape[:2]
    if kind == "strokes":
        return stroke_mask(height, width, rng, max_shapes)
    if kind == "boxes":
        return box_mask(height, width, rng, max_shapes)
    return percentile_mask(rgb, rng)


@register
class Inpaint(Annotator):
    """Random inpainting mask (white = fill), optionally the masked image as a second map."""

    name = "inpaint"
    version = "1"
    outputs = ("inpaint",)
    stats = ("inpaint_coverage",)
    description = (
        "random inpainting mask, white = fill (1 channel), seeded; "
        "masked_image=true adds inpaintmasked.png (RGB, masked pixels 0)"
    )
    params = (
        Param("kind", "mixed", "mask kind", choices=("mixed", *KINDS)),
        Param("max_shapes", 4, "strokes/boxes: at most this many per mask", minimum=1),
        Param("masked_image", False, "also write inpaintmasked.png: the image, masked pixels 0"),
        Param("seed", 0, "base seed, combined with the sample key"),
    )

    def _validate(self) -> None:
        if self.config["masked_image"]:
            self.outputs = ("inpaint", "inpaintmasked")

    def _annotate(self, rgb: np.ndarray, rng: np.random.Generator) -> Annotation:
        mask = random_mask(rgb, rng, self.config["kind"], self.config["max_shapes"])
        maps: dict[str, Any] = {"inpaint": mask}
        if self.config["masked_image"]:
            maps["inpaintmasked"] = np.where(mask[:, :, None] > 0, 0, rgb).astype(np.uint8)
        return Annotation(maps=maps, stats={"inpaint_coverage": float(np.mean(mask > 0))})
