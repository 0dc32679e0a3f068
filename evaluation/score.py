"""Controllability metrics: a condition map vs the map re-annotated from a generated image.

One function per kind of map; ``KINDS`` says which kind each annotator's map is. Every
function takes the reference and the re-annotated maps (suffix -> array) and side data
(suffix -> JSON) and returns plain floats, so the same numbers come out of any caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: annotator name -> kind of map (its metrics below)
KINDS: dict[str, str] = {
    "canny": "binary", "lines": "binary", "scribble": "binary",
    "hed": "soft", "softedge": "soft", "lineart": "soft", "lineart_anime": "soft",
    "depth": "depth", "normal": "normal", "seg": "seg", "pose": "pose",
}  # fmt: skip

#: per kind: metric names, and whether higher is better (for best/worst samples)
METRICS: dict[str, dict[str, bool]] = {
    "binary": {"f1": True, "f1_2px": True},
    "soft": {"ssim": True, "f1": True},
    "depth": {"rmse": False, "absrel": False},
    "normal": {"angular_error": False},
    "seg": {"miou": True, "pixel_accuracy": True},
    "pose": {"ap": True, "oks": True},
}


def kind_of(condition: str) -> str:
    """The kind of map ``condition`` is; ValueError naming the scorable ones otherwise."""
    if condition not in KINDS:
        raise ValueError(f"no controllability metric for {condition!r}; "
                         f"scorable: {', '.join(sorted(KINDS))}")  # fmt: skip
    return KINDS[condition]


def gray(a: np.ndarray) -> np.ndarray:
    """A map as HxW float64 on 0..255 (16-bit maps scaled down, RGB averaged)."""
    a = np.asarray(a)
    scale = 257.0 if a.dtype == np.uint16 else 1.0
    a = a.astype(np.float64) / scale
    return a.mean(axis=-1) if a.ndim == 3 else a


def pixel_f1(reference: np.ndarray, predicted: np.ndarray, threshold: float = 127.5) -> float:
    """ControlNet++'s F1: both maps binarised (edge = value above ``threshold``), pixels compared
    one to one: 2TP / (2TP + FP + FN), 0 when neither map has an edge (torchmetrics'
    BinaryF1Score, zero_division 0)."""
    ref, pred = gray(reference) > threshold, gray(predicted) > threshold
    tp = np.count_nonzero(ref & pred)
    wrong = np.count_nonzero(ref ^ pred)
    return float(2 * tp / (2 * tp + wrong)) if tp or wrong else 0.0


def _distance_to(edges: np.ndarray) -> np.ndarray:
    """Per-pixel distance (px) to the nearest edge pixel of a boolean map (inf when none)."""
    import cv2

    if not edges.any():
        return np.full(edges.shape, np.inf, dtype=np.float32)
    return cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3)


def edge_f1(reference: np.ndarray, predicted: np.ndarray, tolerance: float = 2.0) -> dict:
    """Boundary precision, recall and F1 with a distance slack: an edge pixel counts as
    matched when the other map has an edge within ``tolerance`` px (non-zero = edge)."""
    ref, pred = np.asarray(reference) > 0, np.asarray(predicted) > 0
    if ref.ndim == 3:
        ref, pred = ref.any(-1), pred.any(-1)
    if ref.shape != pred.shape:
        raise ValueError(f"edge maps differ in size: {ref.shape} vs {pred.shape}")
    precision = float((_distance_to(ref)[pred] <= tolerance).mean()) if pred.any() else 0.0
    recall = float((_distance_to(pred)[ref] <= tolerance).mean()) if ref.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def ssim(reference: np.ndarray, predicted: np.ndarray) -> float:
    """scikit-image's structural similarity of two grey maps (0..255, 7x7 window)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(gray(reference), gray(predicted), data_range=255.0))


