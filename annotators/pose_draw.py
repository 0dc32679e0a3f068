"""Draw OpenPose-style skeletons (what ControlNet's pose checkpoints were trained on).

Body: 18 COCO keypoints, 17 limbs from OpenPose's 19-pair limb sequence, 18 fixed
colours, stick width 4, limb colour x0.6, joint circles of radius 4, on black.
Hands: 21 points, edges in HSV-rainbow colours, blue joints. Face: white dots.
Keypoints are (x, y, confidence) in pixels; a missing keypoint is ``None``.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import cv2
import numpy as np

Keypoint = tuple[float, float, float] | None

#: OpenPose body keypoint names, in order
BODY_NAMES = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
              "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
              "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear")  # fmt: skip
#: OpenPose's 19 limb pairs (1-based keypoint ids); the first 17 are drawn
LIMB_SEQUENCE = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11),
                 (2, 12), (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
                 (3, 17), (6, 18))  # fmt: skip
DRAWN_LIMBS = 17
#: RGB colour of keypoint i and of limb i
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
          (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
          (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))  # fmt: skip
STICK_WIDTH = 4
LIMB_SHADE = 0.6
JOINT_RADIUS = 4
#: the 20 edges of the 21-point hand (wrist 0, then 4 points per finger)
HAND_EDGES = tuple((0 if j == 0 else 4 * f + j, 4 * f + j + 1) for f in range(5) for j in range(4))
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)


def limb_color(index: int) -> tuple[int, int, int]:
    """Colour of limb ``index``: the keypoint colour scaled by 0.6."""
    return tuple(int(c * LIMB_SHADE) for c in COLORS[index])


def hand_edge_color(index: int) -> tuple[int, int, int]:
    """HSV rainbow over the 20 hand edges (full saturation and value)."""
    r, g, b = colorsys.hsv_to_rgb(index / len(HAND_EDGES), 1.0, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_body(canvas: np.ndarray, body: Sequence[Keypoint]) -> None:
    """Draw one person's 18 keypoints: limbs first (ellipses), then joints on top."""
    for i in range(DRAWN_LIMBS):
        a, b = (body[k - 1] for k in LIMB_SEQUENCE[i])
        if a is None or b is None:
            continue
        (x1, y1), (x2, y2) = a[:2], b[:2]
        length = math.hypot(x1 - x2, y1 - y2)
        angle = math.degrees(math.atan2(y1 - y2, x1 - x2))
        center = (int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2)))
        polygon = cv2.ellipse2Poly(center, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, limb_color(i))
    for i, point in enumerate(body):
        if point is not None:
            cv2.circle(canvas, (int(round(point[0])), int(round(point[1]))), JOINT_RADIUS,
                       COLORS[i], thickness=-1)  # fmt: skip


def draw_hand(canvas: np.ndarray, hand: Sequence[Keypoint]) -> None:
    """Draw one 21-point hand: rainbow edges (2 px), blue joints."""
    for i, (a, b) in enumerate(HAND_EDGES):
        if hand[a] is not None and hand[b] is not None:
            p1 = (int(round(hand[a][0])), int(round(hand[a][1])))
            p2 = (int(round(hand[b][0])), int(round(hand[b][1])))
            cv2.line(canvas, p1, p2, hand_edge_color(i), thickness=2)
    for point in hand:
        if point is not None:
            cv2.circle(canvas, (int(round(point[0])), int(round(point[1]))), JOINT_RADIUS,
                       HAND_JOINT_COLOR, thickness=-1)  # fmt: skip


def draw_face(canvas: np.ndarray, face: Sequence[Keypoint]) -> None:
    """Draw face keypoints as white dots."""
    for point in face:
        if point is not None:
            cv2.circle(canvas, (int(round(point[0])), int(round(point[1]))), 3, FACE_COLOR, -1)


def draw_people(shape: tuple[int, int], people: list[dict]) -> np.ndarray:
    """An HxWx3 RGB canvas with every person's body, hands and face drawn on black."""
    canvas = np.zeros((*shape, 3), np.uint8)
    for person in people:
        draw_body(canvas, person["body"])
    for person in people:
        for hand in (person.get("left_hand"), person.get("right_hand")):
            if hand:
                draw_hand(canvas, hand)
        if person.get("face"):
            draw_face(canvas, person["face"])
    return canvas


def flatten(points: Sequence[Keypoint] | None) -> list[float]:
    """OpenPose's flat x, y, confidence list (missing points are 0, 0, 0)."""
    out: list[float] = []
    for point in points or []:
        out += [0.0, 0.0, 0.0] if point is None else [round(float(v), 3) for v in point[:3]]
    return out


def openpose_json(shape: tuple[int, int], people: list[dict]) -> dict:
    """Keypoints in OpenPose's JSON format, pixel coordinates of the annotated image."""
    return {
        "version": 1.3,
        "canvas_height": int(shape[0]),
        "canvas_width": int(shape[1]),
        "people": [
            {
                "pose_keypoints_2d": flatten(p["body"]),
                "hand_left_keypoints_2d": flatten(p.get("left_hand")),
                "hand_right_keypoints_2d": flatten(p.get("right_hand")),
                "face_keypoints_2d": flatten(p.get("face")),
            }
            for p in people
        ],
    }
