"""``lineart_anime``: ControlNet 1.1's anime line art, Anime2Sketch's U-Net (``netG.pth``).

As ControlNet 1.1 runs it: each image is resized (bicubic) up to sides that are multiples
of 256, scaled to -1..1, the tanh output mapped back to 0..255 and resized (bicubic) to the
input's exact size; the model is fed ``1 - map``, so the stored map is white lines on
black (``255 - line``). The published file's keys may carry a ``module.`` prefix.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from annotators.base import Annotation
from annotators.learned import (
    LEARNED_PARAMS,
    LearnedAnnotator,
    gray_annotations,
    groups_by_size,
    to_tensor,
)
from annotators.registry import register
from annotators.weights import WeightsFile, strip_module

ANIME_WEIGHTS = WeightsFile("netG.pth", size_hint="218 MB")
#: eight stride-2 levels: the working size is rounded UP to this multiple (then resized back)
ANIME_MULTIPLE = 256


def build_anime() -> Any:
    """Anime2Sketch ``UnetGenerator(3, 1, 8, 64)`` with parameter-free instance norm."""
    from annotators.nets.lineart import AnimeUnet

    return AnimeUnet(3, 1, levels=8, ngf=64)


def working_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) rounded up to multiples of 256, as ControlNet 1.1 does."""
    up = ANIME_MULTIPLE
    return up * -(-height // up), up * -(-width // up)


def resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize to (height, width); the image itself when it has that size already
    (what cv2 would return, without the pass over the pixels)."""
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)


@register
class LineartAnime(LearnedAnnotator):
    """Anime line art (ControlNet 1.1 lineart_anime): white lines on black, 1 channel."""

    name = "lineart_anime"
    version = "1"
    outputs = ("lineart_anime",)
    stats = ("lineart_anime_mean",)
    description = "anime line art (Anime2Sketch), white on black (1 channel); needs netG.pth"
    params = LEARNED_PARAMS

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        return [ANIME_WEIGHTS]

    def _load_networks(self) -> list[dict[str, Any]]:
        self.model, ident = self.load_torch(ANIME_WEIGHTS, build_anime, extract=strip_module)
        return [ident]

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        import torch

        self.load()
        maps: list[np.ndarray] = [np.empty(0)] * len(images)
        for group in groups_by_size(images, self.network_batch_size()):
            height, width = images[group[0]].shape[:2]
            hn, wn = working_size(height, width)
            big = [resized(images[i], hn, wn) for i in group]
            with torch.inference_mode(), self.autocast():
                out = self.model(to_tensor(big, 1, self.device) / 127.5 - 1.0)
            for i, line in zip(
                group, (out.float()[:, 0] * 127.5 + 127.5).cpu().numpy(), strict=True
            ):
                back = resized(line, height, width)
                maps[i] = 255 - back.clip(0, 255).astype(np.uint8)
        return gray_annotations("lineart_anime", maps)
