"""DWPose whole-body keypoints through onnxruntime: YOLOX-L (``yolox_l.onnx``) finds people,
RTMPose-L (``dw-ll_ucoco_384.onnx``) gives 133 COCO-WholeBody keypoints per person (SimCC).

Steps and constants are those of the DWPose authors' ONNX annotator for ControlNet 1.1 (also
packaged by controlnet_aux): a 640x640 top-left letterbox (pad 114, raw 0..255) for the
detector, class-0 boxes after NMS 0.45 / score 0.1 kept above 0.3 (none: the whole image is the
box), each box grown 1.25x to the 288:384 aspect, warped to 288x384, normalised with ImageNet's
mean and std, SimCC argmax / 2, mapped back. Colour order as controlnet_aux 0.0.10 feeds the
networks: BGR to the detector (YOLOX was trained on cv2 images), RGB to the pose network (its
config has ``bgr_to_rgb=True``; the ONNX export leaves the swap to the caller).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from annotators.weights import (
    WeightsError,
    WeightsFile,
    identity,
    resolve_all,
    sha256_file,
)

DETECTOR_WEIGHTS = WeightsFile(
    "yolox_l.onnx", repo_id="yzd-v/DWPose", size_hint="217 MB",
    licence="Apache-2.0 (Megvii-BaseDetection/YOLOX, exported by IDEA-Research/DWPose)",
)  # fmt: skip
POSE_WEIGHTS = WeightsFile("dw-ll_ucoco_384.onnx", repo_id="yzd-v/DWPose", size_hint="134 MB")

DETECT_SIZE = (640, 640)  # (height, width) of the letterbox
PAD_VALUE = 114
STRIDES = (8, 16, 32)
NMS_IOU, SCORE_MIN, PERSON_MIN = 0.45, 0.1, 0.3
BOX_PADDING = 1.25
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
SIMCC_SPLIT = 2.0
#: a body point is drawn above this score; hand and face points at or above it
VISIBLE = 0.3
#: OpenPose body keypoint i <- COCO-WholeBody keypoint (None: the neck, mid-shoulders)
BODY_FROM_WHOLEBODY = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
FACE = range(23, 91)  # 68 points (the 6 foot points 17..22 are not drawn)
LEFT_HAND, RIGHT_HAND = range(91, 112), range(112, 133)

# (sha256, providers) -> session; one per process, shared by annotator instances
_SESSIONS: dict[tuple[str, tuple[str, ...]], Any] = {}


def providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``cpu``, ``cuda`` or ``auto``."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cpu" or (device == "auto" and "CUDAExecutionProvider" not in available):
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise WeightsError(
            "device 'cuda' requested but onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def load_onnx(specs: Sequence[WeightsFile], weights_dir: str, device: str,
              what: str = "pose backend=dwpose", extra: str = "dwpose") -> tuple[list[Any], list[dict[str, Any]]]:  # fmt: skip
    """(one onnxruntime session per file, identities), cached per process; one WeightsError line
    naming every file that is missing and where to put it, or a file onnxruntime cannot read."""
    try:
        import onnxruntime
    except ImportError:
        raise WeightsError(f"{what} needs onnxruntime: pip install 'hintset[{extra}]'") from None
    paths = resolve_all(specs, weights_dir or None)
    chosen = providers(device)
    sessions = []
    for spec, path in zip(specs, paths, strict=True):
        key = (sha256_file(path), tuple(chosen))
        if key not in _SESSIONS:
            try:
                _SESSIONS[key] = onnxruntime.InferenceSession(str(path), providers=chosen)
            except Exception as err:  # noqa: BLE001 - a corrupt or foreign file: one line
                message = " ".join(str(err).split())[:200]
                raise WeightsError(f"cannot load {spec.filename}: {message}") from None
        sessions.append(_SESSIONS[key])
    return sessions, [identity(s, p) for s, p in zip(specs, paths, strict=True)]


def load_sessions(weights_dir: str, device: str) -> tuple[Any, Any, list[dict[str, Any]]]:
    """(detector session, pose session, identities) of DWPose (see :func:`load_onnx`)."""
    (detector, pose), identities = load_onnx((DETECTOR_WEIGHTS, POSE_WEIGHTS), weights_dir, device)
    return detector, pose, identities


def fixed_batch(session: Any) -> int | None:
    """The batch size a session's input is fixed to (published files: 1), or None if dynamic."""
    first = session.get_inputs()[0].shape[0]
    return first if isinstance(first, int) and first > 0 else None


