"""``lineart``: ControlNet 1.1's realistic line art (``sk_model.pth``; coarse: ``sk_model2.pth``).

The "Informative Drawings" generator (:mod:`annotators.nets.lineart`) takes RGB 0..1 and
returns line darkness 0..1 (sigmoid). ControlNet 1.1 feeds the model ``1 - map``, so the
stored map is white lines on black: ``255 - uint8(clip(255 * output))``. Inputs are padded
(edge pixels repeated) to a multiple of 4 and the map cropped back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from annotators.base import Annotation, Param
from annotators.learned import (
    LEARNED_PARAMS,
    LearnedAnnotator,
    gray_annotations,
    predict_padded,
)
from annotators.registry import register
from annotators.weights import WeightsFile

LINEART_WEIGHTS = WeightsFile("sk_model.pth", size_hint="17 MB")
LINEART_COARSE_WEIGHTS = WeightsFile("sk_model2.pth", size_hint="17 MB")
#: two stride-2 convolutions and two x2 transposed convolutions
LINEART_MULTIPLE = 4


def build_lineart() -> Any:
    """The generator with 3 residual blocks, as ControlNet 1.1 builds it (``Generator(3, 1, 3)``)."""
    from annotators.nets.lineart import LineartGenerator

    return LineartGenerator(3, 1, blocks=3)


def white_on_black(darkness: np.ndarray) -> np.ndarray:
    """0..1 line darkness -> uint8 white lines on black (ControlNet's ``1 - map``)."""
    return 255 - (darkness * 255.0).clip(0, 255).astype(np.uint8)


@register
class Lineart(LearnedAnnotator):
    """Realistic line art (ControlNet 1.1 lineart): white lines on black, 1 channel."""

    name = "lineart"
    version = "1"
    outputs = ("lineart",)
    stats = ("lineart_mean",)
    description = "line art, white on black (1 channel); needs sk_model.pth (coarse: sk_model2.pth)"
    params = (
        Param(
            "coarse", False, "use the coarse model sk_model2.pth (ControlNet's 'Lineart_Coarse')"
        ),
        *LEARNED_PARAMS,
    )

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        return [LINEART_WEIGHTS, LINEART_COARSE_WEIGHTS]

    @classmethod
    def weights_by_backend(cls) -> dict[str, list[WeightsFile]]:
        """The default (fine) model needs sk_model.pth; ``coarse=true`` needs sk_model2.pth."""
        return {"fine": [LINEART_WEIGHTS], "coarse": [LINEART_COARSE_WEIGHTS]}

    def configured_weights(self) -> list[WeightsFile]:
        """sk_model2.pth with ``coarse=true``, else sk_model.pth."""
        return [LINEART_COARSE_WEIGHTS if self.config["coarse"] else LINEART_WEIGHTS]

    def _load_networks(self) -> list[dict[str, Any]]:
        spec = self.configured_weights()[0]
        self.model, ident = self.load_torch(spec, build_lineart)
        return [ident]

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        self.load()
        # NCHW memory: channels-last strides (the permuted HWC pixels) cost instance norm a
        # copy per layer (profiled: aten::resize_/copy_); depthwise nets prefer channels-last
        darkness = predict_padded(
            self, images, LINEART_MULTIPLE, lambda b: self.model(b.contiguous() / 255.0)
        )
        return gray_annotations("lineart", [white_on_black(d) for d in darkness])
