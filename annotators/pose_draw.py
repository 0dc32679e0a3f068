"""Draw OpenPose-style skeletons (what ControlNet's pose checkpoints were trained on).

Body: 18 COCO keypoints, 17 limbs from OpenPose's 19-pair limb sequence, 18 fixed
colours, stick width 4, limb colour x0.6, joint circles of radius 4, on black.
Hands: 21 points, edges in HSV-rainbow colours, blue joints. Face: white dots.
Keypoints are (x, y, confidence) in pixels; a missing keypoint is ``None``.
Stick rule ``xinsir`` (xinsir's ControlNet-Union / openpose SDXL draw_bodypose): limb
half-width and joint radius 4 x a ratio from the canvas' longer side (1 below 500 px, 2 below
1000, 3 below 2000, ... 7 from 5000), body only, each person's limbs then joints in turn.
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
#: body stick rules: ``fixed`` (ControlNet 1.1: 4 px) or ``xinsir`` (scaled to resolution)
STICK_RULES = ("fixed", "xinsir")
#: xinsir's ratio steps: the longer canvas side below each bound gives 1, 2, ...; 7 past them
XINSIR_BOUNDS = (500, 1000, 2000, 3000, 4000, 5000)
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)


def limb_color(index: int) -> tuple[int, int, int]:
    """Colour of limb ``index`` once drawn: the keypoint colour scaled by 0.6, truncated."""
    return tuple(int(c * LIMB_SHADE) for c in COLORS[index])


def hand_edge_color(index: int) -> tuple[float, float, float]:
    """HSV rainbow over the 20 hand edges, as float 0..255 values (OpenCV rounds them when
    drawing, as in the reference, which passes ``hsv_to_rgb(...) * 255`` to ``cv2.line``)."""
    r, g, b = colorsys.hsv_to_rgb(index / float(len(HAND_EDGES)), 1.0, 1.0)
    return r * 255.0, g * 255.0, b * 255.0


def stick_scale(rule: str, shape: tuple[int, int]) -> int:
    """Factor on the body's stick half-width and joint radius: 1 for ``fixed``; for ``xinsir``
    1 + the number of XINSIR_BOUNDS at or below the canvas' longer side."""
    if rule == "fixed":
        return 1
    if rule != "xinsir":
        raise ValueError(f"unknown stick rule {rule!r}; known: {', '.join(STICK_RULES)}")
    return 1 + sum(max(shape) >= bound for bound in XINSIR_BOUNDS)


def _px(value: float, size: int) -> int:
    """Canvas pixel of a coordinate as the reference computes it: normalised by the canvas
    size, scaled back and truncated (``int(x / W * W)``)."""
    return int(float(value) / float(size) * float(size))


def _px32(value: float, size: int) -> int:
    """As :func:`_px` for hand and face points, which the reference normalises in float32."""
    return int(float(np.float32(value) / np.float32(size)) * float(size))


def draw_limbs(canvas: np.ndarray, people: list[Sequence[Keypoint]], scale: int = 1) -> None:
    """Limb ellipses of every person, limb by limb (limb i of all people, then limb i + 1),
    ``scale`` x STICK_WIDTH wide on each side."""
    height, width = canvas.shape[:2]
    for i in range(DRAWN_LIMBS):
        for body in people:
            a, b = (body[k - 1] for k in LIMB_SEQUENCE[i])
            if a is None or b is None:
                continue
            xs = [float(a[0]) / width * width, float(b[0]) / width * width]
            ys = [float(a[1]) / height * height, float(b[1]) / height * height]
            length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            center = (int(np.mean(xs)), int(np.mean(ys)))
            polygon = cv2.ellipse2Poly(
                center, (int(length / 2), STICK_WIDTH * scale), int(angle), 0, 360, 1
            )
            cv2.fillConvexPoly(canvas, polygon, limb_color(i))


