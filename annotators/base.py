"""The annotator contract: one RGB image in, condition map(s) of the same size out.

Every annotator family subclasses :class:`Annotator`, declares its parameters as
plain data (:class:`Param`) and implements :meth:`Annotator._annotate` (or
:meth:`Annotator._annotate_batch` for models that batch). Heavy libraries
(torch, mediapipe, transformers) are imported inside methods, never at module
import, so ``import annotators`` stays light.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


class AnnotatorError(RuntimeError):
    """An annotator could not run on an input (bad parameters, model failure)."""


@dataclass(frozen=True)
class Param:
    """One annotator parameter: its name, default, type, a one-line help and allowed values.

    Numbers must lie in [``minimum``, ``maximum``]; ``minimum`` defaults to 0 for numeric
    parameters (no annotator parameter here means anything when negative).
    """

    name: str
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = 0
    maximum: float | None = None

    def coerce(self, value: Any) -> Any:
        """Convert ``value`` (possibly a CLI string) to the default's type and validate it."""
        kind = type(self.default)
        if isinstance(value, str) and kind is not str and self.default is not None:
            text = value.strip()
            if kind is bool:
                lowered = text.lower()
                if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError(f"{self.name}: expected a boolean, got {value!r}")
                value = lowered in {"1", "true", "yes", "on"}
            elif kind is tuple:
                value = tuple(float(part) for part in text.strip("()[]").split(","))
            else:
                try:
                    value = kind(text)
                except ValueError:
                    raise ValueError(
                        f"{self.name}: expected {kind.__name__}, got {value!r}"
                    ) from None
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name}: {value!r} is not one of {list(self.choices)}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            low = -math.inf if self.minimum is None else self.minimum
            high = math.inf if self.maximum is None else self.maximum
            if not low <= value <= high:  # also rejects nan
                raise ValueError(f"{self.name}: {value!r} is outside {_range_text(low, high)}")
        return value


def _range_text(low: float, high: float) -> str:
    if high == math.inf:
        return f"the allowed range (>= {low:g})"
    return f"the allowed range [{low:g}, {high:g}]"


@dataclass
class Annotation:
    """What an annotator returns for one image.

    ``maps``: suffix -> array written as ``{key}.{suffix}.png`` (HxW uint8/uint16 or HxWx3 uint8).
    ``data``: suffix -> JSON-able object written as ``{key}.{suffix}.json`` (e.g. pose keypoints).
    ``stats``: small numbers for the dataset index (edge density, people found, ...).
    """

    maps: dict[str, np.ndarray]
    data: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


def check_image(rgb: Any) -> np.ndarray:
    """Validate the contract's input (HxWx3 uint8); raise a one-line ValueError otherwise."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {rgb.dtype}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"empty image of shape {rgb.shape}")
    return rgb


def stable_seed(*parts: Any) -> int:
    """A seed derived from values (e.g. base seed and sample key), stable across processes."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


