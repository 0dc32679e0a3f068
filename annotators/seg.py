"""Semantic segmentation with ADE20K's 150 classes, coloured with the exact ADE20K palette.

Models (transformers): UperNet ConvNeXt-small (``openmmlab/upernet-convnext-small``, the model
diffusers' ControlNet seg examples use) and SegFormer-B0 ADE 512. Writes ``seg.png`` (RGB,
palette colours, opacity 1) and ``seglabel.png`` (uint8 class index 0..149, 0 = wall).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annotators import ade20k, hf_models
from annotators.base import Annotation, Param
from annotators.registry import register
from annotators.weights import (
    WeightsError,
)


@dataclass(frozen=True)
class SegModel:
    """A published ADE20K segmentation model: hub id, architecture family and size."""

    repo_id: str
    family: str  # "upernet-convnext" or "segformer"
    size: str = ""


#: short name -> published model (``model=`` also takes a hub id or a local folder)
MODELS: dict[str, SegModel] = {
    "upernet-convnext-small": SegModel(
        "openmmlab/upernet-convnext-small", "upernet-convnext", "small"
    ),
    "segformer-b0": SegModel("nvidia/segformer-b0-finetuned-ade-512-512", "segformer", "b0"),
}
DEFAULT_MODEL = "upernet-convnext-small"
BENCHMARK_MODELS = ("upernet-convnext-small", "segformer-b0")
PERSON = ade20k.CLASSES.index("person")

#: ConvNeXt sizes of the UperNet checkpoints: depths, hidden sizes, auxiliary head input
_CONVNEXT = {
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768], 384),
    "small": ([3, 3, 27, 3], [96, 192, 384, 768], 384),
    "base": ([3, 3, 27, 3], [128, 256, 512, 1024], 512),
}


def _labels() -> dict[str, Any]:
    id2label = dict(enumerate(ade20k.CLASSES))
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def upernet_convnext_config(size: str = "small", tiny: bool = False) -> Any:
    """UperNet + ConvNeXt on ADE20K (values of openmmlab/upernet-convnext-*)."""
    from transformers import ConvNextConfig, UperNetConfig

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if tiny:
        backbone = ConvNextConfig(
            depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], out_features=stages
        )
        return UperNetConfig(
            backbone_config=backbone,
            hidden_size=16,
            auxiliary_in_channels=32,
            auxiliary_channels=8,
            num_labels=150,
            **_labels(),
        )
    depths, hidden, aux_in = _CONVNEXT[size]
    backbone = ConvNextConfig(depths=depths, hidden_sizes=hidden, out_features=stages)
    return UperNetConfig(
        backbone_config=backbone, auxiliary_in_channels=aux_in, num_labels=150, **_labels()
    )


def segformer_config(tiny: bool = False) -> Any:
    """SegFormer MiT-B0 with the all-MLP decoder, 150 ADE20K classes (transformers' defaults are B0)."""
    from transformers import SegformerConfig

    if tiny:
        return SegformerConfig(
            depths=[1, 1, 1, 1],
            hidden_sizes=[8, 16, 24, 32],
            num_attention_heads=[1, 1, 1, 1],
            decoder_hidden_size=16,
            num_labels=150,
            **_labels(),
        )
    return SegformerConfig(
        depths=[2, 2, 2, 2],
        hidden_sizes=[32, 64, 160, 256],
        num_attention_heads=[1, 2, 5, 8],
        sr_ratios=[8, 4, 2, 1],
        decoder_hidden_size=256,
        num_labels=150,
        **_labels(),
    )


def image_processor() -> Any:
    """The published processor settings: 512x512, ImageNet normalisation."""
    from transformers import SegformerImageProcessor

    return SegformerImageProcessor(size={"height": 512, "width": 512})


def build_model(spec: SegModel, tiny: bool = False) -> Any:
    """A randomly initialised network of ``spec``'s architecture."""
    from transformers import SegformerForSemanticSegmentation, UperNetForSemanticSegmentation

    if spec.family == "segformer":
        return SegformerForSemanticSegmentation(segformer_config(tiny))
    return UperNetForSemanticSegmentation(upernet_convnext_config(spec.size, tiny))


def write_random_weights(
    folder: Path, *, tiny: bool = False, models: tuple[str, ...] | list[str] | None = None
) -> list[Path]:
    """Random weights for seg models as ``folder/<hub id>/`` (config, safetensors, processor).

    ``tiny`` uses tiny configs with the same architecture classes; otherwise the published
    sizes (no download). ``models`` defaults to the ones the speed benchmark runs.
    """
    written: list[Path] = []
    for name in models or BENCHMARK_MODELS:
        spec = MODELS[name]
        written += hf_models.save_random(
            Path(folder) / spec.repo_id, lambda spec=spec: build_model(spec, tiny), image_processor
        )
    return written


@register
class Seg(hf_models.HFAnnotator):
    """ADE20K semantic segmentation: palette-coloured map plus the class-index map."""

    name = "seg"
    version = "1"
    outputs = ("seg", "seglabel")
    description = "ADE20K 150-class segmentation, exact palette (RGB) + class indices (1 channel)"
    wants_gpu = True
    task = "seg"
    models = MODELS
    default_model = DEFAULT_MODEL
    benchmark_models = BENCHMARK_MODELS
    params = (
        Param(
            "model",
            DEFAULT_MODEL,
            f"one of {', '.join(MODELS)}, or a hub id / local folder of an ADE20K "
            "transformers segmentation model",
        ),
        Param(
            "resolution",
            512,
            "working short side in pixels, aspect kept (mmseg's ADE20K test scale); "
            "0 = the processor's 512x512 squash",
        ),
        *hf_models.HF_PARAMS,
    )

    def _prepare(self, model: Any, folder: Path, repo: str) -> hf_models.Preprocess:
        if model.config.num_labels != len(ade20k.CLASSES):
            raise WeightsError(
                f"seg: {repo} predicts {model.config.num_labels} classes, not ADE20K's 150"
            )
        return hf_models.Preprocess.from_folder(folder, multiple=32)

    def predict_labels(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """HxW uint8 ADE20K class indices for each RGB image (argmax of logits at full size)."""
        import torch

        results: list[np.ndarray | None] = [None] * len(images)
        for idx, pixels in self.batches(images):
            with torch.inference_mode():
                logits = self._model(pixel_values=pixels).logits  # (B, 150, h, w)
                for j, i in enumerate(idx):
                    height, width = images[i].shape[:2]
                    full = torch.nn.functional.interpolate(
                        logits[j : j + 1].float(),
                        size=(height, width),
                        mode="bilinear",
                        align_corners=False,
                    )
                    results[i] = full[0].argmax(0).to(torch.uint8).cpu().numpy()
        return results  # type: ignore[return-value]

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        out = []
        for labels in self.predict_labels(images):
            out.append(
                Annotation(
                    maps={"seg": ade20k.colorize(labels), "seglabel": labels},
                    stats={
                        "seg_classes": float(len(np.unique(labels))),
                        "seg_person": float(np.count_nonzero(labels == PERSON)) / labels.size,
                    },
                )
            )
        return out
