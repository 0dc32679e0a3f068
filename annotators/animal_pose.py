"""``animal_pose``: AP-10K animal keypoints (17 per animal) drawn as ComfyUI's controlnet_aux
pack draws them (its AnimalPose preprocessor; huggingface's controlnet_aux has none).

Two published ONNX files through onnxruntime: YOLOX-L (``yolox_l.onnx``, DWPose's detector)
finds animals, RTMPose-m AP-10K (``rtmpose-m_ap10k_256.onnx``, 256x256 crops) gives the
keypoints. Steps as the reference: the RGB image padded (edge pixels) at the bottom and right
to a multiple of 64 (its ``resize_image_with_pad``), letterboxed to 640x640 (pad 114), class-aware
NMS 0.45 over scores > 0.1, boxes of the COCO animal classes 14-23 (bird ... giraffe) kept above
0.3 (none: an empty map; the pose network does not run); each box grown 1.25x to the crop's
aspect, warped, normalised with ImageNet's mean and std, SimCC argmax / 2, mapped back. Each
animal: 17 limbs as 5 px ``cv2.line`` in fixed RGB colours, every keypoint whatever its score,
no joint dots, on black; the map cropped back to the image (the JSON's canvas is the image, not
the padded one the reference reports).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from annotators.base import Annotation
from annotators.dwpose import (
    DETECTOR_WEIGHTS,
    NMS_IOU,
    SCORE_MIN,
    VISIBLE,
    decode_yolox,
    letterbox,
    load_onnx,
    nms,
    run,
    top_down,
)
from annotators.learned import LearnedAnnotator, fp32_params, pad_edge
from annotators.registry import register
from annotators.weights import WeightsFile

POSE_WEIGHTS = WeightsFile(
    "rtmpose-m_ap10k_256.onnx",
    repo_id="hr16/UnJIT-DWPose",
    licence="Apache-2.0 (open-mmlab/mmpose RTMPose-m, trained on AP-10K)",
)
#: AP-10K keypoints, in the network's order
KEYPOINTS = ("left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder",
             "left_elbow", "left_front_paw", "right_shoulder", "right_elbow", "right_front_paw",
             "left_hip", "left_knee", "left_back_paw", "right_hip", "right_knee",
             "right_back_paw")  # fmt: skip
#: the reference's limbs (1-based keypoint ids) and their RGB colours, drawn in this order
LIMBS = ((1, 2), (2, 3), (1, 3), (3, 4), (4, 9), (9, 10), (10, 11), (4, 6), (6, 7), (7, 8),
         (4, 5), (5, 15), (15, 16), (16, 17), (5, 12), (12, 13), (13, 14))  # fmt: skip
LIMB_COLORS = ((255, 255, 255), (100, 255, 100), (150, 255, 255), (100, 50, 255), (50, 150, 200),
               (0, 255, 255), (0, 150, 0), (0, 0, 255), (0, 0, 150), (255, 50, 255),
               (255, 0, 255), (255, 0, 0), (150, 0, 0), (255, 255, 100), (0, 150, 0),
               (255, 255, 0), (150, 150, 150))  # fmt: skip
LINE_WIDTH = 5
#: COCO classes the detector's boxes are kept for: bird, cat, dog, horse, sheep, cow,
#: elephant, bear, zebra, giraffe
ANIMAL_CLASSES = tuple(range(14, 24))
ANIMAL_MIN = 0.3


def animal_boxes(output: np.ndarray, ratio: float) -> np.ndarray:
    """Animal boxes (N, 4) from one YOLOX output (rows, 85): per class, scores > 0.1 and NMS
    0.45, then scores > 0.3; in class order, best first within a class, as the reference."""
    boxes, scores = decode_yolox(output, ratio)
    found = []
    for cls in ANIMAL_CLASSES:
        valid = scores[:, cls] > SCORE_MIN
        kept_boxes, kept_scores = boxes[valid], scores[valid, cls]
        keep = nms(kept_boxes, kept_scores, NMS_IOU)
        # compared in float64, as the reference's detections array (it gains a class column)
        found.append(kept_boxes[keep][kept_scores[keep].astype(np.float64) > ANIMAL_MIN])
    return np.concatenate(found).astype(np.float64)


def draw_animals(shape: tuple[int, int], animals: list[np.ndarray]) -> np.ndarray:
    """An HxWx3 RGB canvas: each animal's (17, 2) keypoints joined by LIMBS, 5 px lines."""
    import cv2

    canvas = np.zeros((*shape, 3), np.uint8)
    for points in animals:
        for (a, b), colour in zip(LIMBS, LIMB_COLORS, strict=True):
            start = (int(points[a - 1][0]), int(points[a - 1][1]))
            end = (int(points[b - 1][0]), int(points[b - 1][1]))
            cv2.line(canvas, start, end, colour, LINE_WIDTH)
    return canvas


