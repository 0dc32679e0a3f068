"""Find, check and describe model weights for learned annotators (one place for all of them).

Resolution order for a file: an explicit folder (``weights_dir=``), the
``HINTSET_WEIGHTS_DIR`` folder, the Hugging Face cache, then (only when not
offline) a download from the hub. ``HINTSET_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``
means never touch the network; a hub that does not answer is skipped at once (no retries).
The sha256 of the file actually used is always computed and recorded; when the expected
hash is known a mismatch is an error.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_DIR = "HINTSET_WEIGHTS_DIR"
ENV_OFFLINE = "HINTSET_OFFLINE"
DEFAULT_REPO = "lllyasviel/Annotators"


class WeightsError(RuntimeError):
    """Weights are missing, have the wrong hash, or do not match the network (one-line message)."""


@dataclass(frozen=True)
class WeightsFile:
    """A checkpoint file a learned annotator needs, and where it is published."""

    filename: str
    repo_id: str = DEFAULT_REPO
    sha256: str | None = None
    subfolder: str = ""
    size_hint: str = ""
    #: licence of the published file ("" = the repository's own, see ``DEFAULT_LICENCES``)
    licence: str = ""
    #: the publisher's download address when the file is not on the Hugging Face hub
    #: (``repo_id`` then is "" unless a user names a hub mirror)
    source: str = ""

    @property
    def url(self) -> str:
        """Where a user can download the file by hand."""
        if self.source:
            return self.source
        sub = f"{self.subfolder}/" if self.subfolder else ""
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{sub}{self.filename}"


#: licences of the upstream projects of lllyasviel/Annotators' files (the hub repo names none);
#: a file missing here is reported as "not recorded"
ANNOTATORS_LICENCES = {
    "ControlNetHED.pth": "Apache-2.0 (lllyasviel/ControlNet)",
    "mlsd_large_512_fp32.pth": "Apache-2.0 (navervision/mlsd)",
    "body_pose_model.pth": "CMU OpenPose academic non-commercial licence",
    "hand_pose_model.pth": "CMU OpenPose academic non-commercial licence",
    "scannet.pt": "MIT (baegwangbin/surface_normal_uncertainty)",
    "sk_model.pth": "MIT (carolineec/informative-drawings)",
    "sk_model2.pth": "MIT (carolineec/informative-drawings)",
}
NO_WEIGHTS = "none (no weights)"
NOT_RECORDED = "not recorded: see the source"


def file_licence(spec: WeightsFile) -> str:
    """The licence of a weights file: its own field, else the known upstream licence."""
    if spec.licence:
        return spec.licence
    if spec.repo_id == DEFAULT_REPO:
        return ANNOTATORS_LICENCES.get(spec.filename, NOT_RECORDED)
    return NOT_RECORDED


def describe_files(files: Sequence[WeightsFile], reference: str = "") -> dict[str, Any]:
    """Plain data for one backend: file names, hub repos, licence(s), reference implementation."""
    licences = list(dict.fromkeys(file_licence(f) for f in files))
    return {
        "files": [f.filename for f in files],
        "repos": list(dict.fromkeys(f.repo_id for f in files)),
        "licence": "; ".join(licences) if licences else NO_WEIGHTS,
        "reference": reference,
    }


def is_offline(offline: bool | None = None) -> bool:
    """True when the network must not be used (argument, or HINTSET_OFFLINE / HF_HUB_OFFLINE)."""
    if offline is not None:
        return offline
    return any(
        os.environ.get(var, "").lower() in {"1", "true", "yes", "on"}
        for var in (ENV_OFFLINE, "HF_HUB_OFFLINE")
    )


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub ($HF_ENDPOINT) accepts a connection, asked once per process:
    without a network a hub download retries for about 25 s per file before it fails."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def use_hub(offline: bool | None = None) -> bool:
    """True when a missing file may be fetched from the hub: not offline, and the hub answers."""
    return not is_offline(offline) and hub_reachable()


def weights_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Local folders searched, in order."""
    dirs = [Path(weights_dir)] if weights_dir else []
    if os.environ.get(ENV_DIR):
        dirs.append(Path(os.environ[ENV_DIR]))
    return dirs


