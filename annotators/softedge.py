"""``softedge``: ControlNet 1.1's PiDiNet soft edges (``table5_pidinet.pth``), optionally "safe".

The network (:mod:`annotators.nets.pidinet`) takes BGR 0..1 and returns the fused edge
probability (its last output); the map is ``uint8(clip(255 * p))``, grey edges on black.
``safe=true`` quantises first as ControlNet's ``safe_step`` (the "softedge_pidisafe"
preprocessor). Inputs are padded (edge pixels repeated) to a multiple of 8, cropped back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from annotators.base import Annotation, Param
from annotators.hed import to_uint8
from annotators.learned import LEARNED_PARAMS, LearnedAnnotator
from annotators.registry import register
from annotators.weights import WeightsFile, strip_module

PIDINET_WEIGHTS = WeightsFile("table5_pidinet.pth", size_hint="3 MB")
#: three 2x2 max pools
PIDINET_MULTIPLE = 8


def build_pidinet() -> Any:
    """PiDiNet ``carv4``, 60 channels, dilation 24, spatial attention (ControlNet's ``pidinet()``)."""
    from annotators.nets.pidinet import PiDiNet

    return PiDiNet(width=60, dil=24)


@register
class SoftEdge(LearnedAnnotator):
    """PiDiNet soft edges (ControlNet 1.1 softedge): grey on black, 1 channel."""

    name = "softedge"
    version = "1"
    outputs = ("softedge",)
    description = "PiDiNet soft edges, grey on black (1 channel); needs table5_pidinet.pth"
    params = (
        Param("safe", False, 'ControlNet "safe" quantisation (3 levels) before scaling to 0..255'),
        *LEARNED_PARAMS,
    )

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        return [PIDINET_WEIGHTS]

    @classmethod
    def benchmark_variants(cls) -> list[dict[str, Any]]:
        """Parameter sets a speed benchmark runs (safe costs the same)."""
        return [{}]

    def _load_networks(self) -> list[dict[str, Any]]:
        self.model, ident = self.load_torch(PIDINET_WEIGHTS, build_pidinet, extract=strip_module)
        return [ident]

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        import torch

        self.load()
        results: list[Annotation] = [None] * len(images)  # type: ignore[list-item]
        for group, batch in self.padded_batches(images, PIDINET_MULTIPLE):
            height, width = images[group[0]].shape[:2]
            bgr = batch.flip(1) / 255.0  # the network was trained on BGR
            with torch.inference_mode(), self.autocast():
                fused = self.model(bgr)[-1].float()[:, 0, :height, :width]
            for i, edge in zip(group, fused.cpu().numpy(), strict=True):
                edges = to_uint8(edge, self.config["safe"])
                results[i] = Annotation(
                    maps={"softedge": edges}, stats={"softedge_mean": float(edges.mean()) / 255.0}
                )
        return results
