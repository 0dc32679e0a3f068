"""``shuffle``: ControlNet 1.1's content shuffle, the image remapped through a smooth random flow.

ControlNet 1.1 (``control_v11e_sd15_shuffle``) made its condition images with
``ContentShuffleDetector``: two smooth noise fields ("noise disks", uniform noise on a
grid of ``f`` pixels, bicubically upsampled, min-max normalised to 0..1) scaled to the
image's width and height become the x and y source coordinates of ``cv2.remap``. The
fields are drawn per sample from a generator seeded by ``seed`` and the sample key.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from annotators.base import Annotation, Annotator, Param
from annotators.registry import register


def noise_disk(rng: Any, height: int, width: int, channels: int, f: int) -> np.ndarray:
    """Smooth 0..1 noise of shape HxWxC: uniform noise on an ``f``-pixel grid, bicubic upsampling.

    ``rng`` is anything with numpy's ``uniform(low, high, size)`` (a Generator or RandomState),
    so a legacy ``RandomState`` reproduces ControlNet's draws.
    """
    coarse = rng.uniform(0.0, 1.0, size=(height // f + 2, width // f + 2, channels))
    fine = cv2.resize(coarse, (width + 2 * f, height + 2 * f), interpolation=cv2.INTER_CUBIC)
    fine = fine.reshape(height + 2 * f, width + 2 * f, channels)[f : f + height, f : f + width]
    fine = fine - fine.min()
    return fine / max(float(fine.max()), 1e-12)


def content_shuffle(rgb: np.ndarray, rng: Any, f: int = 256) -> np.ndarray:
    """The image remapped through a random smooth flow (x drawn first, then y, as ControlNet)."""
    height, width = rgb.shape[:2]
    x = noise_disk(rng, height, width, 1, f) * float(width - 1)
    y = noise_disk(rng, height, width, 1, f) * float(height - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return cv2.remap(rgb, flow, None, cv2.INTER_LINEAR)


@register
class Shuffle(Annotator):
    """Content shuffle (ControlNet 1.1): RGB, same size, seeded per sample."""

    name = "shuffle"
    version = "1"
    outputs = ("shuffle",)
    stats = ()  # none
    description = "content shuffle: the image remapped by a random smooth flow (RGB), seeded"
    params = (
        Param(
            "f",
            256,
            "noise grid spacing in pixels (ControlNet 1.1: 256); smaller = finer",
            minimum=1,
        ),
        Param("seed", 0, "base seed, combined with the sample key"),
    )

    def _annotate(self, rgb: np.ndarray, rng: np.random.Generator) -> Annotation:
        return Annotation(maps={"shuffle": content_shuffle(rgb, rng, self.config["f"])})
