"""``pose``: OpenPose-style skeleton maps plus keypoints in OpenPose's JSON format.

The backends share the drawing in :mod:`annotators.pose_draw`:
- ``mediapipe`` (default): MediaPipe's Tasks API (current mediapipe) with the published
  ``.task`` files as weights (:mod:`annotators.mediapipe_tasks`). ONE person per image.
- ``mediapipe-bundled``: the same model generation through mediapipe 0.10.21's
  ``mp.solutions``, whose wheel bundles the models (offline, no files; the ``pose-bundled``
  extra, in an environment of its own). ONE person per image (the most prominent).
- ``openpose``: the CMU body (and hand) networks from lllyasviel/Annotators; finds
  MANY people by grouping keypoints with part affinity fields.
- ``dwpose``: DWPose whole-body (YOLOX-L person boxes, then RTMPose 133 keypoints per person,
  ONNX files through onnxruntime, :mod:`annotators.dwpose`); MANY people, with hands and face.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from annotators.base import Annotation, Param
from annotators.learned import LEARNED_PARAMS, LearnedAnnotator, groups_by_size
from annotators.mediapipe_tasks import (
    HAND_TASK,
    POSE_TASKS,
    face_contour_edges,
    in_repo,
    load_tasks,
    mp_image,
    task_files,
)
from annotators.pose_draw import STICK_RULES, draw_people, draw_wholebody, openpose_json
from annotators.quiet import filter_native_logs
from annotators.registry import register

#: OpenPose body keypoint i <- MediaPipe pose landmark (neck, None, is the mid-shoulder)
MEDIAPIPE_TO_OPENPOSE = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
#: the face points reported for mediapipe: FaceMesh contour landmarks (face oval, eyes,
#: eyebrows, lips), sorted; OpenPose's own 70-point face layout is not reproduced
FACE_SUBSET = "mediapipe FACEMESH_CONTOURS landmarks, sorted by index"


MEDIAPIPE_BACKENDS = ("mediapipe", "mediapipe-bundled")


def landmark(point: Any, shape: tuple[int, int], min_confidence: float, visibility: bool = True):
    """(x, y, confidence) in pixels, or None when not visible enough or outside the image."""
    confidence = float(point.visibility or 0.0) if visibility else 1.0
    x, y = point.x * shape[1], point.y * shape[0]
    if confidence < min_confidence or not (0 <= x < shape[1] and 0 <= y < shape[0]):
        return None
    return (x, y, confidence)


@register
class Pose(LearnedAnnotator):
    """OpenPose 18-keypoint body (+ optional hands and face) on black, and the keypoints as JSON."""

    name = "pose"
    version = "2"
    outputs = ("pose",)
    data_outputs = ("pose",)
    stats = ("pose_people", "pose_keypoints")  # every backend
    description = "OpenPose-style skeleton, RGB on black, + pose.json (OpenPose format)"
    params = (
        Param(
            "backend",
            "mediapipe",
            "keypoint detector",
            choices=(*MEDIAPIPE_BACKENDS, "openpose", "dwpose"),
        ),  # fmt: skip
        Param("hands", False, "detect and draw hands (21 points each)"),
        Param("face", False, "detect and draw face points (mediapipe, dwpose)"),
        Param("min_confidence", 0.5, "mediapipe: drop keypoints less visible than this", maximum=1),
        Param(
            "model_complexity",
            1,
            "mediapipe pose model (0 lite, 1 full, 2 heavy: .task only)",
            choices=(0, 1, 2),
        ),  # fmt: skip
        Param("task_repo", "", "mediapipe: Hugging Face repo holding the .task files, if any"),
        Param(
            "stick_rule",
            "fixed",
            "body stick width: fixed (ControlNet 1.1: 4 px) or xinsir (4 px x 1..7 by resolution)",
            choices=STICK_RULES,
        ),  # fmt: skip
        *LEARNED_PARAMS,
    )

    def _validate(self) -> None:
        super()._validate()
        if self.config["face"] and self.config["backend"] == "openpose":
            raise ValueError("pose: face points need backend=mediapipe or dwpose")
        if self.config["backend"] == "mediapipe-bundled" and self.config["model_complexity"] > 1:
            raise ValueError("pose: the heavy model (2) is not bundled; use backend=mediapipe")
        if self.config["backend"] == "dwpose" and self.config["precision"] in ("fp16", "bf16"):
            raise ValueError("pose: backend=dwpose runs the ONNX files as published (fp32)")
        self.wants_gpu = self.config["backend"] not in MEDIAPIPE_BACKENDS

    @classmethod
    def weights_files(cls) -> list[Any]:
        return [f for files in cls.weights_by_backend().values() for f in files]

    @classmethod
    def weights_by_backend(cls) -> dict[str, list[Any]]:
        """mediapipe: the .task files (pose lite/full/heavy, hands, face); mediapipe-bundled:
        none (in the 0.10.21 wheel); openpose: the body (and hand) networks; dwpose: the
        person detector and the whole-body network."""
        from annotators.dwpose import DETECTOR_WEIGHTS, POSE_WEIGHTS
        from annotators.mediapipe_tasks import FACE_TASK
        from annotators.openpose import BODY_WEIGHTS, HAND_WEIGHTS

        return {
            "mediapipe": [*POSE_TASKS.values(), HAND_TASK, FACE_TASK],
            "mediapipe-bundled": [],
            "openpose": [BODY_WEIGHTS, HAND_WEIGHTS],
            "dwpose": [DETECTOR_WEIGHTS, POSE_WEIGHTS],
        }

    def configured_weights(self) -> list[Any]:
        """The files of the configured backend (mediapipe: the .task files it loads; openpose:
        the hand network only with hands)."""
        cfg = self.config
        if cfg["backend"] == "mediapipe":
            files = task_files(cfg["model_complexity"], cfg["hands"], cfg["face"])
            return in_repo(files, cfg["task_repo"])
        files = self.weights_by_backend()[cfg["backend"]]
        if cfg["backend"] == "openpose" and not cfg["hands"]:
            return files[:1]
        return files

    def requirements(self) -> tuple[tuple[str, str], ...]:
        """mediapipe (``pose``: its Tasks API; ``pose-bundled``: 0.10.21's ``mp.solutions``),
        torch (``models``) or onnxruntime (``dwpose``)."""
        from annotators.extras import TORCH

        return {"mediapipe": (("mediapipe", "pose"),),
                "mediapipe-bundled": (("mediapipe.python.solutions", "pose-bundled"),),
                "openpose": TORCH, "dwpose": (("onnxruntime", "dwpose"),)}[self.config["backend"]]  # fmt: skip

    @classmethod
    def benchmark_variants(cls) -> list[dict[str, Any]]:
        return [{"backend": "openpose"}, {"backend": "dwpose", "hands": True, "face": True}]

    def uses_weights(self) -> bool:
        """Every backend but mediapipe-bundled loads weights (its models ship in its wheel)."""
        return self.config["backend"] != "mediapipe-bundled"

    def load(self) -> None:
        """As LearnedAnnotator.load; dwpose picks onnxruntime providers itself, mediapipe runs
        TF Lite on the CPU (neither needs torch)."""
        if self._loaded is None and self.config["backend"] == "mediapipe":
            self._loaded = self._load_networks()
        if self._loaded is None and self.config["backend"] == "dwpose":
            from annotators.dwpose import DWPose, load_sessions

            cfg = self.config
            detector, pose, self._loaded = load_sessions(cfg["weights_dir"], cfg["device"])
            self.device = "cuda" if "CUDA" in detector.get_providers()[0] else "cpu"
            self._dwpose = DWPose(detector, pose, self.network_batch_size())
        super().load()

    def _load_networks(self) -> list[dict[str, Any]]:
        if self.config["backend"] == "mediapipe":
            cfg = self.config
            filter_native_logs()  # absl / TF Lite lines would break progress bars
            options = [{"num_poses": 1}] + [{"num_hands": 2}] * cfg["hands"]
            options += [{"num_faces": 1}] * cfg["face"]
            tasks, loaded = load_tasks(self.configured_weights(), cfg["weights_dir"], options)
            names = ["pose"] + ["hands"] * cfg["hands"] + ["face"] * cfg["face"]
            self._tasks = dict(zip(names, tasks, strict=True))
            self._face_ids = sorted({i for edge in face_contour_edges() for i in edge})
            return loaded
        if self.config["backend"] == "mediapipe-bundled":
            filter_native_logs()  # absl / TF Lite lines would break progress bars
            import mediapipe as mp

            solutions = mp.solutions
            self._mp_pose = solutions.pose.Pose(static_image_mode=True,
                                                model_complexity=self.config["model_complexity"])  # fmt: skip
            self._mp_hands = (solutions.hands.Hands(static_image_mode=True, max_num_hands=2)
                              if self.config["hands"] else None)  # fmt: skip
            self._mp_face = (solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)
                             if self.config["face"] else None)  # fmt: skip
            self._face_ids = sorted(
                {i for edge in solutions.face_mesh.FACEMESH_CONTOURS for i in edge}
            )
            return []
        from annotators.nets.openpose import build_body, build_hand
        from annotators.openpose import BODY_WEIGHTS, HAND_WEIGHTS

        self._body, body_id = self.load_torch(BODY_WEIGHTS, build_body)
        loaded = [body_id]
        if self.config["hands"]:
            self._hand, hand_id = self.load_torch(HAND_WEIGHTS, build_hand)
            loaded.append(hand_id)
        return loaded

    def info(self) -> dict[str, Any]:
        return {**super().info(), "face_subset": FACE_SUBSET if self.config["face"] else None}

    def _annotate_batch(self, images: list[np.ndarray], rngs: list) -> list[Annotation]:
        self.load()
        if self.config["backend"] == "mediapipe":
            people = [self._mediapipe_tasks(rgb) for rgb in images]
        elif self.config["backend"] == "mediapipe-bundled":
            people = [self._mediapipe(rgb) for rgb in images]
        elif self.config["backend"] == "dwpose":
            people = self._dwpose.people(images, self.config["hands"], self.config["face"])
        else:
            people = [None] * len(images)
            for group in groups_by_size(images, self.network_batch_size()):
                for index, found in zip(
                    group, self._openpose([images[i] for i in group]), strict=True
                ):
                    people[index] = found
        return [self._result(image, found) for image, found in zip(images, people, strict=True)]

    def _result(self, image: np.ndarray, people: list[dict]) -> Annotation:
        shape = image.shape[:2]
        most = max((sum(p is not None for p in person["body"]) for person in people), default=0)
        draw = draw_wholebody if self.config["backend"] == "dwpose" else draw_people
        return Annotation(
            maps={"pose": draw(shape, people, self.config["stick_rule"])},
            data={"pose": openpose_json(shape, people)},
            stats={"pose_people": float(len(people)), "pose_keypoints": float(most)},
        )

    def _mediapipe(self, rgb: np.ndarray) -> list[dict]:
        """One person (MediaPipe's bundled pose finds the most prominent one), or none."""
        found = self._mp_pose.process(rgb).pose_landmarks
        hands, faces = [], []
        if found is not None and self._mp_hands is not None:
            result = self._mp_hands.process(rgb)
            hands = [(hand.landmark, handed.classification[0].label) for hand, handed in
                     zip(result.multi_hand_landmarks or [], result.multi_handedness or [],
                         strict=True)]  # fmt: skip
        if found is not None and self._mp_face is not None:
            faces = [
                face.landmark for face in self._mp_face.process(rgb).multi_face_landmarks or []
            ]
        marks = [] if found is None else found.landmark
        return mediapipe_people(marks, hands, faces, self._face_ids, rgb.shape[:2],
                                self.config["min_confidence"])  # fmt: skip

    def _mediapipe_tasks(self, rgb: np.ndarray) -> list[dict]:
        """As :meth:`_mediapipe`, from the Tasks API's PoseLandmarker (+ hands, face)."""
        picture = mp_image(rgb)
        pose = self._tasks["pose"].detect(picture)
        if not pose.pose_landmarks:
            return []
        hands, face = (self._tasks[k].detect(picture) if k in self._tasks else None
                       for k in ("hands", "face"))  # fmt: skip
        return people_from_tasks(pose, hands, face, self._face_ids, rgb.shape[:2],
                                 self.config["min_confidence"])  # fmt: skip

    def _openpose(self, images: list[np.ndarray]) -> list[list[dict]]:
        """People in each same-size image: body net, peaks, PAF grouping, then hands."""
        import torch

        from annotators.openpose import (
            BOX_SIZE,
            PEAK_THRESHOLD,
            find_peaks,
            group_people,
            network_input,
            to_image_size,
        )  # fmt: skip

        shape = images[0].shape[:2]
        scale = 0.5 * BOX_SIZE / shape[0]  # ControlNet's single scale: the image at 184 px high
        inputs = [network_input(image, scale) for image in images]
        batch = torch.from_numpy(np.stack([x for x, _ in inputs])).to(self.device)
        with torch.no_grad():
            pafs, heats = self._body(batch)
        results = []
        for k, image in enumerate(images):
            valid = inputs[k][1]
            heat = to_image_size(heats[k].float().cpu().numpy(), valid, shape)
            paf = to_image_size(pafs[k].float().cpu().numpy(), valid, shape)
            peaks = [find_peaks(heat[:, :, part], PEAK_THRESHOLD) for part in range(18)]
            people = group_people(peaks, paf, shape[0])
            if self.config["hands"]:
                for person in people:
                    person.update(self._hands(image, person["body"]))
            results.append(people)
        return results

    def _hands(self, rgb: np.ndarray, body: list) -> dict[str, list]:
        """21 keypoints per hand box, as ControlNet 1.1: the crop blurred (sigma 0.8), run at 4
        box sizes, heatmaps averaged at 128x128, largest blob per part (see ``hand_peaks``)."""
        import cv2
        import torch

        from annotators.openpose import (
            BOX_SIZE,
            HAND_BLUR,
            HAND_MAP_SIZE,
            HAND_SCALES,
            hand_boxes,
            hand_peaks,
            network_input,
            to_image_size,
        )  # fmt: skip

        hands = {}
        for side, x, y, width in hand_boxes(body, rgb.shape[:2]):
            crop = rgb[y : y + width, x : x + width]
            blurred = cv2.GaussianBlur(crop, (0, 0), HAND_BLUR)
            average = np.zeros((HAND_MAP_SIZE, HAND_MAP_SIZE, 22))
            for scale in HAND_SCALES:
                side_px = int(scale * BOX_SIZE)
                tensor, valid = network_input(blurred, (side_px, side_px))
                with torch.no_grad():
                    heat = self._hand(torch.from_numpy(tensor[None]).to(self.device))[0]
                heat = heat.float().cpu().numpy()
                average += to_image_size(heat, valid, (HAND_MAP_SIZE, HAND_MAP_SIZE)) / len(
                    HAND_SCALES
                )
            points = hand_peaks(average, crop.shape[:2])
            hands[f"{side}_hand"] = [
                None if p is None else (float(p[0] + x), float(p[1] + y), p[2]) for p in points
            ]
        return hands


def people_from_tasks(pose: Any, hands: Any, face: Any, face_ids: list[int],
                      shape: tuple[int, int], threshold: float) -> list[dict]:  # fmt: skip
    """The person of a Tasks API ``PoseLandmarkerResult`` with the ``HandLandmarkerResult``
    and ``FaceLandmarkerResult`` of the same image (None when not asked for)."""
    if not pose.pose_landmarks:
        return []
    sides = [] if hands is None else [
        (marks, handed[0].category_name)
        for marks, handed in zip(hands.hand_landmarks, hands.handedness, strict=True)
    ]  # fmt: skip
    faces = [] if face is None else face.face_landmarks
    return mediapipe_people(pose.pose_landmarks[0], sides, faces, face_ids, shape, threshold)


def mediapipe_people(marks: Sequence[Any], hands: Sequence[tuple[Sequence[Any], str]],
                     faces: Sequence[Sequence[Any]], face_ids: list[int],
                     shape: tuple[int, int], threshold: float) -> list[dict]:  # fmt: skip
    """One OpenPose person from MediaPipe landmarks (either API: objects with x, y, visibility):
    33 pose landmarks, (21 landmarks, handedness label) per hand, face meshes; [] if no body."""
    body = [None if i is None or not marks else landmark(marks[i], shape, threshold)
            for i in MEDIAPIPE_TO_OPENPOSE]  # fmt: skip
    if body[2] is not None and body[5] is not None:  # neck = midpoint of the shoulders
        body[1] = ((body[2][0] + body[5][0]) / 2, (body[2][1] + body[5][1]) / 2,
                   min(body[2][2], body[5][2]))  # fmt: skip
    if not any(body):
        return []
    person: dict[str, Any] = {"body": body}
    for points, label in hands:
        # MediaPipe labels hands as in a mirrored selfie: its "Left" is the person's right
        side = "right_hand" if label == "Left" else "left_hand"
        person[side] = [landmark(p, shape, 0.0, visibility=False) for p in points]
    if faces:
        person["face"] = [landmark(faces[0][i], shape, 0.0, visibility=False) for i in face_ids]
    return [person]