def draw_joints(canvas: np.ndarray, people: list[Sequence[Keypoint]], scale: int = 1) -> None:
    """Joint circles (radius ``scale`` x JOINT_RADIUS) of every person, joint by joint, on top
    of all limbs."""
    height, width = canvas.shape[:2]
    for i in range(len(COLORS)):
        for body in people:
            point = body[i] if i < len(body) else None
            if point is not None:
                center = (_px(point[0], width), _px(point[1], height))
                cv2.circle(canvas, center, JOINT_RADIUS * scale, COLORS[i], thickness=-1)


def draw_body(canvas: np.ndarray, body: Sequence[Keypoint]) -> None:
    """Draw one person's 18 keypoints: limbs first (ellipses), then joints on top."""
    draw_limbs(canvas, [body])
    draw_joints(canvas, [body])


def draw_hand(canvas: np.ndarray, hand: Sequence[Keypoint], float32: bool = True) -> None:
    """Draw one 21-point hand: rainbow edges (2 px), blue joints; points truncated to pixels and
    those at pixel row or column 0 skipped, as the reference (which normalises OpenPose's points
    in float32, DWPose's in float64: ``float32=False``)."""
    height, width = canvas.shape[:2]
    px = _px32 if float32 else _px
    pixels = [None if p is None else (px(p[0], width), px(p[1], height)) for p in hand]
    for i, (a, b) in enumerate(HAND_EDGES):
        pa, pb = pixels[a], pixels[b]
        if pa is not None and pb is not None and min(*pa, *pb) > 0:
            cv2.line(canvas, pa, pb, hand_edge_color(i), thickness=2)
    for point in pixels:
        if point is not None and min(point) > 0:
            cv2.circle(canvas, point, JOINT_RADIUS, HAND_JOINT_COLOR, thickness=-1)


def draw_face(canvas: np.ndarray, face: Sequence[Keypoint], float32: bool = True) -> None:
    """Draw face keypoints as white dots (truncated to pixels; row/column 0 skipped; float32 as
    in :func:`draw_hand`)."""
    height, width = canvas.shape[:2]
    px = _px32 if float32 else _px
    for p in face:
        if p is not None and min(px(p[0], width), px(p[1], height)) > 0:
            cv2.circle(canvas, (px(p[0], width), px(p[1], height)), 3, FACE_COLOR, -1)


def draw_bodies(shape: tuple[int, int], people: list[dict], rule: str = "fixed") -> np.ndarray:
    """A black HxWx3 canvas with the limbs, then the joints, of all people (``rule``: the
    stick width, see :func:`stick_scale`; ``xinsir`` draws person by person, as its reference)."""
    canvas = np.zeros((*shape, 3), np.uint8)
    bodies = [person["body"] for person in people]
    scale = stick_scale(rule, shape)
    # xinsir's draw_bodypose (controlnet_aux's OpenposeDetector) is called once per person
    for group in [[body] for body in bodies] if rule == "xinsir" else [bodies]:
        draw_limbs(canvas, group, scale)
        draw_joints(canvas, group, scale)
    return canvas


def draw_people(shape: tuple[int, int], people: list[dict], rule: str = "fixed") -> np.ndarray:
    """An HxWx3 RGB canvas drawn in ControlNet 1.1's order: the limbs of all people, the joints
    of all people, then every hand, then every face, on black."""
    canvas = draw_bodies(shape, people, rule)
    for person in people:
        for hand in (person.get("left_hand"), person.get("right_hand")):
            if hand:
                draw_hand(canvas, hand)
    for person in people:
        if person.get("face"):
            draw_face(canvas, person["face"])
    return canvas


def draw_wholebody(shape: tuple[int, int], people: list[dict], rule: str = "fixed") -> np.ndarray:
    """An HxWx3 RGB canvas in DWPose's order (its ControlNet 1.1 annotator): the limbs of all
    people, their joints, the left hands of all people, then their right hands, then the faces;
    hand and face points normalised in float64."""
    canvas = draw_bodies(shape, people, rule)
    for side in ("left_hand", "right_hand"):
        for person in people:
            if person.get(side):
                draw_hand(canvas, person[side], float32=False)
    for person in people:
        if person.get("face"):
            draw_face(canvas, person["face"], float32=False)
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
