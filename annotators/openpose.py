"""OpenPose (CMU, as ControlNet ships it) around the networks: input scaling, peaks,
multi-person grouping with part affinity fields, hand boxes and hand keypoints.

Checkpoints ``body_pose_model.pth`` and ``hand_pose_model.pth`` from lllyasviel/Annotators
hold flat keys named after the Caffe layers; the networks are in :mod:`annotators.nets.openpose`.
Input is BGR scaled to [-0.5, 0.5) at a 368 px box, as in OpenPose.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from annotators.pose_draw import LIMB_SEQUENCE
from annotators.weights import WeightsFile

BODY_WEIGHTS = WeightsFile("body_pose_model.pth", size_hint="200 MB")
HAND_WEIGHTS = WeightsFile("hand_pose_model.pth", size_hint="147 MB")
BOX_SIZE, STRIDE, PAD_VALUE = 368, 8, 128
PEAK_THRESHOLD, PAF_THRESHOLD, PAF_SAMPLES = 0.1, 0.05, 10
#: most peaks kept per body part, as CMU OpenPose's NMS keeps (its POSE_MAX_PEOPLE, 127): a
#: heatmap full of peaks (noise, random weights) would otherwise make grouping quadratic in them
MAX_PEAKS = 127
#: PAF channel pairs (x, y) of each limb in LIMB_SEQUENCE
PAF_CHANNELS = ((12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3),
                (4, 5), (6, 7), (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33),
                (36, 37), (18, 19), (26, 27))  # fmt: skip


def smart_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width) as ControlNet 1.1's OpenPose does: area when the sides shrink
    on average, Lanczos-4 when they grow; maps with more than 3 channels one channel at a time."""
    height, width = size
    if image.ndim == 3 and image.shape[2] not in (1, 3):
        return np.stack([smart_resize(image[:, :, c], size) for c in range(image.shape[2])], 2)
    grow = (height + width) / (image.shape[0] + image.shape[1])
    method = cv2.INTER_AREA if grow < 1 else cv2.INTER_LANCZOS4
    return cv2.resize(image, (width, height), interpolation=method)


