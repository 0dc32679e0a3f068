"""The one base for learned annotators: device, precision, batching by size, pad and crop back,
weights resolution (local folder / HF cache / hub id, sha256 check, one-line error when missing).

A new learned annotator is one module: a :class:`LearnedAnnotator` subclass that names its
``weights_files()``, loads its network(s) in ``_load_networks`` with :meth:`load_torch` (or
subclasses :class:`annotators.hf_models.HFAnnotator` for transformers models) and implements
``_annotate_batch``; its ``nn.Module`` classes live in ``annotators/nets/``. torch is imported
inside functions so ``import annotators`` stays light.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from annotators.base import Annotation, Annotator, Param
from annotators.weights import (
    WeightsError,
    WeightsFile,
    find_local,
    identity,
    load_into,
    load_state_dict,
    resolve,
    resolve_all,
    resolve_device,
    sha256_file,
)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")

#: Params every learned annotator takes (batching, device, GPU precision, weights folder).
LEARNED_PARAMS = (
    Param(
        "batch_size",
        0,
        "largest batch run through the network at once; 0 = auto: 1 on CPU (fastest per "
        "image there), on CUDA the annotator's GPU batch, halved while it runs out of memory",
    ),
    Param("device", "auto", "cpu, cuda or auto", choices=("auto", "cpu", "cuda")),
    Param(
        "precision",
        "auto",
        "arithmetic: auto (fp16 on cuda, fp32 on cpu), fp32, fp16 (cuda only) or bf16",
        choices=PRECISIONS,
    ),
    Param("weights_dir", "", "folder holding the weights ('' = $HINTSET_WEIGHTS_DIR / HF cache)"),
)


def learned_params(prefix: str = "", **defaults: Any) -> tuple[Param, ...]:
    """LEARNED_PARAMS with other defaults (``precision="fp32"``) and a help prefix (``"mlsd: "``)."""
    return tuple(
        dataclasses.replace(p, default=defaults.get(p.name, p.default), help=prefix + p.help)
        for p in LEARNED_PARAMS
    )


def fp32_params() -> tuple[Param, ...]:
    """LEARNED_PARAMS for files run as published in fp32 (ONNX, TorchScript): precision is
    auto or fp32 only."""
    return tuple(
        dataclasses.replace(p, choices=("auto", "fp32"), help="auto or fp32: the file as published")
        if p.name == "precision" else p
        for p in LEARNED_PARAMS
    )  # fmt: skip


def resolve_dtype(precision: str, device: str) -> Any:
    """torch dtype for ``precision`` on ``device``: auto = fp16 on CUDA, fp32 on CPU."""
    import torch

    if precision == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if precision == "fp16" and not device.startswith("cuda"):
        raise WeightsError("precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def autocast(device: str, dtype: Any) -> contextlib.AbstractContextManager:
    """Mixed precision in ``dtype`` (weights stay fp32); nothing for fp32."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def groups_by_size(items: Sequence[Any], batch_size: int = 8) -> Iterator[list[int]]:
    """Indices grouped by size (an image's HxW, or the item itself as a shape), at most
    ``batch_size`` each: a batch never pads one image to another's size, so each map depends
    only on its own image, not on its batch mates."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(items):
        key = tuple(item.shape[:2]) if isinstance(item, np.ndarray) else tuple(item)
        groups.setdefault(key, []).append(index)
    step = max(1, batch_size)
    for group in groups.values():
        for start in range(0, len(group), step):
            yield group[start : start + step]


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The smallest size >= (height, width) with both sides divisible by ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pad_edge(rgb: np.ndarray, multiple: int = 64) -> np.ndarray:
    """``rgb`` padded at the bottom and right by repeating edge pixels up to ``multiple``, as
    the reference preprocessors' ``resize_image_with_pad`` (crop results back to the input)."""
    height, width = rgb.shape[:2]
    hp, wp = padded_size(height, width, multiple)
    return np.pad(rgb, ((0, hp - height), (0, wp - width), (0, 0)), mode="edge")


