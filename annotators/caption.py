"""Captions for images that have none: a transformers image-to-text model (BLIP, Florence-2).

Not a condition map, so not in the annotator registry: ``hintset build --caption MODEL``
gives each worker one :class:`Captioner`. Weights are resolved like every transformers
annotator (local folder, ``$HINTSET_WEIGHTS_DIR``, Hugging Face cache, hub id; sha256
recorded), and decoding is greedy with a token limit, so a rebuilt shard is byte-identical.
torch and transformers are imported inside methods so ``import annotators`` stays light.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annotators.hf_models import load_pretrained, quiet_transformers
from annotators.learned import resolve_dtype
from annotators.weights import (
    PROCESSOR_CONFIG,
    WeightsError,
    model_identity,
    resolve_device,
    resolve_model_dir,
    sha256_file,
)


@dataclass(frozen=True)
class CaptionModel:
    """A published captioning model: hub id and, for Florence-2, its task prompt."""

    repo_id: str
    task: str = ""  # Florence-2 task token (``<CAPTION>``); BLIP takes no prompt


#: short name -> published model (``--caption`` also takes a hub id or a local folder)
MODELS: dict[str, CaptionModel] = {
    "blip-base": CaptionModel("Salesforce/blip-image-captioning-base"),
    "blip-large": CaptionModel("Salesforce/blip-image-captioning-large"),
    "florence-2-base": CaptionModel("florence-community/Florence-2-base", "<CAPTION>"),
    "florence-2-large": CaptionModel("florence-community/Florence-2-large", "<CAPTION>"),
    "florence-2-base-detailed": CaptionModel(
        "florence-community/Florence-2-base", "<MORE_DETAILED_CAPTION>"
    ),
    "florence-2-large-detailed": CaptionModel(
        "florence-community/Florence-2-large", "<MORE_DETAILED_CAPTION>"
    ),
}
#: the task a Florence-2 model given by hub id or folder runs
FLORENCE_TASK = "<CAPTION>"
#: files a captioning model needs beside config and weights
TOKENIZER_FILES = ("tokenizer_config.json",)
#: one of these: the image processor config (older repos) or the whole processor's
#: (as transformers 5 saves it)
PROCESSOR_FILES = (PROCESSOR_CONFIG, "processor_config.json")
#: tokenizer and processor files fetched with them when the repo has them
TOKENIZER_PATTERNS = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt",
                      "special_tokens_map.json", "added_tokens.json", "generation_config.json")  # fmt: skip
DEFAULT_MAX_TOKENS = 40


def model_id(model: str) -> str:
    """Hub id (or folder) of ``model``: short names map to their published repo."""
    return MODELS[model].repo_id if model in MODELS else model


def resolve_caption_model(model: str, weights_dir: str = "", offline: bool | None = None) -> Path:
    """The folder of a complete captioning model; WeightsError (one line) when missing."""
    return resolve_model_dir(model_id(model), weights_dir or None, offline=offline,
                             extra=TOKENIZER_FILES, optional=TOKENIZER_PATTERNS,
                             processor=PROCESSOR_FILES)  # fmt: skip


def clean(text: str) -> str:
    """One line of caption text: whitespace runs collapsed, ends stripped."""
    return " ".join(text.split())


class Captioner:
    """Loads an image-to-text model once and captions RGB images in batches, deterministically."""

    def __init__(self, model: str = "blip-base", *, max_tokens: int = DEFAULT_MAX_TOKENS,
                 batch_size: int = 8, device: str = "auto", precision: str = "auto",
                 weights_dir: str = "") -> None:  # fmt: skip
        if max_tokens < 1:
            raise ValueError(f"caption max tokens must be >= 1 (got {max_tokens})")
        self.model, self.model_id = model, model_id(model)
        self.max_tokens, self.batch_size = max_tokens, max(1, batch_size)
        self.device_choice, self.precision, self.weights_dir = device, precision, weights_dir
        self.device, self.task = "cpu", MODELS[model].task if model in MODELS else ""
        self._net: Any = None
        self._processor: Any = None
        self._identity: dict[str, Any] = {}

    def load(self) -> None:
        """Resolve, hash and load model and processor once; WeightsError (one line) if unusable."""
        if self._net is not None:
            return
        import transformers

        folder = resolve_caption_model(self.model, self.weights_dir)
        self.device = resolve_device(self.device_choice)
        dtype = resolve_dtype(self.precision, self.device)
        config = json.loads((folder / "config.json").read_text())
        if config.get("model_type") == "florence2" and not self.task:
            self.task = FLORENCE_TASK
        net = load_pretrained("caption", folder, self.model_id, self.device, dtype)
        quiet_transformers()
        try:
            self._processor = transformers.AutoProcessor.from_pretrained(
                str(folder), local_files_only=True
            )
        except Exception as err:  # noqa: BLE001 - any processor failure becomes one line
            text = " ".join(str(err).split())[:300]
            raise WeightsError(
                f"cannot load the processor of {self.model_id} from {folder}: {text}"
            ) from None
        ident = model_identity(self.model_id, folder)
        ident["files"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
                          if p.is_file() and not p.name.startswith(".")}  # fmt: skip
        self._identity = {**ident, "task": self.task, "max_tokens": self.max_tokens}
        self._net = net

    def info(self) -> dict[str, Any]:
        """Plain data for the manifest: model id, task, token limit, files and their sha256."""
        return dict(self._identity) if self._identity else {"model": self.model_id}

    def caption(self, images: list[np.ndarray]) -> list[str]:
        """One caption per HxWx3 uint8 RGB image (greedy decoding, at most ``max_tokens``)."""
        self.load()
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            captions += self._caption_batch(images[start : start + self.batch_size])
        return captions

    def _caption_batch(self, images: list[np.ndarray]) -> list[str]:
        import torch
        from PIL import Image

        pil = [Image.fromarray(np.ascontiguousarray(img)) for img in images]
        if self.task:
            inputs = self._processor(images=pil, text=[self.task] * len(pil), return_tensors="pt")
        else:
            inputs = self._processor(images=pil, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self._net.dtype)
        with torch.inference_mode():
            ids = self._net.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False,
                                     num_beams=1)  # fmt: skip
        texts = self._processor.batch_decode(ids, skip_special_tokens=True)
        return [clean(t) for t in texts]