def network_input(
    rgb: np.ndarray, scale: float | tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """BGR image resized (by ``scale``, sides truncated as the reference, or to a (h, w) size),
    padded (value 128) at the bottom/right to a multiple of 8, in [-0.5, 0.5)."""
    if isinstance(scale, tuple):
        size = scale
    else:
        size = (int(rgb.shape[0] * scale), int(rgb.shape[1] * scale))
    bgr = smart_resize(np.ascontiguousarray(rgb[:, :, ::-1]), size)
    h, w = bgr.shape[:2]
    hp, wp = -(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE
    padded = np.full((hp, wp, 3), PAD_VALUE, np.uint8)
    padded[:h, :w] = bgr
    return np.ascontiguousarray(padded.transpose(2, 0, 1)).astype(np.float32) / 256 - 0.5, (h, w)


def to_image_size(maps: np.ndarray, valid: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """CxHxW network output -> HxWxC float64 at ``shape`` (upsample x8, crop padding, resize)."""
    up = maps.transpose(1, 2, 0)
    up = smart_resize(up, (up.shape[0] * STRIDE, up.shape[1] * STRIDE))
    up = smart_resize(up[: valid[0], : valid[1]], shape)
    return up.astype(np.float64)


def find_peaks(heatmap: np.ndarray, threshold: float,
               max_peaks: int = MAX_PEAKS) -> list[tuple[int, int, float]]:  # fmt: skip
    """Local maxima (x, y, score) above ``threshold`` of the heatmap smoothed with
    ``scipy.ndimage.gaussian_filter`` (sigma 3, reflected borders), as the reference; at most
    ``max_peaks``, the highest-scoring ones, in the reference's (row-major) order."""
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(heatmap.astype(np.float64), sigma=3)
    padded = np.pad(smooth, 1, constant_values=0.0)  # the reference shifts in zeros
    center = padded[1:-1, 1:-1]
    is_peak = ((center >= padded[:-2, 1:-1]) & (center >= padded[2:, 1:-1])
               & (center >= padded[1:-1, :-2]) & (center >= padded[1:-1, 2:]) & (center > threshold))  # fmt: skip
    ys, xs = np.nonzero(is_peak)
    if len(xs) > max_peaks:
        best = np.argsort(-heatmap[ys, xs], kind="stable")[:max_peaks]
        keep = np.sort(best)
        ys, xs = ys[keep], xs[keep]
    return [(int(x), int(y), float(heatmap[y, x])) for x, y in zip(xs, ys, strict=True)]


#: hand keypoints: the crop is run at these box sizes (x 368), heatmaps averaged at 128x128
HAND_SCALES = (0.5, 1.0, 1.5, 2.0)
HAND_MAP_SIZE = 128
HAND_BLUR = 0.8  # Gaussian pre-blur of the crop
HAND_THRESHOLD = 0.05


def hand_peaks(heatmaps: np.ndarray, crop_shape: tuple[int, int]) -> list[tuple | None]:
    """21 hand keypoints (x, y, score) in crop pixels from averaged 128x128x22 heatmaps, as
    ControlNet 1.1: per part, the largest (by heat) 8-connected blob where the sigma-3 smoothed
    map exceeds 0.05, its maximum, scaled and truncated to the crop; None when not found
    (including x = 0, which the reference treats as missing)."""
    from scipy.ndimage import gaussian_filter, label

    points: list[tuple | None] = []
    for part in range(21):
        heat = heatmaps[:, :, part].astype(np.float64)
        binary = gaussian_filter(heat, sigma=3) > HAND_THRESHOLD
        if not binary.any():
            points.append(None)
            continue
        labels, count = label(binary, structure=np.ones((3, 3), int))
        sums = [heat[labels == i].sum() for i in range(1, count + 1)]
        kept = np.where(labels == int(np.argmax(sums)) + 1, heat, 0.0)
        py, px = np.unravel_index(int(np.argmax(kept)), kept.shape)
        y = int(float(py) * float(crop_shape[0]) / float(HAND_MAP_SIZE))
        x = int(float(px) * float(crop_shape[1]) / float(HAND_MAP_SIZE))
        points.append((x, y, float(kept[py, px])) if x > 0 and y > 0 else None)
    return points


def limb_scores(paf: np.ndarray, starts: list[tuple], ends: list[tuple],
                image_height: int) -> np.ndarray:  # fmt: skip
    """Scores of every limb start -> end (len(starts) x len(ends)): the mean PAF alignment
    along the segment plus a distance prior; NaN where the limb is implausible (fewer than 80%
    of the samples above PAF_THRESHOLD, or a score <= 0). All pairs at once, as arrays."""
    a = np.asarray([p[:2] for p in starts], np.float64).reshape(-1, 1, 2)
    b = np.asarray([p[:2] for p in ends], np.float64).reshape(1, -1, 2)
    a, b = np.broadcast_arrays(a, b)
    vec = b - a
    norm = np.maximum(1e-3, np.hypot(vec[..., 0], vec[..., 1]))
    unit = vec / norm[..., None]
    xs = np.rint(np.linspace(a[..., 0], b[..., 0], PAF_SAMPLES, axis=-1)).astype(int)
    ys = np.rint(np.linspace(a[..., 1], b[..., 1], PAF_SAMPLES, axis=-1)).astype(int)
    along = paf[ys, xs, 0] * unit[..., :1] + paf[ys, xs, 1] * unit[..., 1:]
    score = mean_last(along) + np.minimum(0.5 * image_height / norm - 1, 0)
    plausible = (np.count_nonzero(along > PAF_THRESHOLD, axis=-1) > 0.8 * PAF_SAMPLES) & (score > 0)
    return np.where(plausible, score, np.nan)


def mean_last(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis, summed in the order numpy sums one short 1-D array (pairwise:
    eight running sums, then the rest), so each score equals the per-limb reference bit for bit."""
    n = values.shape[-1]
    if n < 8:
        total = np.zeros(values.shape[:-1])
        for i in range(n):
            total = total + values[..., i]
        return total / n
    sums = [values[..., j].copy() for j in range(8)]
    i = 8
    while i < n - n % 8:
        for j in range(8):
            sums[j] = sums[j] + values[..., i + j]
        i += 8
    total = ((sums[0] + sums[1]) + (sums[2] + sums[3])) + (
        (sums[4] + sums[5]) + (sums[6] + sums[7])
    )
    for k in range(i, n):
        total = total + values[..., k]
    return total / n


def group_people(peaks: list[list[tuple]], pafs: np.ndarray, image_height: int) -> list[dict]:
    """Assemble keypoint peaks into people with part affinity fields (greedy, as OpenPose does).

    Returns people as {"body": 18 keypoints (x, y, score) or None, "score": float}.
    """
    ids = [[(i, p) for i, p in enumerate(part)] for part in peaks]
    people: list[dict] = []  # each: {"parts": [peak index or -1]*18, "score": float, "count": int}
    for limb, (ka, kb) in enumerate(LIMB_SEQUENCE):
        a, b = ka - 1, kb - 1
        paf = pafs[:, :, list(PAF_CHANNELS[limb])]
        candidates = []
        if ids[a] and ids[b]:
            scores = limb_scores(paf, peaks[a], peaks[b], image_height)
            rows, cols = np.nonzero(~np.isnan(scores))  # row-major: the reference's loop order
            candidates = [
                (float(scores[i, j]), int(i), int(j)) for i, j in zip(rows, cols, strict=True)
            ]
        candidates.sort(key=lambda c: -c[0])
        used_a, used_b, connections = set(), set(), []
        for score, i, j in candidates:
            if i not in used_a and j not in used_b:
                connections.append((i, j, score))
                used_a.add(i)
                used_b.add(j)
                if len(connections) >= min(len(ids[a]), len(ids[b])):
                    break
        for i, j, score in connections:
            owners = [p for p in people if p["parts"][a] == i or p["parts"][b] == j]
            if len(owners) == 1 or (len(owners) == 2 and _overlap(*owners)):
                person = owners[0]
                if person["parts"][b] != j:
                    person["parts"][b] = j
                    person["count"] += 1
                    person["score"] += peaks[b][j][2] + score
            elif len(owners) == 2:  # two disjoint partial people: merge them
                first, second = owners
                first["parts"] = [
                    x if x >= 0 else y for x, y in zip(first["parts"], second["parts"], strict=True)
                ]
                first["count"] += second["count"]
                first["score"] += second["score"] + score
                people.remove(second)
            elif not owners and limb < 17:
                parts = [-1] * 18
                parts[a], parts[b] = i, j
                people.append({"parts": parts, "count": 2,
                               "score": peaks[a][i][2] + peaks[b][j][2] + score})  # fmt: skip
    result = []
    for person in people:
        if person["count"] < 4 or person["score"] / person["count"] < 0.4:
            continue
        body = [None if idx < 0 else tuple(float(v) for v in peaks[k][idx])
                for k, idx in enumerate(person["parts"])]  # fmt: skip
        result.append({"body": body, "score": person["score"]})
    return result


def _overlap(first: dict, second: dict) -> bool:
    """True when two partial people share a keypoint (then they are not merged)."""
    return any(x >= 0 and y >= 0 for x, y in zip(first["parts"], second["parts"], strict=True))


def hand_boxes(body: list, shape: tuple[int, int]) -> list[tuple[str, int, int, int]]:
    """Square hand boxes (side, x, y, width) from shoulder-elbow-wrist, as OpenPose's detector."""
    boxes = []
    for side, (s, e, w) in (("left", (5, 6, 7)), ("right", (2, 3, 4))):
        if body[s] is None or body[e] is None or body[w] is None:
            continue
        (x1, y1), (x2, y2), (x3, y3) = body[s][:2], body[e][:2], body[w][:2]
        x, y = x3 + 0.33 * (x3 - x2), y3 + 0.33 * (y3 - y2)
        width = 1.5 * max(math.hypot(x3 - x2, y3 - y2), 0.9 * math.hypot(x2 - x1, y2 - y1))
        x, y = x - width / 2, y - width / 2
        x, y = max(0.0, x), max(0.0, y)
        width = min(width, shape[1] - x, shape[0] - y)
        if width >= 20:
            boxes.append((side, int(x), int(y), int(width)))
    return boxes