def to_tensor(images: list[np.ndarray], multiple: int, device: str) -> Any:
    """Stack same-size HxWx3 uint8 images into a float Bx3xHpxWp tensor (0..255).

    Pads at the bottom and right by repeating edge pixels up to ``multiple`` (geometry is not
    shifted and no artificial border edge appears); crop outputs back with ``[..., :h, :w]``.
    """
    import torch

    batch = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float()
    height, width = batch.shape[-2:]
    hp, wp = padded_size(height, width, multiple)
    if (hp, wp) != (height, width):
        batch = torch.nn.functional.pad(batch, (0, wp - width, 0, hp - height), mode="replicate")
    return batch


# (filename, sha256, device) -> (model, identity); one copy per process, shared by annotators
# that use the same network (``hed`` and ``scribble`` in one worker load HED once).
_MODELS: dict[tuple[str, str, str], tuple[Any, dict[str, Any]]] = {}


def load_network(
    spec: WeightsFile,
    build: Callable[[], Any],
    *,
    weights_dir: str = "",
    device: str = "cpu",
    offline: bool | None = None,
    extract: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Resolve ``spec``, build the network, load the checkpoint strictly; cached per process.

    Returns ``(model in eval mode on device, identity dict for the manifest)``. Raises
    WeightsError (one line) for a missing file, a wrong sha256, missing keys or bad shapes.
    """
    path = resolve(spec, weights_dir or None, offline=offline)
    key = (spec.filename, sha256_file(path), device)
    if key not in _MODELS:
        state = load_state_dict(path)
        if extract is not None:
            state = extract(state)
        model = build()
        load_into(model, state, spec.filename)
        _MODELS[key] = (model.eval().to(device), identity(spec, path))
    return _MODELS[key]


def clear_cache() -> None:
    """Forget every loaded network (tests; frees memory)."""
    _MODELS.clear()


class LearnedAnnotator(Annotator):
    """A learned annotator: networks loaded once per instance, run in batches of equal size.

    Subclasses implement :meth:`_load_networks` (load, return the identities of what was
    loaded) and ``_annotate_batch``; annotators whose default backend is classical override
    :meth:`uses_weights`.
    """

    wants_gpu = True
    params = LEARNED_PARAMS
    #: the automatic network batch on CUDA, where it starts (halved on out-of-memory errors):
    #: 16 fp16 images of 512 px; big networks set less
    gpu_batch_size: ClassVar[int] = 16

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._loaded: list[dict[str, Any]] | None = None
        self.device = "cpu"
        self._gpu_batch = self.gpu_batch_size

    def network_batch_size(self) -> int:
        """Images per network call: the ``batch_size`` param, or for 0 (auto) 1 on CPU, where
        batches are slower per image (docs/benchmarks.md), and on CUDA ``gpu_batch_size``
        (halved each time a batch runs out of GPU memory: the largest that fits)."""
        if self.config["batch_size"]:
            return self.config["batch_size"]
        return self._gpu_batch if self.device.startswith("cuda") else 1

    def annotate_batch(
        self, images: list[np.ndarray], *, keys: list[str] | None = None
    ) -> list[Annotation]:
        """As :meth:`Annotator.annotate_batch`; with an automatic batch size on CUDA, a batch
        that runs out of GPU memory is redone at half the batch size (which then stays)."""
        while True:
            try:
                return super().annotate_batch(images, keys=keys)
            except Exception as err:
                if not self._shrink_batch(err):
                    raise

    def _shrink_batch(self, err: Exception) -> bool:
        """Halve the automatic GPU batch after an out-of-memory error; False if not applicable."""
        if "out of memory" not in str(err).lower() or self.config["batch_size"]:
            return False
        if not self.device.startswith("cuda") or self._gpu_batch <= 1:
            return False
        import torch

        self._gpu_batch //= 2
        torch.cuda.empty_cache()
        return True

    def uses_weights(self) -> bool:
        """Whether this configuration loads learned weights (False for classical backends)."""
        return True

    def configured_weights(self) -> list[Any]:
        """The files this configuration loads (all of ``weights_files()`` unless overridden)."""
        return self.weights_files()

    def _load_networks(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def requirements(self) -> tuple[tuple[str, str], ...]:
        """torch (the ``models`` extra) when this configuration loads a network."""
        from annotators.extras import TORCH

        return TORCH if self.uses_weights() else ()

    def check_ready(self) -> None:
        """Packages, then every weights file this configuration loads (one line naming all
        the missing files and where to put them); loads nothing."""
        super().check_ready()
        if self.uses_weights():
            self.find_weights()

    def find_weights(self) -> None:
        """Resolve the files :meth:`configured_weights` names; WeightsError if one is missing."""
        resolve_all(self.configured_weights(), self.config["weights_dir"] or None)

    def load(self) -> None:
        """Resolve, check and load the weights once (idempotent); WeightsError if missing."""
        if self._loaded is None:
            if self.uses_weights():
                self.device = resolve_device(self.config["device"])
                resolve_dtype(self.config["precision"], self.device)  # fp16 on CPU: fail now
            self._loaded = self._load_networks()

    def load_torch(
        self,
        spec: WeightsFile,
        build: Callable[[], Any],
        extract: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """One checkpoint resolved from this annotator's ``weights_dir`` and loaded strictly."""
        return load_network(
            spec, build, weights_dir=self.config["weights_dir"], device=self.device, extract=extract
        )

    @property
    def dtype(self) -> Any:
        """torch dtype of the arithmetic (``precision`` on the resolved device)."""
        return resolve_dtype(self.config["precision"], self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context running the network in this annotator's precision."""
        return autocast(self.device, self.dtype)

    def padded_batches(
        self, images: list[np.ndarray], multiple: int
    ) -> Iterator[tuple[list[int], Any]]:
        """(indices, Bx3xHpxWp float tensor 0..255 on the device) per group of same-size images,
        padded to ``multiple``; crop outputs back with ``[..., :h, :w]``."""
        for group in groups_by_size(images, self.network_batch_size()):
            yield group, to_tensor([images[i] for i in group], multiple, self.device)

    def weights_identity(self) -> list[dict[str, Any]]:
        """Files actually loaded; before loading, the files that would be used (when present)."""
        if self._loaded is not None:
            return list(self._loaded)
        if not self.uses_weights():
            return []
        found = []
        for spec in self.configured_weights():
            path = find_local(spec, self.config.get("weights_dir") or None)
            if path is not None:
                found.append(identity(spec, path))
        return found


#: images per annotator call when no learned network runs: classical annotators work image
#: by image, so the batch only spreads per-call overhead
CLASSICAL_BATCH = 8


def auto_batch_size(annotators: Sequence[Annotator], gpu: bool) -> int:
    """``--batch-size`` auto: with a learned network on CPU 1 (batches are slower per image
    there: docs/benchmarks.md); on a GPU the largest ``gpu_batch_size`` of those networks;
    without one :data:`CLASSICAL_BATCH`."""
    learned = [a for a in annotators if isinstance(a, LearnedAnnotator) and a.wants_gpu]
    if not learned:
        return CLASSICAL_BATCH
    return max(a.gpu_batch_size for a in learned) if gpu else 1


def local_gpu(annotators: Sequence[Annotator]) -> bool:
    """Whether a learned network of ``annotators`` would run on a CUDA GPU of this machine."""
    devices = [a.config["device"] for a in annotators
               if isinstance(a, LearnedAnnotator) and a.wants_gpu]  # fmt: skip
    if not devices or all(d == "cpu" for d in devices):
        return False
    import torch

    return torch.cuda.is_available()


def predict_padded(
    annotator: LearnedAnnotator,
    images: list[np.ndarray],
    multiple: int,
    forward: Callable[[Any], Any],
) -> list[np.ndarray]:
    """One-channel float maps: ``forward`` (Bx3xHpxWp, 0..255 -> Bx1xHpxWp) run on same-size
    batches padded to ``multiple`` in the annotator's precision, cropped back to each image."""
    import torch

    maps: list[np.ndarray] = [np.empty(0)] * len(images)
    for group, batch in annotator.padded_batches(images, multiple):
        height, width = images[group[0]].shape[:2]
        with torch.inference_mode(), annotator.autocast():
            out = forward(batch).float()[:, 0, :height, :width].cpu().numpy()
        for i, one in zip(group, out, strict=True):
            maps[i] = one
    return maps


def gray_annotations(name: str, maps: list[np.ndarray]) -> list[Annotation]:
    """One Annotation per uint8 map, stored as ``{key}.{name}.png`` with its mean as a statistic."""
    return [
        Annotation(maps={name: m}, stats={f"{name}_mean": float(m.mean()) / 255.0}) for m in maps
    ]
