"""Shared plumbing for the torch annotators: load a checkpoint once, batch by size, pad and crop.

Used by ``hed``, ``scribble``, ``lines`` (M-LSD) and ``normal`` (NormalBAE). torch is
imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from annotators.base import Annotator, Param
from annotators.weights import (
    WeightsFile,
    find_local,
    identity,
    load_into,
    load_state_dict,
    resolve,
    resolve_device,
    sha256_file,
)

#: Params every torch annotator takes (device, weights folder, GPU precision).
TORCH_PARAMS = (
    Param("device", "auto", "cpu, cuda or auto", choices=("auto", "cpu", "cuda")),
    Param(
        "weights_dir", "", "folder holding the checkpoint ('' = $HINTSET_WEIGHTS_DIR / HF cache)"
    ),
    Param(
        "precision",
        "auto",
        "GPU arithmetic: auto (fp16 autocast on cuda, fp32 on cpu), fp32, fp16 or bf16",
        choices=("auto", "fp32", "fp16", "bf16"),
    ),
)

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


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (fp16 by default, bf16 on request); plain fp32 on CPU."""
    import torch

    if not device.startswith("cuda") or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def groups_by_size(images: list[np.ndarray]) -> Iterator[list[int]]:
    """Indices of images grouped by HxW, so a batch never pads one image to another's size.

    Each image's map then depends only on the image, not on what it was batched with.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.shape[:2], []).append(index)
    yield from groups.values()


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The smallest size >= (height, width) with both sides divisible by ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def to_tensor(images: list[np.ndarray], multiple: int, device: str) -> Any:
    """Stack same-size HxWx3 uint8 images into a float Bx3xHpxWp tensor (0..255).

    Pads at the bottom and right by repeating edge pixels up to ``multiple`` (so geometry is
    not shifted and no artificial border edge appears); crop outputs back with ``[:h, :w]``.
    """
    import torch

    batch = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float()
    height, width = batch.shape[-2:]
    hp, wp = padded_size(height, width, multiple)
    if (hp, wp) != (height, width):
        batch = torch.nn.functional.pad(batch, (0, wp - width, 0, hp - height), mode="replicate")
    return batch


def write_state(path: Any, state: dict[str, Any]) -> None:
    """Save a checkpoint with torch.save (the published ``.pth``/``.pt`` format)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, str(path))


def random_state(build: Callable[[], Any], seed: int = 0) -> dict[str, Any]:
    """State dict of a freshly initialised network (random weights, the exact published layout).

    BatchNorm statistics are randomised too (positive variances) so the test networks do
    more than pass inputs through.
    """
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build()
        for name, tensor in model.state_dict().items():
            if name.endswith("running_mean"):
                tensor.copy_(0.1 * torch.randn_like(tensor))
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand_like(tensor))
        return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


class TorchAnnotator(Annotator):
    """A learned annotator with one or more torch checkpoints, loaded once per instance.

    Subclasses implement :meth:`_load_networks` (returning the identities of what they
    loaded) and ``_annotate_batch``.
    """

    wants_gpu = True
    params = TORCH_PARAMS

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._loaded: list[dict[str, Any]] | None = None
        self.device = "cpu"

    def _load_networks(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def load(self) -> None:
        """Resolve, check and load the checkpoint(s) (idempotent); WeightsError if missing."""
        if self._loaded is None:
            self.device = resolve_device(self.config["device"])
            self._loaded = self._load_networks()

    @property
    def precision(self) -> str:
        """Effective GPU precision (``auto`` means fp16 on CUDA)."""
        value = self.config["precision"]
        return "fp16" if value == "auto" else value

    def weights_identity(self) -> list[dict[str, Any]]:
        """Files actually loaded; before loading, the files that would be used (when present)."""
        if self._loaded is not None:
            return list(self._loaded)
        found = []
        for spec in self.weights_files():
            path = find_local(spec, self.config.get("weights_dir") or None)
            if path is not None:
                found.append(identity(spec, path))
        return found
