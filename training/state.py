"""Training state on disk without pickle: tensors in safetensors, everything else in JSON.

Loading a checkpoint therefore cannot run code (a pickled ``training_state.pt`` can).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

TENSORS = "training_state.safetensors"
PLAIN = "training_state.json"
#: the pickle format older runs wrote; refused, never unpickled
LEGACY = "training_state.pt"


def _encode(value: Any, tensors: dict) -> Any:
    """Nested dicts/lists/tuples of tensors, arrays and plain values -> JSON tree + tensors."""
    import torch

    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _encode(torch.from_numpy(value.copy()), tensors)}
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in the training state")


def _decode(node: Any, tensors: dict) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        return tensors[node["__tensor__"]]
    if "__ndarray__" in node:
        return _decode(node["__ndarray__"], tensors).numpy()
    if "__tuple__" in node:
        return tuple(_decode(v, tensors) for v in node["__tuple__"])
    if "__dict__" in node:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in node["__dict__"]}
    raise ValueError(f"unknown node in training state: {sorted(node)[:3]}")


def save_state(folder: Path, state: dict) -> None:
    """Write ``state`` as FOLDER/training_state.safetensors + FOLDER/training_state.json."""
    from safetensors.torch import save_file

    from pipeline.atomic import atomic_save, atomic_write

    folder = Path(folder)
    tensors: dict = {}
    tree = _encode(state, tensors)
    atomic_save(folder / TENSORS, lambda tmp: save_file(tensors, tmp))
    atomic_write(folder / PLAIN, json.dumps(tree).encode())


def load_state(folder: Path) -> dict:
    """Read what ``save_state`` wrote; a pickled legacy state is refused with a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / PLAIN).is_file():
        if (folder / LEGACY).exists():
            raise ValueError(
                f"{folder / LEGACY}: pickled training state refused (loading a pickle can run "
                f"code); resume needs {PLAIN} + {TENSORS}"
            )
        raise ValueError(f"{folder}: no {PLAIN} (not a hintset checkpoint)")
    try:
        tree = json.loads((folder / PLAIN).read_text())
        return _decode(tree, load_file(str(folder / TENSORS)))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        raise ValueError(f"{folder}: unreadable training state: {err}") from None