def depth_errors(reference: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE of the two maps on 0..255 (ControlNet++'s per-image RMSE) and AbsRel, the mean of
    |pred - ref| / ref over pixels where the reference is not 0 (0 = farthest)."""
    ref, pred = gray(reference), gray(predicted)
    rmse = float(np.sqrt(np.mean((pred - ref) ** 2)))
    valid = ref > 0
    absrel = float(np.mean(np.abs(pred - ref)[valid] / ref[valid])) if valid.any() else 0.0
    return {"rmse": rmse, "absrel": absrel}


def angular_error(reference: np.ndarray, predicted: np.ndarray) -> float:
    """Mean angle (degrees) between the normals of two RGB normal maps (v / 127.5 - 1 each,
    whatever the channel convention, as long as both maps share it)."""

    def unit(a: np.ndarray) -> np.ndarray:
        v = np.asarray(a, np.float64)[..., :3] / 127.5 - 1.0
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)

    cos = np.clip(np.sum(unit(reference) * unit(predicted), axis=-1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def seg_scores(reference: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """mIoU over the classes present in either label map (class indices, one per pixel) and
    pixel accuracy."""
    ref, pred = np.asarray(reference).ravel(), np.asarray(predicted).ravel()
    classes = np.union1d(np.unique(ref), np.unique(pred))
    ious = [np.count_nonzero((ref == c) & (pred == c)) / np.count_nonzero((ref == c) | (pred == c))
            for c in classes]  # fmt: skip
    return {"miou": float(np.mean(ious)), "pixel_accuracy": float(np.mean(ref == pred))}


#: COCO's per-keypoint OKS constants in OpenPose's 18-point order; the neck (not in COCO)
#: takes the shoulders' 0.079
OKS_SIGMAS = np.array([0.026, 0.079, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087,
                       0.089, 0.107, 0.087, 0.089, 0.025, 0.025, 0.035, 0.035])  # fmt: skip
OKS_THRESHOLDS = np.arange(0.5, 0.951, 0.05)


def _people(pose: dict[str, Any] | None) -> list[np.ndarray]:
    """18x3 (x, y, confidence) body keypoints per person of an OpenPose JSON."""
    out = []
    for person in (pose or {}).get("people", []):
        points = np.asarray(person.get("pose_keypoints_2d", []), np.float64).reshape(-1, 3)[:18]
        if len(points) == 18 and (points[:, 2] > 0).any():
            out.append(points)
    return out


def oks(reference: np.ndarray, predicted: np.ndarray) -> float:
    """COCO's object keypoint similarity of two people (18x3 arrays), over the reference's
    visible points; the object's area is its keypoints' bounding box (no masks here)."""
    visible = reference[:, 2] > 0
    if not visible.any():
        return 0.0
    xy = reference[visible, :2]
    area = max(float(np.prod(xy.max(0) - xy.min(0))), 1.0)
    found = predicted[:, 2] > 0
    d2 = np.sum((reference[:, :2] - predicted[:, :2]) ** 2, axis=1)
    sim = np.exp(-d2 / (2 * area * (2 * OKS_SIGMAS) ** 2)) * found
    return float(sim[visible].mean())


def pose_scores(reference: dict[str, Any] | None, predicted: dict[str, Any] | None) -> dict:
    """Keypoint AP of one image: people found in the generated image (ranked by mean
    confidence) matched greedily to the reference's by OKS, AP averaged over OKS thresholds
    0.50:0.05:0.95 (COCO's); ``oks``: the mean best OKS per reference person. Empty (not
    scored) when the reference has nobody."""
    refs, preds = _people(reference), _people(predicted)
    if not refs:
        return {}
    preds.sort(key=lambda p: -p[p[:, 2] > 0, 2].mean())
    table = np.array([[oks(r, p) for p in preds] for r in refs]).reshape(len(refs), len(preds))
    aps = []
    for t in OKS_THRESHOLDS:
        taken, hits = set(), []
        for j in range(len(preds)):
            free = [(table[i, j], i) for i in range(len(refs)) if i not in taken]
            best = max(free, default=(0.0, -1))
            hit = best[0] >= t
            if hit:
                taken.add(best[1])
            hits.append(hit)
        aps.append(_average_precision(np.array(hits, bool), len(refs)))
    best_oks = table.max(axis=1) if preds else np.zeros(len(refs))
    return {"ap": float(np.mean(aps)), "oks": float(best_oks.mean())}


def _average_precision(hits: np.ndarray, positives: int) -> float:
    """Area under the interpolated precision-recall curve of ranked detections (101 points,
    as COCO)."""
    if not len(hits):
        return 0.0
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / positives
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx]))


def _binary(ref: dict, pred: dict, name: str) -> dict[str, float]:
    return {"f1": pixel_f1(ref[name], pred[name]), "f1_2px": edge_f1(ref[name], pred[name])["f1"]}


def _soft(ref: dict, pred: dict, name: str) -> dict[str, float]:
    return {"ssim": ssim(ref[name], pred[name]), "f1": pixel_f1(ref[name], pred[name])}


SCORERS: dict[str, Callable[[dict, dict, str], dict[str, float]]] = {
    "binary": _binary,
    "soft": _soft,
    "depth": lambda ref, pred, name: depth_errors(ref[name], pred[name]),
    "normal": lambda ref, pred, name: {"angular_error": angular_error(ref[name], pred[name])},
    "seg": lambda ref, pred, name: seg_scores(ref["seglabel"], pred["seglabel"]),
    "pose": lambda ref, pred, name: pose_scores(ref.get("pose.json"), pred.get("pose.json")),
}


def score(condition: str, reference: dict[str, Any], predicted: dict[str, Any]) -> dict[str, float]:
    """The metrics of one generated image: ``reference`` and ``predicted`` map each output
    suffix (``canny``, ``seglabel``) to its array and each side file (``pose.json``) to its
    JSON object."""
    return SCORERS[kind_of(condition)](reference, predicted, condition)
