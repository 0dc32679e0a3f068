"""The judge: the dataset's own annotator (name, parameters, weights from its manifest) run on
generated images resized to the condition map's size."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipeline import layout


def read_manifest(data: str) -> dict[str, Any]:
    """The dataset's manifest.json (ValueError with one line when there is none)."""
    import fsspec

    path = data.rstrip("/") + "/" + layout.MANIFEST
    try:
        with fsspec.open(path, "rb") as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        raise ValueError(f"{data} holds no {layout.MANIFEST} (not a hintset build)") from None


def recorded(manifest: dict[str, Any], condition: str) -> tuple[dict[str, Any], list[dict]]:
    """(parameters, weights identity) the build recorded for the annotator ``condition``."""
    for spec in manifest.get("config", {}).get("annotators", []):
        if spec["name"] == condition:
            info = next((a for a in manifest.get("annotators", []) if a["name"] == condition), {})
            return dict(spec.get("params", {})), list(info.get("weights", []))
    names = [s["name"] for s in manifest.get("config", {}).get("annotators", [])]
    raise ValueError(f"the dataset has no {condition!r} maps; it has {', '.join(names) or 'none'}")


def fit(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` resized to (height, width) ``size``: area when shrinking, bicubic when growing."""
    import cv2

    if rgb.shape[:2] == tuple(size):
        return rgb
    shrink = rgb.shape[0] * rgb.shape[1] > size[0] * size[1]
    method = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return cv2.resize(rgb, (size[1], size[0]), interpolation=method)


class Judge:
    """Re-annotates generated images exactly as the dataset was annotated."""

    def __init__(self, manifest: dict[str, Any], condition: str) -> None:
        from annotators import create

        params, self.weights = recorded(manifest, condition)
        self.condition = condition
        self.annotator = create(condition, **params)
        self.annotator.load()
        self._check_weights()

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.annotator.outputs)

    @property
    def data_outputs(self) -> tuple[str, ...]:
        return tuple(self.annotator.data_outputs)

    def _check_weights(self) -> None:
        """The same weights must judge as annotated: a different file is refused in one line."""
        want = {w.get("file"): w.get("sha256") for w in self.weights}
        for got in self.annotator.weights_identity():
            expected = want.get(got.get("file"))
            if expected and expected != got.get("sha256"):
                raise ValueError(
                    f"{self.condition}: {got['file']} has sha256 {got['sha256'][:12]}..., the "
                    f"dataset was annotated with {expected[:12]}...; the same weights must judge"
                )

    def annotate(self, images: list[np.ndarray], keys: list[str],
                 size: list[tuple[int, int]]) -> list[dict[str, Any]]:  # fmt: skip
        """Maps (suffix -> array) and side data (``pose.json`` -> object) of each image, resized
        first to its condition's size; ``keys`` seed random parameters as the build did."""
        fitted = [fit(img, s) for img, s in zip(images, size, strict=True)]
        out = []
        for result in self.annotator.annotate_batch(fitted, keys=keys):
            maps: dict[str, Any] = dict(result.maps)
            maps.update({f"{k}.json": v for k, v in result.data.items()})
            out.append(maps)
        return out
