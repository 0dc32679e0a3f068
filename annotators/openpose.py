"""The OpenPose body and hand networks (CMU, as ControlNet ships them) and multi-person grouping.

Checkpoints ``body_pose_model.pth`` and ``hand_pose_model.pth`` from lllyasviel/Annotators
hold flat keys named after the Caffe layers (``conv1_1.weight``, ``Mconv7_stage6_L2.bias``);
the networks here are built so their state-dict keys are exactly those names. Input is
BGR scaled to [-0.5, 0.5) at a 368 px box, as in OpenPose.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from annotators.inference import random_state, write_state
from annotators.pose_draw import LIMB_SEQUENCE
from annotators.weights import WeightsFile

BODY_WEIGHTS = WeightsFile("body_pose_model.pth", size_hint="200 MB")
HAND_WEIGHTS = WeightsFile("hand_pose_model.pth", size_hint="147 MB")
BOX_SIZE, STRIDE, PAD_VALUE = 368, 8, 128
PEAK_THRESHOLD, PAF_THRESHOLD, PAF_SAMPLES = 0.1, 0.05, 10
#: PAF channel pairs (x, y) of each limb in LIMB_SEQUENCE
PAF_CHANNELS = ((12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3),
                (4, 5), (6, 7), (8, 9), (10, 11), (28, 29), (30, 31), (34, 35), (32, 33),
                (36, 37), (18, 19), (26, 27))  # fmt: skip

# (name, in, out, kernel) of the shared VGG trunks; "pool" entries are 2x2 max pools
BODY_TRUNK = (("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), "pool", ("conv2_1", 64, 128, 3),
              ("conv2_2", 128, 128, 3), "pool", ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3),
              ("conv3_3", 256, 256, 3), ("conv3_4", 256, 256, 3), "pool", ("conv4_1", 256, 512, 3),
              ("conv4_2", 512, 512, 3), ("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, 128, 3))  # fmt: skip
HAND_TRUNK = BODY_TRUNK[:12] + (("conv4_3", 512, 512, 3), ("conv4_4", 512, 512, 3),
                                ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3),
                                ("conv5_3_CPM", 512, 128, 3))  # fmt: skip


def _stage(prefix: str, suffix: str, cin: int, cout: int) -> list[tuple[str, int, int, int]]:
    """A refinement stage: five 7x7 convs, then two 1x1 convs."""
    layers = [
        (f"Mconv{i}_stage{prefix}{suffix}", cin if i == 1 else 128, 128, 7) for i in range(1, 6)
    ]
    return layers + [(f"Mconv6_stage{prefix}{suffix}", 128, 128, 1),
                     (f"Mconv7_stage{prefix}{suffix}", 128, cout, 1)]  # fmt: skip


def body_layout() -> dict[str, list]:
    """Layer lists of the body net: trunk, stage-1 branches, stages 2-6 for PAFs (L1) and heatmaps (L2)."""
    layout = {"trunk": list(BODY_TRUNK)}
    for branch, cout in (("L1", 38), ("L2", 19)):
        layout[f"1_{branch}"] = [(f"conv5_{i}_CPM_{branch}", 128, 128, 3) for i in (1, 2, 3)] + [
            (f"conv5_4_CPM_{branch}", 128, 512, 1), (f"conv5_5_CPM_{branch}", 512, cout, 1)]  # fmt: skip
        for stage in range(2, 7):
            layout[f"{stage}_{branch}"] = _stage(str(stage), f"_{branch}", 185, cout)
    return layout


def hand_layout() -> dict[str, list]:
    """Layer lists of the hand net: trunk, stage 1, stages 2-6 (22 heatmaps)."""
    layout = {"trunk": list(HAND_TRUNK),
              "1": [("conv6_1_CPM", 128, 512, 1), ("conv6_2_CPM", 512, 22, 1)]}  # fmt: skip
    for stage in range(2, 7):
        layout[str(stage)] = _stage(str(stage), "", 150, 22)
    return layout


#: layers without a ReLU after them. As in the published code, Mconv7_stage6_L2 (the final
#: body heatmaps) does keep its ReLU: its no-ReLU list names Mconv7_stage6_L1 twice.
NO_RELU = {"conv5_5_CPM_L1", "conv5_5_CPM_L2", "conv6_2_CPM",
           *(f"Mconv7_stage{s}_L1" for s in range(2, 7)),
           *(f"Mconv7_stage{s}_L2" for s in range(2, 6)),
           *(f"Mconv7_stage{s}" for s in range(2, 7))}  # fmt: skip


def build_network(layout: dict[str, list]) -> Any:
    """A torch module with one attribute per Caffe layer (state-dict keys = published keys)."""
    import torch
    from torch import nn

    class OpenPoseNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layout = layout
            for layers in layout.values():
                for layer in layers:
                    if layer != "pool":
                        name, cin, cout, k = layer
                        self.add_module(name, nn.Conv2d(cin, cout, k, padding=k // 2))

        def run(self, layers: list, x: torch.Tensor) -> torch.Tensor:
            for layer in layers:
                if layer == "pool":
                    x = nn.functional.max_pool2d(x, 2, 2)
                    continue
                x = getattr(self, layer[0])(x)
                if layer[0] not in NO_RELU:
                    x = nn.functional.relu(x)
            return x

        def forward(self, x: torch.Tensor) -> Any:
            features = self.run(self.layout["trunk"], x)
            if "1_L1" in self.layout:  # body: returns (PAFs, heatmaps)
                pafs = self.run(self.layout["1_L1"], features)
                heat = self.run(self.layout["1_L2"], features)
                for stage in range(2, 7):
                    joined = torch.cat([pafs, heat, features], 1)
                    pafs = self.run(self.layout[f"{stage}_L1"], joined)
                    heat = self.run(self.layout[f"{stage}_L2"], joined)
                return pafs, heat
            heat = self.run(self.layout["1"], features)
            for stage in range(2, 7):
                heat = self.run(self.layout[str(stage)], torch.cat([heat, features], 1))
            return heat

    return OpenPoseNet()


def build_body() -> Any:
    return build_network(body_layout())


def build_hand() -> Any:
    return build_network(hand_layout())


def write_random_weights(folder: Path, *, tiny: bool = False) -> list[Path]:
    """Random ``body_pose_model.pth`` and ``hand_pose_model.pth`` in the published layout (real size)."""
    paths = []
    for spec, build in ((BODY_WEIGHTS, build_body), (HAND_WEIGHTS, build_hand)):
        path = Path(folder) / spec.filename
        write_state(path, random_state(build))
        paths.append(path)
    return paths


def network_input(rgb: np.ndarray, scale: float) -> tuple[np.ndarray, tuple[int, int]]:
    """BGR image scaled by ``scale``, padded (value 128) to a multiple of 8, in [-0.5, 0.5)."""
    bgr = cv2.resize(rgb[:, :, ::-1], (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    h, w = bgr.shape[:2]
    hp, wp = -(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE
    padded = np.full((hp, wp, 3), PAD_VALUE, np.uint8)
    padded[:h, :w] = bgr
    return np.ascontiguousarray(padded.transpose(2, 0, 1)).astype(np.float32) / 256 - 0.5, (h, w)


def to_image_size(maps: np.ndarray, valid: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """CxHxW network output -> HxWxC at the image size (upsample x8, crop padding, resize)."""
    up = cv2.resize(
        maps.transpose(1, 2, 0), (0, 0), fx=STRIDE, fy=STRIDE, interpolation=cv2.INTER_CUBIC
    )
    up = up[: valid[0], : valid[1]]
    return cv2.resize(up, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def find_peaks(heatmap: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Local maxima (x, y, score) of a smoothed heatmap above ``threshold``."""
    smooth = cv2.GaussianBlur(heatmap, (0, 0), 3)
    padded = np.pad(smooth, 1, constant_values=-np.inf)
    center = padded[1:-1, 1:-1]
    is_peak = ((center >= padded[:-2, 1:-1]) & (center >= padded[2:, 1:-1])
               & (center >= padded[1:-1, :-2]) & (center >= padded[1:-1, 2:]) & (center > threshold))  # fmt: skip
    ys, xs = np.nonzero(is_peak)
    return [(int(x), int(y), float(heatmap[y, x])) for x, y in zip(xs, ys, strict=True)]


def limb_score(paf: np.ndarray, a: tuple, b: tuple, image_height: int) -> float | None:
    """Mean PAF alignment along a->b with a distance prior, or None if the limb is implausible."""
    vec = np.array([b[0] - a[0], b[1] - a[1]], np.float64)
    norm = max(1e-3, float(np.hypot(*vec)))
    vec /= norm
    xs = np.rint(np.linspace(a[0], b[0], PAF_SAMPLES)).astype(int)
    ys = np.rint(np.linspace(a[1], b[1], PAF_SAMPLES)).astype(int)
    along = paf[ys, xs, 0] * vec[0] + paf[ys, xs, 1] * vec[1]
    score = float(along.mean()) + min(0.5 * image_height / norm - 1, 0)
    if np.count_nonzero(along > PAF_THRESHOLD) > 0.8 * PAF_SAMPLES and score > 0:
        return score
    return None


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
        for i, pa in ids[a]:
            for j, pb in ids[b]:
                score = limb_score(paf, pa, pb, image_height)
                if score is not None:
                    candidates.append((score, i, j))
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
