"""Shared plumbing for annotators built on Hugging Face transformers models (depth, seg).

Load a resolved model folder strictly (a missing key or a wrong shape is a one-line
:class:`~annotators.weights.WeightsError`, never a silent random init), read the image
processor config as plain data, resize images to the model's working size in batches of
equal shape (or pad to a multiple and crop back), and return outputs at each image's size.
torch and transformers are imported inside functions so ``import annotators`` stays light.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from annotators.base import Param
from annotators.learned import LEARNED_PARAMS, LearnedAnnotator, groups_by_size, padded_size
from annotators.weights import (
    MODEL_FILES,
    NOT_RECORDED,
    PROCESSOR_CONFIG,
    WeightsError,
    WeightsFile,
    folder_files,
    model_identity,
    model_weights_file,
    resolve_model_dir,
)

#: keys a published checkpoint may lack because the module is never used in forward:
#: the first DPT fusion layer has no skip input, so its ``residual_layer1`` is dead weight
#: (transformers reports it as "newly initialized" for Intel/dpt-hybrid-midas).
UNUSED_KEYS = (re.compile(r"(^|\.)neck\.fusion_stage\.layers\.0\.residual_layer1\."),)

#: task -> transformers auto class name
AUTO_CLASSES = {
    "depth": "AutoModelForDepthEstimation",
    "seg": "AutoModelForSemanticSegmentation",
    "universal-seg": "AutoModelForUniversalSegmentation",  # OneFormer (annotators/seg.py)
    "mask-generation": "AutoModelForMaskGeneration",  # SAM (annotators/sam.py)
    "caption": "AutoModelForImageTextToText",  # BLIP, Florence-2 (annotators/caption.py)
}


def quiet_transformers() -> None:
    """No progress bars or load warnings from transformers (workers log one line per error)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _short_list(keys: Any) -> str:
    keys = sorted(str(k) for k in keys)
    return f"{keys[:3]}{' ...' if len(keys) > 3 else ''} ({len(keys)} in all)"


def check_loading_info(model_id: str, info: dict[str, Any]) -> None:
    """Raise WeightsError naming missing keys or wrong shapes (unused DPT keys excepted)."""
    missing = [k for k in info.get("missing_keys", ()) if not any(p.search(k) for p in UNUSED_KEYS)]
    mismatched = list(info.get("mismatched_keys", ()))
    if mismatched:
        shapes = "; ".join(
            f"{k} {tuple(got)} != {tuple(want)}" for k, got, want, *_ in mismatched[:3]
        )
        raise WeightsError(f"{model_id}: weights have wrong shapes: {shapes}")
    if missing:
        extra = info.get("unexpected_keys", ())
        hint = f"; unexpected keys {_short_list(extra)}" if extra else ""
        raise WeightsError(
            f"{model_id}: weights do not match the network: missing keys {_short_list(missing)}{hint}"
        )


