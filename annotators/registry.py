"""The annotator registry: ``register`` a class, ``create(name, **params)``, ``list_annotators()``."""

from __future__ import annotations

from typing import Any

from annotators.base import Annotator

_REGISTRY: dict[str, type[Annotator]] = {}


def register(cls: type[Annotator]) -> type[Annotator]:
    """Class decorator: make an annotator family available under ``cls.name``."""
    if not cls.name or not cls.outputs:
        raise TypeError(f"{cls.__name__} needs a name and at least one output")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"annotator {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Annotator]:
    """The annotator class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown annotator {name!r}; available: {', '.join(list_annotators())}"
        ) from None


def create(name: str, **params: Any) -> Annotator:
    """Instantiate the annotator ``name`` with ``params`` (defaults for the rest)."""
    return get(name)(**params)


def list_annotators() -> list[str]:
    """Names of all registered annotators, sorted."""
    return sorted(_REGISTRY)