class Annotator:
    """Base class: name, version, params with defaults, weights identity, batch entry point.

    Subclasses set the class attributes and implement ``_annotate`` (one image) or
    ``_annotate_batch`` (a list, for learned models). ``key`` identifies the sample
    so random parameters (with ``seed``) are reproducible regardless of order.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    #: Suffixes of the maps this annotator writes, primary map first.
    outputs: ClassVar[tuple[str, ...]] = ()
    #: Suffixes of JSON side files (e.g. ``("pose",)``).
    data_outputs: ClassVar[tuple[str, ...]] = ()
    #: Names of the per-sample stats it can emit (``Annotation.stats``): what ``--filter`` may
    #: name. An instance may narrow it in ``_validate`` to what its parameters compute.
    stats: tuple[str, ...] = ()
    params: ClassVar[tuple[Param, ...]] = ()
    description: ClassVar[str] = ""
    #: Whether ``cuda`` helps; the pipeline asks Ray for GPUs only for these.
    wants_gpu: ClassVar[bool] = False
    #: The implementation whose maps this one equals (``benchmarks/reference_check.py``).
    reference: ClassVar[str] = ""
    #: Plain OpenCV/numpy code with no runtime of its own (no torch, ONNX, mediapipe threads):
    #: a local worker may be forked from a process that imported it (see pipeline.local_pool).
    fork_safe: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {unknown}; known: {sorted(known)}")
        try:
            self.config: dict[str, Any] = {
                name: spec.coerce(params[name]) if name in params else spec.default
                for name, spec in known.items()
            }
        except ValueError as err:  # "min_length: ..." -> "lines.min_length: ..."
            raise ValueError(f"{self.name}.{err}") from None
        self._validate()

    # -- to override -------------------------------------------------------
    def _validate(self) -> None:
        """Check parameter combinations; raise ValueError with a clear message."""

    def _annotate(self, rgb: np.ndarray, rng: np.random.Generator) -> Annotation:
        raise NotImplementedError

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        return [self._annotate(img, rng) for img, rng in zip(images, rngs, strict=True)]

    @classmethod
    def weights_files(cls) -> list[Any]:
        """Files (``annotators.weights.WeightsFile``) this annotator needs; empty for classical ones."""
        return []

    @classmethod
    def weights_by_backend(cls) -> dict[str, list[Any]]:
        """Weights each backend needs, default backend first (one key ``""`` without backends)."""
        return {"": cls.weights_files()}

    @classmethod
    def model_folders(cls) -> dict[str, Any]:
        """Published model folders (short name -> spec with ``repo_id``) a backend loads whole
        (transformers / diffusers); their files are listed per folder, not per file."""
        return {}

    def weights_identity(self) -> list[dict[str, Any]]:
        """Name and sha256 of the weights actually loaded (for the manifest); empty if none."""
        return []

    @classmethod
    def catalogue(cls) -> dict[str, dict[str, Any]]:
        """Per backend (default first): weights file names, hub repos, licence and reference,
        as ``hintset annotators --json`` lists them."""
        from annotators.weights import describe_files

        return {b: describe_files(f, cls.reference) for b, f in cls.weights_by_backend().items()}

    def backend(self) -> str:
        """The ``catalogue()`` key this configuration uses (its ``backend`` param, else the first)."""
        entries = self.catalogue()
        chosen = self.config.get("backend")
        return chosen if chosen in entries else next(iter(entries))

    def licence(self) -> str:
        """Licence of the weights this configuration loads (recorded in the manifest)."""
        return self.catalogue()[self.backend()]["licence"]

    def requirements(self) -> tuple[tuple[str, str], ...]:
        """(module, pip extra) pairs this configuration imports, e.g. ``(("torch", "models"),)``."""
        return ()

    def describe(self) -> str:
        """How errors name this configuration: ``pose`` or ``pose backend=dwpose``."""
        backend = self.config.get("backend")
        return f"{self.name} backend={backend}" if backend else self.name

    def check_ready(self) -> None:
        """Raise MissingExtra (package) or WeightsError (files) now, in one line, if this
        configuration cannot run here; loads nothing. Run once before any work."""
        from annotators.extras import check_extras

        check_extras(self.describe(), self.requirements())

    # -- public API --------------------------------------------------------
    def load(self) -> None:
        """Load models now (learned annotators); raise WeightsError naming missing files.

        Called once per worker before any image; a no-op for classical annotators.
        """

    @classmethod
    def needs_weights(cls) -> bool:
        """True for learned annotators that load a checkpoint."""
        return bool(cls.weights_files())

    def rng(self, key: str = "") -> np.random.Generator:
        """Random generator for one sample: depends on the ``seed`` param (if any) and ``key``."""
        return np.random.default_rng(stable_seed(self.name, self.config.get("seed", 0), key))

    def annotate(self, rgb: np.ndarray, *, key: str = "") -> Annotation:
        """Annotate one image; all maps have the image's height and width."""
        return self.annotate_batch([rgb], keys=[key])[0]

    def annotate_batch(
        self, images: list[np.ndarray], *, keys: list[str] | None = None
    ) -> list[Annotation]:
        """Annotate a list of images (learned models run them as one batch)."""
        images = [check_image(img) for img in images]
        keys = keys if keys is not None else [""] * len(images)
        results = self._annotate_batch(images, [self.rng(k) for k in keys])
        for img, result in zip(images, results, strict=True):
            for suffix, arr in result.maps.items():
                if arr.shape[:2] != img.shape[:2]:
                    raise AnnotatorError(
                        f"{self.name}: map {suffix!r} has size {arr.shape[:2]}, "
                        f"image has {img.shape[:2]} (maps must be pixel-aligned)"
                    )
        return results

    def __call__(self, rgb: np.ndarray, *, key: str = "") -> np.ndarray:
        """Return the primary condition map for one image."""
        return self.annotate(rgb, key=key).maps[self.outputs[0]]

    def info(self) -> dict[str, Any]:
        """Plain-data description for manifests and reports."""
        return {
            "name": self.name,
            "version": self.version,
            "params": dict(self.config),
            "outputs": list(self.outputs),
            "data_outputs": list(self.data_outputs),
            "stats": list(self.stats),
            "weights": self.weights_identity(),
            "licence": self.licence(),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"


def edge_density(edge_map: np.ndarray) -> float:
    """Fraction of non-zero pixels of a map: a cheap per-sample statistic."""
    return float(np.count_nonzero(edge_map)) / float(edge_map.size)
