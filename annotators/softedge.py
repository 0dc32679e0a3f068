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
from annotators.learned import (
    LEARNED_PARAMS,
    LearnedAnnotator,
    gray_annotations,
    predict_padded,
)
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
    stats = ("softedge_mean",)
    description = "PiDiNet soft edges, grey on black (1 channel); needs table5_pidinet.pth"
    params = (
        Param("safe", False, 'ControlNet "safe" quantisation (3 levels) before scaling to 0..255'),
        *LEARNED_PARAMS,
    )

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        return [PIDINET_WEIGHTS]

    def _load_networks(self) -> list[dict[str, Any]]:
        self.model, ident = self.load_torch(PIDINET_WEIGHTS, build_pidinet, extract=strip_module)
        return [ident]

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        self.load()
        # the network was trained on BGR; its last output is the fused edge map
        fused = predict_padded(
            self, images, PIDINET_MULTIPLE, lambda b: self.model(b.flip(1) / 255.0)[-1]
        )
        return gray_annotations("softedge", [to_uint8(p, self.config["safe"]) for p in fused])