def _local_candidates(spec: WeightsFile, folder: Path) -> list[Path]:
    rel = Path(spec.subfolder) / spec.filename if spec.subfolder else Path(spec.filename)
    return [folder / spec.filename, folder / rel, folder / spec.repo_id / rel]


def find_local(spec: WeightsFile, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """The file in a local folder or the Hugging Face cache, or None (never downloads)."""
    for folder in weights_dirs(weights_dir):
        for candidate in _local_candidates(spec, folder):
            if candidate.is_file():
                return candidate
    if not spec.repo_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    sub = f"{spec.subfolder}/" if spec.subfolder else ""
    cached = try_to_load_from_cache(spec.repo_id, f"{sub}{spec.filename}")
    return Path(cached) if isinstance(cached, str) else None


def missing_message(
    spec: WeightsFile | Sequence[WeightsFile], weights_dir: str | os.PathLike | None = None
) -> str:
    """One line naming the file(s), where they come from and where to put them."""
    specs = [spec] if isinstance(spec, WeightsFile) else list(spec)
    where = (
        weights_dir or os.environ.get(ENV_DIR) or f"a folder given by --weights-dir or ${ENV_DIR}"
    )
    names = ", ".join(s.filename for s in specs)
    sources = ", ".join(s.url for s in specs)
    cache = " or the Hugging Face cache" if any(s.repo_id for s in specs) else ""
    return (
        f"missing weights {names} (from {sources}); "
        f"put {'it' if len(specs) == 1 else 'them'} in {where}{cache}"
    )


def resolve(
    spec: WeightsFile,
    weights_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
) -> Path:
    """Path of a usable, hash-checked copy of ``spec``; raise WeightsError with one clear line."""
    path = find_local(spec, weights_dir)
    if path is None and spec.repo_id and use_hub(offline):
        try:
            from huggingface_hub import hf_hub_download

            path = Path(
                hf_hub_download(spec.repo_id, spec.filename, subfolder=spec.subfolder or None)
            )
        except Exception:  # noqa: BLE001 - any hub failure means "not available here"
            path = None
    if path is None:
        raise WeightsError(missing_message(spec, weights_dir))
    verify(spec, path)
    return path


def resolve_all(
    specs: Sequence[WeightsFile],
    weights_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
) -> list[Path]:
    """Paths of every file of ``specs``; one WeightsError naming all the missing ones (a file
    that is there but wrong raises its own error)."""
    paths, missing = [], []
    for spec in specs:
        try:
            paths.append(resolve(spec, weights_dir, offline))
        except WeightsError:
            if find_local(spec, weights_dir) is not None:
                raise
            missing.append(spec)
    if missing:
        raise WeightsError(missing_message(missing, weights_dir))
    return paths


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file (cached by path, size and mtime)."""
    stat = os.stat(path)
    cache_key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[cache_key] = digest.hexdigest()
    return _HASH_CACHE[cache_key]


def verify(spec: WeightsFile, path: str | os.PathLike) -> str:
    """Return the file's sha256; raise WeightsError if it differs from the published one."""
    actual = sha256_file(path)
    if spec.sha256 and actual != spec.sha256.lower():
        raise WeightsError(
            f"{spec.filename} at {path} has sha256 {actual[:12]}..., "
            f"expected {spec.sha256[:12]}... (corrupt or a different file)"
        )
    return actual


def identity(spec: WeightsFile, path: str | os.PathLike) -> dict[str, Any]:
    """Manifest entry for a loaded file: name, source, sha256 of the file actually used."""
    return {"file": spec.filename, "repo_id": spec.repo_id, "sha256": sha256_file(path)}


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint as a flat state dict: safetensors preferred, ``.pth`` with weights_only."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report as one line
        raise WeightsError(f"cannot read {path.name}: {type(err).__name__}: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path.name} does not hold a state dict")
    return state


def load_into(module: Any, state: dict[str, Any], filename: str, strip_prefix: str = "") -> None:
    """Load ``state`` strictly into ``module``; name missing/unexpected keys and bad shapes in one line."""
    if strip_prefix:
        state = {k.removeprefix(strip_prefix): v for k, v in state.items()}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        raise WeightsError(f"{filename} does not match the network: {'; '.join(parts)}")
    bad = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise WeightsError(f"{filename} has wrong shapes: {'; '.join(bad[:3])}")
    module.load_state_dict(state, strict=True)


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when available, else ``cpu``; check an explicit ``cuda``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WeightsError("device 'cuda' requested but no CUDA GPU is available")
    return device


# -- transformers models: a folder (config + weights + image processor config) ------------

#: the files a transformers model folder needs (weights: safetensors preferred, .bin accepted)
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
PROCESSOR_CONFIG = "preprocessor_config.json"
#: what a missing model is reported as needing
MODEL_FILES = (MODEL_CONFIG, MODEL_WEIGHTS[0], PROCESSOR_CONFIG)


def model_files(extra: tuple[str, ...] = (),
                processor: tuple[str, ...] = (PROCESSOR_CONFIG,)) -> list[str]:  # fmt: skip
    """The files a model folder needs, as error lines and ``hintset weights`` name them."""
    return [MODEL_CONFIG, MODEL_WEIGHTS[0], " or ".join(processor), *extra]


def folder_files(spec: Any, extra: tuple[str, ...] = (),
                 processor: tuple[str, ...] = (PROCESSOR_CONFIG,)) -> list[str]:  # fmt: skip
    """The files a published model folder needs (``spec``: a ``models`` entry with ``repo_id``):
    a diffusers pipeline's own ``files``, else a transformers folder's plus the spec's ``extra``."""
    own = tuple(getattr(spec, "files", ()))
    return list(own) if own else model_files((*extra, *getattr(spec, "extra", ())), processor)


def find_folder(spec: Any, weights_dir: str | os.PathLike | None = None,
                extra: tuple[str, ...] = (),
                processor: tuple[str, ...] = (PROCESSOR_CONFIG,)) -> tuple[Path, Path]:  # fmt: skip
    """(folder, main weights file) of a published model, found without downloading; raise
    WeightsError (one line) when it is not here or incomplete."""
    if getattr(spec, "files", ()):  # a diffusers pipeline folder (Marigold's)
        from annotators.marigold import IDENTITY_FILES, resolve_pipeline

        folder = resolve_pipeline(spec.repo_id, str(weights_dir or ""), offline=True)
        return folder, folder / IDENTITY_FILES[0]
    extra = (*extra, *getattr(spec, "extra", ()))
    folder = resolve_model_dir(
        spec.repo_id, weights_dir, offline=True, extra=extra, processor=processor
    )
    return folder, model_weights_file(folder)  # type: ignore[return-value] - complete folder


def model_weights_file(folder: str | os.PathLike) -> Path | None:
    """The weights file of a model folder: ``model.safetensors`` if there, else ``pytorch_model.bin``."""
    for name in MODEL_WEIGHTS:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def model_folder_missing(
    folder: str | os.PathLike,
    extra: tuple[str, ...] = (),
    processor: tuple[str, ...] = (PROCESSOR_CONFIG,),
) -> list[str]:
    """Names of the files a model folder lacks (empty when it is complete); ``extra``: more
    files the model needs (e.g. ``tokenizer_config.json`` for captioning models); one of
    ``processor`` must be there (transformers 5 saves ``processor_config.json`` instead)."""
    folder = Path(folder)
    missing = [n for n in (MODEL_CONFIG, *extra) if not (folder / n).is_file()]
    if not any((folder / n).is_file() for n in processor):
        missing.insert(1, " or ".join(processor))
    if model_weights_file(folder) is None:
        missing.insert(1, MODEL_WEIGHTS[0])
    return missing


def model_local_dirs(model: str, weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders that may hold ``model`` (a hub id such as ``Intel/dpt-hybrid-midas``), in order."""
    if Path(model).is_dir():
        return [Path(model)]
    name = model.rstrip("/").split("/")[-1]
    candidates = []
    for folder in weights_dirs(weights_dir):
        candidates += [folder / model, folder / name, folder / model.replace("/", "--")]
    return list(dict.fromkeys(candidates))


def _hf_snapshot(
    model: str,
    local_only: bool,
    extra: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    processor: tuple[str, ...] = (PROCESSOR_CONFIG,),
) -> Path | None:
    """The model folder from the Hugging Face cache (or, if allowed, the hub); None if unavailable."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    patterns = [MODEL_CONFIG, *processor, *extra, *optional]
    for weights in MODEL_WEIGHTS:  # safetensors first; .bin only for repos without it
        try:
            path = Path(
                snapshot_download(
                    model, allow_patterns=[*patterns, weights], local_files_only=local_only
                )
            )
        except Exception:  # noqa: BLE001 - not cached / no network / no such repo
            return None
        if not model_folder_missing(path, extra, processor):
            return path
    return None


def model_missing_message(
    model: str,
    weights_dir: str | os.PathLike | None = None,
    missing: list[str] | None = None,
    folder: Path | None = None,
) -> str:
    """One line naming the model, the files it needs and where to put them."""
    files = ", ".join(missing or MODEL_FILES)
    if Path(model).is_dir() or folder is not None:
        where = folder or Path(model)
        return f"model folder {where} for {model} is incomplete: missing {files}"
    if weights_dir or os.environ.get(ENV_DIR):
        where = f"{weights_dir or os.environ[ENV_DIR]}/{model}/"
    else:
        where = f"DIR/{model}/ (DIR given by --weights-dir or ${ENV_DIR})"
    return (
        f"missing model {model}: needs {files} (from https://huggingface.co/{model}); "
        f"put them in {where} or the Hugging Face cache"
    )


def resolve_model_dir(
    model: str,
    weights_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    extra: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    processor: tuple[str, ...] = (PROCESSOR_CONFIG,),
) -> Path:
    """Folder holding a complete transformers model; raise WeightsError with one clear line.

    ``model`` is a local folder or a hub id. A hub id is looked up as a folder named after it
    inside ``weights_dir`` / ``$HINTSET_WEIGHTS_DIR`` (``DIR/owner/name`` or ``DIR/name``), then
    in the Hugging Face cache, then (only when not offline) downloaded from the hub. ``extra``
    names files the folder must hold beside config, weights and one of ``processor``;
    ``optional`` are further file patterns fetched with them when the repo has them.
    """
    incomplete: tuple[Path, list[str]] | None = None
    for folder in model_local_dirs(model, weights_dir):
        if folder.is_dir():
            missing = model_folder_missing(folder, extra, processor)
            if not missing:
                return folder
            incomplete = incomplete or (folder, missing)
    if Path(model).is_dir():
        raise WeightsError(
            model_missing_message(model, missing=incomplete[1], folder=incomplete[0])
        )
    if Path(model).is_absolute() or model.startswith((".", "~")) or model.count("/") != 1:
        raise WeightsError(
            f"model {model!r} is neither an existing folder nor a hub id (owner/name)"
        )
    for local_only in (True, False) if use_hub(offline) else (True,):
        found = _hf_snapshot(model, local_only, extra, optional, processor)
        if found is not None:
            return found
    if incomplete is not None:
        raise WeightsError(
            model_missing_message(model, missing=incomplete[1], folder=incomplete[0])
        )
    raise WeightsError(
        model_missing_message(model, weights_dir, missing=model_files(extra, processor))
    )


def model_identity(
    model: str, folder: str | os.PathLike, expected_sha256: str = ""
) -> dict[str, Any]:
    """Manifest entry for a loaded model: id, weights file and its sha256 (checked if expected)."""
    path = model_weights_file(folder)
    if path is None:
        raise WeightsError(
            model_missing_message(model, missing=[MODEL_WEIGHTS[0]], folder=Path(folder))
        )
    actual = sha256_file(path)
    if expected_sha256 and actual != expected_sha256.lower():
        raise WeightsError(
            f"{model}: {path.name} at {path} has sha256 {actual[:12]}..., "
            f"expected {expected_sha256[:12]}... (corrupt or a different file)"
        )
    return {"model": model, "file": path.name, "path": str(path), "sha256": actual}


def strip_module(state: dict[str, Any]) -> dict[str, Any]:
    """Keys without the ``module.`` prefix that DataParallel training leaves in published files."""
    return {key.removeprefix("module."): value for key, value in state.items()}
