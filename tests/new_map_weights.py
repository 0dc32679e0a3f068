"""Random checkpoints in the published layouts of lineart, lineart_anime and softedge (tests and benchmarks).

Same file names, key names, shapes and containers as lllyasviel/Annotators publishes them:
``sk_model.pth`` / ``sk_model2.pth`` plain state dicts, ``netG.pth`` with DataParallel's
``module.`` prefix, ``table5_pidinet.pth`` as ``{"state_dict": {"module.<key>": ...}}``.
"""

from __future__ import annotations

from pathlib import Path

from annotators.inference import random_state, write_state
from annotators.lineart import LINEART_COARSE_WEIGHTS, LINEART_WEIGHTS, build_lineart
from annotators.lineart_anime import ANIME_WEIGHTS, build_anime
from annotators.softedge import PIDINET_WEIGHTS, build_pidinet


def write_lineart(folder: Path) -> list[Path]:
    """``sk_model.pth`` and ``sk_model2.pth`` (different random weights)."""
    paths = []
    for seed, spec in enumerate((LINEART_WEIGHTS, LINEART_COARSE_WEIGHTS)):
        path = Path(folder) / spec.filename
        write_state(path, random_state(build_lineart, seed=seed))
        paths.append(path)
    return paths


def write_anime(folder: Path) -> list[Path]:
    """``netG.pth`` with ``module.``-prefixed keys (the loader strips them)."""
    path = Path(folder) / ANIME_WEIGHTS.filename
    write_state(path, {f"module.{k}": v for k, v in random_state(build_anime).items()})
    return [path]


def write_pidinet(folder: Path) -> list[Path]:
    """``table5_pidinet.pth``: the weights under ``state_dict``, keys prefixed ``module.``."""
    path = Path(folder) / PIDINET_WEIGHTS.filename
    state = {f"module.{k}": v for k, v in random_state(build_pidinet).items()}
    write_state(path, {"epoch": 0, "state_dict": state})
    return [path]


def write_new_map_weights(folder: Path) -> list[Path]:
    """All four files into ``folder``."""
    return write_lineart(folder) + write_anime(folder) + write_pidinet(folder)
