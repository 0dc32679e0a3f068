"""Semantic segmentation with ADE20K's 150 classes, coloured with the exact ADE20K palette.

Models (transformers): UperNet ConvNeXt-small (``openmmlab/upernet-convnext-small``, the model
diffusers' ControlNet seg examples use), SegFormer-B0 ADE 512 and OneFormer ADE20K Swin-L/Swin-T
(``shi-labs/oneformer_ade20k_swin_*``, ControlNet 1.1's ``seg_ofade20k``: semantic task, the
class scores ``softmax(class logits)[:-1] . sigmoid(mask logits)`` of transformers'
``post_process_semantic_segmentation``; its folder also holds the CLIP tokenizer files). Writes ``seg.png`` (RGB,
palette colours, opacity 1) and ``seglabel.png`` (uint8 class index 0..149, 0 = wall).
OneFormer COCO Swin-L (``shi-labs/oneformer_coco_swin_large``, ControlNet 1.1's ``seg_ofcoco``)
predicts COCO panoptic's 133 classes: coloured with their panoptic colours (:mod:`annotators.coco`),
``seglabel.png`` holds COCO indices (0 = person).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annotators import ade20k, coco, hf_models
from annotators.base import Annotation, Param
from annotators.registry import register
from annotators.weights import WeightsError

#: OneFormer's text side: the CLIP tokenizer files of the published repos
ONEFORMER_FILES = ("tokenizer_config.json", "vocab.json", "merges.txt")
#: the task prompt of semantic segmentation (OneFormerProcessor's ``task_inputs``)
ONEFORMER_TASK = "the task is semantic"


@dataclass(frozen=True)
class SegModel:
    """A published ADE20K segmentation model: hub id, architecture family and size."""

    repo_id: str
    family: str  # "upernet-convnext" or "segformer"
    size: str = ""
    licence: str = ""
    #: files the folder needs beside config, weights and processor config
    extra: tuple[str, ...] = ()
    dataset: str = "ade20k"  # the classes and colours: a key of DATASETS
    reference: str = ""


#: dataset -> (class names, palette): the label space a model predicts and how it is coloured
DATASETS = {"ade20k": (ade20k.CLASSES, ade20k.PALETTE), "coco": (coco.CLASSES, coco.PALETTE)}


#: short name -> published model (``model=`` also takes a hub id or a local folder)
MODELS: dict[str, SegModel] = {
    "upernet-convnext-small": SegModel(
        "openmmlab/upernet-convnext-small", "upernet-convnext", "small", "MIT"
    ),
    "segformer-b0": SegModel(
        "nvidia/segformer-b0-finetuned-ade-512-512",
        "segformer",
        "b0",
        "NVIDIA Source Code Licence for SegFormer (non-commercial)",
    ),  # fmt: skip
    **{
        f"oneformer-ade20k-swin-{size}": SegModel(
            f"shi-labs/oneformer_ade20k_swin_{size}", "oneformer", size, "MIT", ONEFORMER_FILES
        )
        for size in ("large", "tiny")
    },
    "oneformer-coco-swin-large": SegModel(
        "shi-labs/oneformer_coco_swin_large",
        "oneformer",
        "large",
        "MIT",
        ONEFORMER_FILES,
        "coco",
        "ControlNet 1.1 seg_ofcoco (OneFormer COCO Swin-L, semantic task, COCO panoptic colours)",
    ),
}
DEFAULT_MODEL = "upernet-convnext-small"
BENCHMARK_MODELS = ("upernet-convnext-small", "segformer-b0")
PERSON = ade20k.CLASSES.index("person")


@register
class Seg(hf_models.HFAnnotator):
    """ADE20K semantic segmentation: palette-coloured map plus the class-index map."""

    name = "seg"
    version = "1"
    outputs = ("seg", "seglabel")
    stats = ("seg_classes", "seg_person")
    description = (
        "ADE20K 150-class (OneFormer COCO: COCO 133-class) segmentation, exact palette (RGB) "
        "+ class indices (1 channel)"
    )
    wants_gpu = True
    gpu_batch_size = 8  # UperNet ConvNeXt at 512 px
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

    def is_oneformer(self) -> bool:
        """A OneFormer model: a published one, or a hub id / folder named after OneFormer."""
        model = self.config["model"]
        return MODELS[model].family == "oneformer" if model in MODELS else "oneformer" in model

    def dataset(self) -> str:
        """The label space of the configured model (ADE20K unless a published COCO model)."""
        model = self.config["model"]
        return MODELS[model].dataset if model in MODELS else "ade20k"

    def model_task(self) -> str:
        return "universal-seg" if self.is_oneformer() else self.task

    def model_extra_files(self) -> tuple[str, ...]:
        return ONEFORMER_FILES if self.is_oneformer() else ()

    def _prepare(self, model: Any, folder: Path, repo: str) -> hf_models.Preprocess:
        classes = DATASETS[self.dataset()][0]
        if model.config.num_labels != len(classes):
            raise WeightsError(
                f"seg: {repo} predicts {model.config.num_labels} classes, "
                f"not {self.dataset()}'s {len(classes)}"
            )
        if self.is_oneformer():
            from transformers import AutoTokenizer

            tokens = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)(
                ONEFORMER_TASK, padding="max_length", truncation=True,
                max_length=model.config.task_seq_len, return_tensors="pt",
            )  # fmt: skip
            self._task_inputs = tokens["input_ids"].to(self.device)
        return hf_models.Preprocess.from_folder(folder, multiple=32)

    def forward(self, pixels: Any) -> Any:
        """(B, 150, h, w) class scores (logits; OneFormer: its semantic class scores)."""
        import torch

        if not self.is_oneformer():
            return self._model(pixel_values=pixels).logits
        tasks = self._task_inputs.expand(pixels.shape[0], -1)
        out = self._model(pixel_values=pixels, task_inputs=tasks)
        classes = out.class_queries_logits.softmax(dim=-1)[..., :-1]
        return torch.einsum("bqc,bqhw->bchw", classes, out.masks_queries_logits.sigmoid())

    def predict_labels(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """HxW uint8 ADE20K class indices for each RGB image (argmax of logits at full size)."""
        return [logits.argmax(0).cpu().numpy().astype(np.uint8) for logits in self.predict(images)]

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        classes, palette = DATASETS[self.dataset()]
        person = classes.index("person")
        out = []
        for labels in self.predict_labels(images):
            out.append(
                Annotation(
                    maps={"seg": palette[labels], "seglabel": labels},
                    stats={
                        "seg_classes": float(len(np.unique(labels))),
                        "seg_person": float(np.count_nonzero(labels == person)) / labels.size,
                    },
                )
            )
        return out
