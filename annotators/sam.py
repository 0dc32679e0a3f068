"""``sam``: Segment Anything automatic masks as one colour-coded map (controlnet_aux's SamDetector).

transformers' ``mask-generation`` pipeline on a SAM model (``facebook/sam-vit-huge``, the ViT-H
controlnet_aux loads; large and base too): a grid of ``points_per_side``^2 prompts, masks
kept above ``pred_iou_thresh`` and ``stability_score_thresh``, overlaps removed by NMS. The map
draws the masks largest first on black, mask ``k`` (by area rank) in ADE20K palette colour
``k % 150``: deterministic where controlnet_aux picks random colours. The mask count is the
stat ``sam_masks``. Images run one at a time; the prompts of one image run in batches of
``points_per_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annotators import ade20k, hf_models
from annotators.base import Annotation, Param
from annotators.learned import LearnedAnnotator
from annotators.registry import register


@dataclass(frozen=True)
class SamModel:
    """A published SAM checkpoint (transformers port)."""

    repo_id: str
    licence: str = "Apache-2.0"


MODELS = {
    f"sam-vit-{size}": SamModel(f"facebook/sam-vit-{size}") for size in ("huge", "large", "base")
}
DEFAULT_MODEL = "sam-vit-huge"


def colour_masks(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8: masks drawn largest first (smaller ones on top), rank k in palette colour k."""
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
    out = np.zeros((*shape, 3), np.uint8)
    for rank, index in enumerate(order):
        out[masks[index]] = ade20k.PALETTE[rank % len(ade20k.PALETTE)]
    return out


@register
class Sam(hf_models.HFAnnotator):
    """SAM automatic masks, colour-coded (RGB), with the mask count as a stat."""

    name = "sam"
    version = "1"
    outputs = ("sam",)
    stats = ("sam_masks",)
    description = "Segment Anything automatic masks, colour-coded by area rank (RGB)"
    reference = "controlnet_aux 0.0.10 SamDetector (automatic masks; random colours there)"
    task = "mask-generation"
    models = MODELS
    default_model = DEFAULT_MODEL
    params = (
        Param("model", DEFAULT_MODEL, f"one of {', '.join(MODELS)}, or a hub id / local folder"),
        Param("points_per_side", 32, "prompt grid: this many points per side (SAM's default 32)"),
        Param("points_per_batch", 64, "prompts run through the mask decoder at once"),
        Param("pred_iou_thresh", 0.88, "keep masks whose predicted IoU is above this", maximum=1),
        Param("stability_score_thresh", 0.95, "keep masks at least this stable", maximum=1),
        *hf_models.HF_PARAMS,
    )

    def _validate(self) -> None:
        LearnedAnnotator._validate(self)  # no ``resolution``: SAM's processor sets the size
        if self.config["points_per_side"] < 1 or self.config["points_per_batch"] < 1:
            raise ValueError("sam: points_per_side and points_per_batch must be >= 1")

    def _prepare(self, model: Any, folder: Path, repo: str) -> hf_models.Preprocess:
        from transformers import SamImageProcessor, pipeline

        processor = SamImageProcessor.from_pretrained(str(folder), local_files_only=True)
        self._generator = pipeline(
            "mask-generation", model=model, image_processor=processor, device=self.device
        )
        return hf_models.Preprocess.from_folder(folder)

    def masks(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Boolean HxW masks SAM finds in one RGB image."""
        from PIL import Image

        self.load()
        cfg = self.config
        found = self._generator(
            Image.fromarray(rgb),
            points_per_crop=cfg["points_per_side"],
            points_per_batch=cfg["points_per_batch"],
            pred_iou_thresh=cfg["pred_iou_thresh"],
            stability_score_thresh=cfg["stability_score_thresh"],
        )
        return [np.asarray(m, dtype=bool) for m in found["masks"]]

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        out = []
        for rgb in images:
            masks = self.masks(rgb)
            out.append(
                Annotation(
                    maps={"sam": colour_masks(masks, rgb.shape[:2])},
                    stats={"sam_masks": float(len(masks))},
                )
            )
        return out
