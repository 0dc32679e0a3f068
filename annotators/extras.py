"""Optional packages (the pip extras of hintset) and one check that names the extra to install.

Annotators list the modules a configuration imports as ``(module, extra)`` pairs, e.g.
``("torch", "models")``; the CLI checks them once, before any work, instead of every image
failing with ``ModuleNotFoundError``. Standard library only.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

#: the modules PyTorch-based learned annotators import
TORCH = (("torch", "models"),)
#: the modules transformers-based models (depth, seg, captioning) import
TRANSFORMERS = (("torch", "models"), ("transformers", "models"))


class MissingExtra(RuntimeError):
    """A package an optional feature needs is not installed (one-line message naming the extra)."""


def installed(module: str) -> bool:
    """True when ``module`` can be imported here (found on the path; not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a blocked import
        return False


def check_extras(what: str, requires: Iterable[tuple[str, str]]) -> None:
    """Raise MissingExtra when a module of ``requires`` ((module, extra) pairs) is missing:
    ``pose backend=mediapipe needs mediapipe (not installed): pip install 'hintset[pose]'``."""
    gone = [(module, extra) for module, extra in dict.fromkeys(requires) if not installed(module)]
    if gone:
        modules = ", ".join(module for module, _ in gone)
        extras = ",".join(sorted({extra for _, extra in gone}))
        raise MissingExtra(
            f"{what} needs {modules} (not installed): pip install 'hintset[{extras}]'"
        )
