"""Condition-following scores: how well a generated image's edges match the condition edges."""

from __future__ import annotations

import cv2
import numpy as np


def _distance_to(edges: np.ndarray) -> np.ndarray:
    """Per-pixel distance (px) to the nearest edge pixel of a boolean map (inf when none)."""
    if not edges.any():
        return np.full(edges.shape, np.inf, dtype=np.float32)
    return cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3)


def edge_f1(reference: np.ndarray, predicted: np.ndarray, tolerance: float = 2.0) -> dict:
    """Precision, recall and F1 of ``predicted`` edges against ``reference`` edges.

    Both are HxW maps (non-zero = edge). An edge pixel counts as matched when the other map
    has an edge within ``tolerance`` pixels, the usual boundary-F1 with a distance slack.
    """
    ref, pred = np.asarray(reference) > 0, np.asarray(predicted) > 0
    if ref.shape != pred.shape:
        raise ValueError(f"edge maps differ in size: {ref.shape} vs {pred.shape}")
    precision = float((_distance_to(ref)[pred] <= tolerance).mean()) if pred.any() else 0.0
    recall = float((_distance_to(pred)[ref] <= tolerance).mean()) if ref.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