def run(session: Any, inputs: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """All outputs of ``session`` for a stack of inputs, run in chunks the file allows."""
    step = fixed_batch(session) or max(1, batch_size)
    name = session.get_inputs()[0].name
    chunks = [session.run(None, {name: inputs[i : i + step]}) for i in range(0, len(inputs), step)]
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def letterbox(bgr: np.ndarray, size: tuple[int, int] = DETECT_SIZE) -> tuple[np.ndarray, float]:
    """3xHxW float32 (0..255): the image scaled to fit ``size``, top-left, padded with 114."""
    ratio = min(size[0] / bgr.shape[0], size[1] / bgr.shape[1])
    height, width = int(bgr.shape[0] * ratio), int(bgr.shape[1] * ratio)
    canvas = np.full((*size, 3), PAD_VALUE, np.uint8)
    canvas[:height, :width] = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32), ratio


def grid(size: tuple[int, int] = DETECT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(cell x, y) and stride of each YOLOX output row: strides 8, 16, 32, rows y-major."""
    cells, strides = [], []
    for stride in STRIDES:
        ys, xs = np.mgrid[: size[0] // stride, : size[1] // stride]
        cells.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full((xs.size, 1), stride))
    return np.concatenate(cells), np.concatenate(strides)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy NMS, best first (areas with the +1 pixel convention of YOLOX)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        height = np.maximum(
            0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1
        )
        inter = width * height
        order = rest[inter / (areas[best] + areas[rest] - inter) <= iou]
    return keep


def decode_yolox(output: np.ndarray, ratio: float,
                 size: tuple[int, int] = DETECT_SIZE) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Boxes (rows, 4) x1, y1, x2, y2 in image pixels and class scores (rows, 80) = objectness x
    class from one YOLOX output (rows, 85): centre/size decoded on the grid, undone letterbox."""
    cells, strides = grid(size)
    rows = output.copy()
    rows[:, :2] = (rows[:, :2] + cells) * strides
    rows[:, 2:4] = np.exp(rows[:, 2:4]) * strides
    boxes = np.ones_like(rows[:, :4])
    boxes[:, :2] = rows[:, :2] - rows[:, 2:4] / 2.0
    boxes[:, 2:] = rows[:, :2] + rows[:, 2:4] / 2.0
    return boxes / ratio, rows[:, 4:5] * rows[:, 5:]


def person_boxes(
    output: np.ndarray, ratio: float, size: tuple[int, int] = DETECT_SIZE
) -> np.ndarray:
    """Person boxes (N, 4) x1, y1, x2, y2 in image pixels from one YOLOX output (rows, 85):
    score = objectness x class 0, NMS, then score > 0.3."""
    boxes, scores = decode_yolox(output, ratio, size)
    scores = scores[:, 0]
    valid = scores > SCORE_MIN
    boxes, scores = boxes[valid], scores[valid]
    keep = nms(boxes, scores, NMS_IOU)
    # float64 from here on, as the reference (its detections array gains a float64 class column)
    return boxes[keep][scores[keep].astype(np.float64) > PERSON_MIN].astype(np.float64)


def box_center_scale(box: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre and (w, h) of a box grown by 1.25 and widened or heightened to ``aspect`` (w / h)."""
    box = np.asarray(box)
    center = np.hstack([box[0:1] + box[2:3], box[1:2] + box[3:4]]) * 0.5
    width, height = (np.hstack([box[2:3] - box[0:1], box[3:4] - box[1:2]]) * BOX_PADDING)[:, None]
    if (width > height * aspect)[0]:
        return center, np.hstack([width, width / aspect])
    return center, np.hstack([height * aspect, height])


def crop_matrix(center: np.ndarray, scale: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """2x3 affine taking the box (centre, scale) to a (width, height) crop, from three point
    pairs in float32 as the reference: the centre, the top middle, and the top middle moved by
    the centre-to-top vector turned 90 degrees (the top-left corner)."""

    def three(middle: np.ndarray, up: float) -> np.ndarray:
        points = np.zeros((3, 2), np.float32)
        points[0], points[1] = middle, middle + np.array([0.0, up])
        direction = points[0] - points[1]
        points[2] = points[1] + np.array([-direction[1], direction[0]], np.float32)
        return points

    width, height = size
    src = three(center, float(scale[0]) * -0.5)
    dst = three(np.array([width * 0.5, height * 0.5]), width * -0.5)
    return cv2.getAffineTransform(src, dst)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) crop coordinates and (K,) scores from (K, Wx) and (K, Wy) SimCC vectors: argmax
    / split ratio, score = the smaller maximum; locations -1 where the score is <= 0."""
    locs = np.stack([simcc_x.argmax(1), simcc_y.argmax(1)], 1).astype(np.float32)
    scores = np.minimum(simcc_x.max(1), simcc_y.max(1))
    locs[scores <= 0] = -1
    return locs / np.float32(SIMCC_SPLIT), scores


def input_size(session: Any) -> tuple[int, int]:
    """(width, height) of a top-down pose network's crop: 288 x 384 for dw-ll_ucoco_384."""
    height, width = session.get_inputs()[0].shape[2:]
    return int(width), int(height)


def top_down(session: Any, images: list[np.ndarray], boxes: list[np.ndarray],
             batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """RTMPose on every box of every image: (P, K, 2) image coordinates and (P, K) scores per
    image (P = its boxes, K = the network's keypoints). Each box is grown 1.25x to the crop's
    aspect, warped, normalised with ImageNet's mean and std; SimCC decoded and mapped back."""
    width, height = crop_size = input_size(session)
    crops, frames, owners = [], [], []
    for index, (rgb, found) in enumerate(zip(images, boxes, strict=True)):
        for box in found:
            center, scale = box_center_scale(box, width / height)
            matrix = crop_matrix(center, scale, crop_size)
            crop = cv2.warpAffine(rgb, matrix, crop_size, flags=cv2.INTER_LINEAR)
            crops.append(((crop - MEAN) / STD).transpose(2, 0, 1).astype(np.float32))
            frames.append((center, scale))
            owners.append(index)
    if not crops:
        return [(np.zeros((0, 0, 2)), np.zeros((0, 0))) for _ in images]
    simcc_x, simcc_y = run(session, np.stack(crops), batch_size)
    count = simcc_x.shape[1]
    results: list[tuple[list, list]] = [([], []) for _ in images]
    for k, (center, scale) in enumerate(frames):
        locs, scores = decode_simcc(simcc_x[k], simcc_y[k])
        points = locs / np.array(crop_size) * scale + center - scale / 2
        results[owners[k]][0].append(points)
        results[owners[k]][1].append(scores)
    return [(np.array(p).reshape(-1, count, 2), np.array(s).reshape(-1, count))
            for p, s in results]  # fmt: skip


class DWPose:
    """Both ONNX sessions; ``people(rgb)`` gives OpenPose-style people for :mod:`pose_draw`."""

    def __init__(self, detector: Any, pose: Any, batch_size: int = 8) -> None:
        self.detector, self.pose, self.batch_size = detector, pose, batch_size

    def boxes(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Person boxes per image (the whole image when none is found, as the reference)."""
        inputs = [letterbox(np.ascontiguousarray(rgb[:, :, ::-1])) for rgb in images]
        outputs = run(self.detector, np.stack([x for x, _ in inputs]), self.batch_size)[0]
        found = []
        for rgb, (_, ratio), output in zip(images, inputs, outputs, strict=True):
            boxes = person_boxes(output, ratio)
            height, width = rgb.shape[:2]
            found.append(boxes if len(boxes) else np.array([[0, 0, width, height]]))
        return found

    def keypoints(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(P, 133, 2) image coordinates and (P, 133) scores per image."""
        return top_down(self.pose, images, self.boxes(images), self.batch_size)

    def people(self, images: list[np.ndarray], hands: bool, face: bool) -> list[list[dict]]:
        """OpenPose-style people per image (see :func:`to_openpose`)."""
        return [
            [
                person
                for p, s in zip(points, scores, strict=True)
                if (person := to_openpose(p, s, hands, face))
            ]
            for points, scores in self.keypoints(images)
        ]


def _point(xy: np.ndarray, score: float) -> tuple[float, float, float]:
    return (float(xy[0]), float(xy[1]), float(score))


def to_openpose(points: np.ndarray, scores: np.ndarray, hands: bool, face: bool) -> dict | None:
    """One person: 18 OpenPose body points (score > 0.3; neck = mid-shoulders when both are),
    and 21-point hands and 68-point face (score >= 0.3); None when nothing is visible."""
    scores = scores.astype(np.float64)  # compared with 0.3 in float64, as the reference
    body: list = []
    for index in BODY_FROM_WHOLEBODY:
        if index is None:
            shown = scores[5] > VISIBLE and scores[6] > VISIBLE
            neck = (points[5] + points[6]) / 2
            body.append(_point(neck, min(scores[5], scores[6])) if shown else None)
        else:
            body.append(_point(points[index], scores[index]) if scores[index] > VISIBLE else None)

    def part(indices: Sequence[int]) -> list:
        return [_point(points[i], scores[i]) if scores[i] >= VISIBLE else None for i in indices]

    person: dict[str, Any] = {"body": body}
    if hands:
        person["left_hand"], person["right_hand"] = part(LEFT_HAND), part(RIGHT_HAND)
    if face:
        person["face"] = part(FACE)
    visible = any(p is not None for points_ in person.values() for p in points_)
    return person if visible else None
