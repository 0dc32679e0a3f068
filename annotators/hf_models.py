"""Shared plumbing for annotators built on Hugging Face transformers models (depth, seg).

Load a resolved model folder strictly (a missing key or a wrong shape is a one-line
:class:`~annotators.weights.WeightsError`, never a silent random init), read the image
processor config as plain data, resize images to the model's working size in batches of
equal shape, and write random weights from a config for tests and benchmarks.
torch and transformers are imported inside functions so ``import annotators`` stays light.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from annotators.base import Annotator, Param
from annotators.weights import (
    MODEL_FILES,
    PROCESSOR_CONFIG,
    WeightsError,
    WeightsFile,
    model_identity,
    model_weights_file,
    resolve_device,
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
}

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def quiet_transformers() -> None:
    """No progress bars or load warnings from transformers (workers log one line per error)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def resolve_dtype(precision: str, device: str) -> Any:
    """torch dtype for ``precision``: auto = fp16 on CUDA (safe for these conv/ViT nets), else fp32."""
    import torch

    if precision == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if precision == "fp16" and not device.startswith("cuda"):
        raise WeightsError("precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


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
    fixed: bool = False  # the network only accepts exactly ``size`` (DPT-hybrid)

    @classmethod
    def from_folder(cls, folder: Path, *, fixed: bool = False, multiple: int = 32) -> Preprocess:
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
        ensure = int(conf.get("ensure_multiple_of") or 1)
        return cls(
            size=(height, width),
            keep_aspect=bool(conf.get("keep_aspect_ratio", False)),
            multiple=ensure if ensure > 1 else multiple,
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            fixed=fixed,
        )

    def working_shape(self, height: int, width: int, short_side: int = 0) -> tuple[int, int]:
        """(h, w) the network sees for an image: a fixed size, or the short side scaled."""
        if self.fixed or (not short_side and not self.keep_aspect):
            return self.size
        target = short_side or min(self.size)
        scale = target / min(height, width)
        return (self._round(height * scale), self._round(width * scale))

    def _round(self, value: float) -> int:
        return max(self.multiple, int(round(value / self.multiple)) * self.multiple)

    def to_batch(self, images: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        """Resize RGB uint8 images to ``shape`` and normalise into an NCHW float32 array."""
        h, w = shape
        out = np.empty((len(images), 3, h, w), np.float32)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        for i, img in enumerate(images):
            if img.shape[:2] != (h, w):
                shrink = h * w < img.shape[0] * img.shape[1]
                img = cv2.resize(
                    img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
                )
            out[i] = ((img.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)
        return out


def group_by_shape(shapes: list[tuple[int, int]], chunk: int) -> list[list[int]]:
    """Indices grouped by equal working shape, each group split into chunks of at most ``chunk``."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    return [
        idx[start : start + chunk] for idx in groups.values() for start in range(0, len(idx), chunk)
    ]


def save_random(
    folder: Path, build_model: Callable[[], Any], build_processor: Callable[[], Any], seed: int = 0
) -> list[Path]:
    """Build a model from its config with random weights and ``save_pretrained`` it (+ processor)."""
    import torch

    quiet_transformers()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model()
    model.save_pretrained(str(folder), safe_serialization=True)
    build_processor().save_pretrained(str(folder))
    return sorted(p for p in folder.iterdir() if p.is_file())


#: params every transformers annotator takes, after its own ``model`` and ``resolution``
HF_PARAMS = (
    Param("batch_size", 8, "largest batch run through the network at once"),
    Param("device", "auto", "cpu, cuda or auto", choices=("auto", "cpu", "cuda")),
    Param("precision", "auto", "auto = fp16 on CUDA, fp32 on CPU", choices=PRECISIONS),
    Param("sha256", "", "expected sha256 of the weights file (checked when given)"),
    Param("weights_dir", "", "folder holding <hub id>/ model folders (else $HINTSET_WEIGHTS_DIR)"),
)


class HFAnnotator(Annotator):
    """An annotator backed by a transformers model picked with ``model`` (short name, hub id
    or local folder): resolved offline-first, hash recorded, loaded once, run in batches."""

    wants_gpu = True
    task: ClassVar[str] = ""  # key of AUTO_CLASSES
    models: ClassVar[dict[str, Any]] = {}  # short name -> spec with a ``repo_id``
    default_model: ClassVar[str] = ""
    benchmark_models: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._model: Any = None
        self._pre: Preprocess | None = None
        self._identity: list[dict[str, Any]] = []

    def _validate(self) -> None:
        if self.config["resolution"] < 0 or self.config["batch_size"] < 1:
            raise ValueError(f"{self.name}: resolution must be >= 0 and batch_size >= 1")

    def model_id(self) -> str:
        """Hub id (or folder) of the configured model."""
        model = self.config["model"]
        return self.models[model].repo_id if model in self.models else model

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        """Files of the default model (other models: see ``models`` / ``hintset weights``)."""
        repo = cls.models[cls.default_model].repo_id
        return [WeightsFile(name, repo_id=repo) for name in MODEL_FILES]

    @classmethod
    def model_ids(cls) -> dict[str, str]:
        """Short model name -> hub id, for ``hintset weights``."""
        return {name: spec.repo_id for name, spec in cls.models.items()}

    @classmethod
    def benchmark_variants(cls) -> list[dict[str, Any]]:
        """Parameter sets the speed benchmark runs (one per network)."""
        return [{"model": name} for name in cls.benchmark_models]

    def weights_identity(self) -> list[dict[str, Any]]:
        """Model id, weights file and sha256; resolved without loading the network if need be."""
        if not self._identity:
            repo = self.model_id()
            try:
                folder = resolve_model_dir(repo, self.config["weights_dir"] or None, offline=True)
                self._identity = [model_identity(repo, folder, self.config["sha256"])]
            except WeightsError:
                return []
        return list(self._identity)

    def _prepare(self, model: Any, folder: Path, repo: str) -> Preprocess:
        """Check the loaded model for this annotator and return its preprocessing."""
        raise NotImplementedError

    def load(self) -> None:
        """Resolve the model folder, check/record the weights hash, load the network once."""
        if self._model is not None:
            return
        repo = self.model_id()
        folder = resolve_model_dir(repo, self.config["weights_dir"] or None)
        identity = model_identity(repo, folder, self.config["sha256"])
        device = resolve_device(self.config["device"])
        dtype = resolve_dtype(self.config["precision"], device)
        model = load_pretrained(self.task, folder, repo, device, dtype)
        self._pre = self._prepare(model, folder, repo)
        self._model, self._device, self._dtype = model, device, dtype
        self._identity = [identity]

    def batches(self, images: list[np.ndarray]) -> Iterator[tuple[list[int], Any]]:
        """(indices, pixel tensor) per group of images sharing a working size."""
        import torch

        self.load()
        pre = self._pre
        shapes = [pre.working_shape(*img.shape[:2], self.config["resolution"]) for img in images]
        for idx in group_by_shape(shapes, self.config["batch_size"]):
            batch = pre.to_batch([images[i] for i in idx], shapes[idx[0]])
            yield idx, torch.from_numpy(batch).to(self._device, self._dtype)