def load_pretrained(task: str, folder: Path, model_id: str, device: str, dtype: Any) -> Any:
    """Load the model in ``folder`` for ``task`` strictly, on ``device`` in eval mode."""
    import transformers

    quiet_transformers()
    auto = getattr(transformers, AUTO_CLASSES[task])
    weights = model_weights_file(folder)
    try:
        model, info = auto.from_pretrained(
            str(folder),
            output_loading_info=True,
            local_files_only=True,
            ignore_mismatched_sizes=True,  # reported below as one line instead of a long log
            use_safetensors=weights is not None and weights.suffix == ".safetensors",
            dtype=dtype,
        )
    except Exception as err:  # noqa: BLE001 - any loading failure becomes one line
        text = " ".join(str(err).split())[:300]
        raise WeightsError(
            f"cannot load {model_id} from {folder}: {type(err).__name__}: {text}"
        ) from None
    check_loading_info(model_id, info)
    return model.to(device).eval()


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: working size, aspect policy, size multiple, normalisation."""

    size: tuple[int, int]  # (height, width) from the image processor config
    keep_aspect: bool  # True: ``size`` is a lower bound on the short side (Depth Anything)
    multiple: int  # sides are rounded to a multiple of this
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fixed: bool = False  # the network only accepts exactly ``size``
    #: keep the aspect ratio exactly: scale the short side, pad to ``multiple``, crop back
    pad: bool = False

    @classmethod
    def from_folder(
        cls, folder: Path, *, fixed: bool = False, multiple: int = 32, pad: bool = False
    ) -> Preprocess:
        """Read ``preprocessor_config.json`` as plain data."""
        path = Path(folder) / PROCESSOR_CONFIG
        try:
            conf = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise WeightsError(f"cannot read {path}: {err}") from None
        size = conf.get("size") or {}
        if isinstance(size, int):
            size = {"height": size, "width": size}
        if "shortest_edge" in size:
            size = {"height": size["shortest_edge"], "width": size["shortest_edge"]}
        height, width = int(size.get("height", 512)), int(size.get("width", 512))
        normalize = conf.get("do_normalize", True)
        mean = tuple(conf.get("image_mean", (0.5,) * 3)) if normalize else (0.0,) * 3
        std = tuple(conf.get("image_std", (0.5,) * 3)) if normalize else (1.0,) * 3
        if max(mean) > 1:  # given for 0..255 pixels (OneFormer's processors): scale to 0..1
            mean, std = tuple(m / 255 for m in mean), tuple(s / 255 for s in std)
        ensure = int(conf.get("ensure_multiple_of") or 1)
        return cls(
            size=(height, width),
            keep_aspect=bool(conf.get("keep_aspect_ratio", False)),
            multiple=ensure if ensure > 1 else multiple,
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            fixed=fixed,
            pad=pad,
        )

    def working_shape(self, height: int, width: int, short_side: int = 0) -> tuple[int, int]:
        """(h, w) the network sees for an image: a fixed size, or the short side scaled."""
        if self.fixed or (not short_side and not self.keep_aspect):
            return self.size
        target = short_side or min(self.size)
        scale = target / min(height, width)
        if self.pad:
            return (max(1, round(height * scale)), max(1, round(width * scale)))
        return (self._round(height * scale), self._round(width * scale))

    def _round(self, value: float) -> int:
        return max(self.multiple, int(round(value / self.multiple)) * self.multiple)

    def to_batch(self, images: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        """Resize RGB uint8 images to ``shape`` (area when shrinking, Lanczos when growing, as
        ControlNet's ``resize_image``), pad by edge replication to ``multiple`` when ``pad``,
        and normalise into an NCHW float32 array."""
        h, w = shape
        hp, wp = padded_size(h, w, self.multiple) if self.pad else (h, w)
        out = np.empty((len(images), 3, hp, wp), np.float32)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        for i, img in enumerate(images):
            if img.shape[:2] != (h, w):
                shrink = h * w < img.shape[0] * img.shape[1]
                img = cv2.resize(
                    img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4
                )
            if (hp, wp) != (h, w):
                img = np.pad(img, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")
            out[i] = ((img.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)
        return out


#: params every transformers annotator takes, after its own ``model`` and ``resolution``
HF_PARAMS = (
    *LEARNED_PARAMS,
    Param("sha256", "", "expected sha256 of the weights file (checked when given)"),
)


class HFAnnotator(LearnedAnnotator):
    """An annotator backed by a transformers model picked with ``model`` (short name, hub id
    or local folder): resolved offline-first, hash recorded, loaded once, run in batches."""

    task: ClassVar[str] = ""  # key of AUTO_CLASSES
    models: ClassVar[dict[str, Any]] = {}  # short name -> spec with a ``repo_id``
    default_model: ClassVar[str] = ""
    benchmark_models: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._model: Any = None
        self._pre: Preprocess | None = None

    def _validate(self) -> None:
        super()._validate()
        if self.config["resolution"] < 0:
            raise ValueError(f"{self.name}: resolution must be >= 0")

    def model_id(self) -> str:
        """Hub id (or folder) of the configured model."""
        model = self.config["model"]
        return self.models[model].repo_id if model in self.models else model

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        """Files of the default model (other models: see ``models`` / ``hintset weights``)."""
        spec = cls.models[cls.default_model]
        licence = getattr(spec, "licence", "")
        return [WeightsFile(name, repo_id=spec.repo_id, licence=licence) for name in MODEL_FILES]

    @classmethod
    def catalogue(cls) -> dict[str, dict[str, Any]]:
        """One entry per published model (short name, default first): its folder's files, hub
        repo, licence and reference implementation."""
        names = [cls.default_model, *(n for n in cls.models if n != cls.default_model)]
        return {
            name: {
                "files": folder_files(cls.models[name]),
                "repos": [cls.models[name].repo_id],
                "licence": getattr(cls.models[name], "licence", "") or NOT_RECORDED,
                "reference": cls.reference
                if name == cls.default_model
                else getattr(cls.models[name], "reference", ""),
            }
            for name in names
        }

    def backend(self) -> str:
        """The configured model's short name (a hub id or folder when it is not a published one)."""
        return self.config["model"]

    def licence(self) -> str:
        """The published model's licence; a model given by hub id or folder: not known here."""
        entries = self.catalogue()
        if self.backend() in entries:
            return entries[self.backend()]["licence"]
        return f"not known for {self.backend()}: see its model card"

    @classmethod
    def model_folders(cls) -> dict[str, Any]:
        """Every published model (short name -> spec), for ``hintset weights``."""
        return dict(cls.models)

    @classmethod
    def benchmark_variants(cls) -> list[dict[str, Any]]:
        """Parameter sets the speed benchmark runs (one per network)."""
        return [{"model": name} for name in cls.benchmark_models]

    def weights_identity(self) -> list[dict[str, Any]]:
        """Model id, weights file and sha256; resolved without loading the network if need be."""
        if self._loaded is not None:
            return list(self._loaded)
        repo = self.model_id()
        try:
            folder = resolve_model_dir(repo, self.config["weights_dir"] or None, offline=True)
            return [model_identity(repo, folder, self.config["sha256"])]
        except WeightsError:
            return []

    def requirements(self) -> tuple[tuple[str, str], ...]:
        """torch and transformers (the ``models`` extra)."""
        from annotators.extras import TRANSFORMERS

        return TRANSFORMERS

    def find_weights(self) -> None:
        """The configured model's folder (config, weights, processor config, extra files)."""
        resolve_model_dir(
            self.model_id(), self.config["weights_dir"] or None, extra=self.model_extra_files()
        )

    def _prepare(self, model: Any, folder: Path, repo: str) -> Preprocess:
        """Check the loaded model for this annotator and return its preprocessing."""
        raise NotImplementedError

    def model_task(self) -> str:
        """Key of AUTO_CLASSES the configured model loads with (the class's ``task``)."""
        return self.task

    def model_extra_files(self) -> tuple[str, ...]:
        """Files the configured model's folder needs beside config, weights and processor."""
        return ()

    def _load_networks(self) -> list[dict[str, Any]]:
        """Resolve the model folder, check/record the weights hash, load the network."""
        repo = self.model_id()
        folder = resolve_model_dir(
            repo, self.config["weights_dir"] or None, extra=self.model_extra_files()
        )
        ident = model_identity(repo, folder, self.config["sha256"])
        model = load_pretrained(self.model_task(), folder, repo, self.device, self.dtype)
        self._pre = self._prepare(model, folder, repo)
        self._model = model
        return [ident]

    def batches(self, images: list[np.ndarray]) -> Iterator[tuple[list[int], Any, tuple[int, int]]]:
        """(indices, pixel tensor, working shape) per group of images sharing a working shape;
        the tensor may be padded beyond the working shape (crop outputs back to it)."""
        import torch

        self.load()
        pre = self._pre
        shapes = [pre.working_shape(*img.shape[:2], self.config["resolution"]) for img in images]
        for idx in groups_by_size(shapes, self.network_batch_size()):
            batch = pre.to_batch([images[i] for i in idx], shapes[idx[0]])
            yield idx, torch.from_numpy(batch).to(self.device, self.dtype), shapes[idx[0]]

    def forward(self, pixels: Any) -> Any:
        """The network's map output (B, C, h, w) for a pixel batch."""
        raise NotImplementedError

    def predict(self, images: list[np.ndarray], at_image_size: bool = True) -> list[Any]:
        """Float32 (C, H, W) output per image: run in batches, crop padding, resize bilinearly
        to the image's own height and width (or keep the working size: ``at_image_size=False``)."""
        import torch

        results: list[Any] = [None] * len(images)
        for idx, pixels, (h, w) in self.batches(images):
            with torch.inference_mode():
                out = self.forward(pixels).float()
                # crop the padding back, at the output's own scale (e.g. logits at 1/4)
                (hp, wp), (oh, ow) = pixels.shape[-2:], out.shape[-2:]
                out = out[:, :, : round(oh * h / hp), : round(ow * w / wp)]
                for j, i in enumerate(idx):
                    height, width = images[i].shape[:2]
                    full = out[j : j + 1]
                    if at_image_size and tuple(full.shape[-2:]) != (height, width):
                        full = torch.nn.functional.interpolate(
                            full, size=(height, width), mode="bilinear", align_corners=False
                        )
                    results[i] = full[0]
        return results