def ap10k_json(shape: tuple[int, int], animals: list[np.ndarray], scores: list) -> dict:
    """The reference's JSON: ``animals`` as [x, y, score] per keypoint, scores clipped to 0..1."""
    return {
        "version": "ap10k",
        "animals": [
            [
                [round(float(x), 3), round(float(y), 3), round(float(np.clip(s, 0.0, 1.0)), 3)]
                for (x, y), s in zip(points, score, strict=True)
            ]
            for points, score in zip(animals, scores, strict=True)
        ],  # fmt: skip
        "canvas_height": int(shape[0]),
        "canvas_width": int(shape[1]),
    }


@register
class AnimalPose(LearnedAnnotator):
    """AP-10K animal skeletons on black (ComfyUI's AnimalPose drawing) + keypoints as JSON."""

    name = "animal_pose"
    version = "1"
    outputs = ("animal_pose",)
    data_outputs = ("animal_pose",)
    stats = ("animal_pose_animals", "animal_pose_keypoints")
    description = "AP-10K animal skeleton (17 keypoints), RGB on black, + animal_pose.json"
    reference = (
        "ComfyUI controlnet_aux pack AnimalPosePreprocessor (yolox_l.onnx + "
        "rtmpose-m_ap10k_256.onnx, onnxruntime)"
    )
    params = fp32_params()

    @classmethod
    def weights_files(cls) -> list[Any]:
        return [DETECTOR_WEIGHTS, POSE_WEIGHTS]

    def requirements(self) -> tuple[tuple[str, str], ...]:
        """onnxruntime (the ``dwpose`` extra)."""
        return (("onnxruntime", "dwpose"),)

    def load(self) -> None:
        """Both ONNX sessions once (onnxruntime picks the providers; torch is not needed)."""
        if self._loaded is None:
            cfg = self.config
            (self._detector, self._pose), loaded = load_onnx(
                self.weights_files(), cfg["weights_dir"], cfg["device"], "animal_pose"
            )
            self.device = "cuda" if "CUDA" in self._detector.get_providers()[0] else "cpu"
            self._loaded = loaded

    def _annotate_batch(self, images: list[np.ndarray], rngs: list) -> list[Annotation]:
        self.load()
        size = self.network_batch_size()
        padded = [pad_edge(rgb) for rgb in images]
        inputs = [letterbox(rgb) for rgb in padded]  # RGB, as the reference feeds it
        outputs = run(self._detector, np.stack([x for x, _ in inputs]), size)[0]
        boxes = [animal_boxes(out, ratio) for (_, ratio), out in zip(inputs, outputs, strict=True)]
        results = []
        for rgb, big, (points, scores) in zip(images, padded, top_down(self._pose, padded, boxes, size),
                                              strict=True):  # fmt: skip
            shape = rgb.shape[:2]
            animals, confidences = list(points), list(scores)
            seen = max((int(np.sum(s.astype(np.float64) > VISIBLE)) for s in scores), default=0)
            drawn = draw_animals(big.shape[:2], animals)[: shape[0], : shape[1]]
            results.append(Annotation(
                maps={"animal_pose": np.ascontiguousarray(drawn)},
                data={"animal_pose": ap10k_json(shape, animals, confidences)},
                stats={"animal_pose_animals": float(len(animals)),
                       "animal_pose_keypoints": float(seen)},
            ))  # fmt: skip
        return results
