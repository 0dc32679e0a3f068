"""``face``: the MediaPipe face-mesh map of controlnet_aux's ``MediapipeFaceDetector``.

Two routes to the same 478 landmarks: ``backend=mediapipe`` (default) runs the Tasks API's
FaceLandmarker with the published ``face_landmarker.task`` (a weights file, see
:mod:`annotators.mediapipe_tasks`); ``mediapipe-bundled`` runs mediapipe 0.10.21's FaceMesh,
whose model ships in the wheel (offline; the ``pose-bundled`` extra). Drawing facts
(controlnet_aux 0.0.10, ``mediapipe_face_common.py``), written here directly in RGB:
- FaceMesh with ``refine_landmarks`` (iris points), ``max_faces`` and ``min_confidence``;
  faces whose landmark box is smaller than ``min_face_size`` (64) pixels on its short side
  are dropped;
- contours as 2 px ``cv2.line`` segments: face oval (10,200,10), lips (10,180,10), the
  person's left eye (10,200,180) and eyebrow (10,220,180), right eye (180,200,10) and
  eyebrow (180,220,10); edge order as in mediapipe's ``FACEMESH_*`` sets;
- pupils as 4x4 squares at iris centres 468 (right, (250,200,10)) and 473 (left, (10,200,250));
- landmarks map to pixels as mediapipe's ``drawing_utils``: ``min(floor(x*W), W-1)``, only
  for 0 <= x, y <= 1; pupils use ``int(x*W)`` and are skipped at x or y >= 1.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from annotators.base import Annotation, Annotator, AnnotatorError, Param
from annotators.mediapipe_tasks import FACE_TASK, in_repo, load_tasks, mp_image
from annotators.quiet import filter_native_logs
from annotators.registry import register

THICKNESS = 2
PUPIL_HALF = 2
#: (mediapipe FACEMESH_* set, RGB colour), in controlnet_aux's drawing order
CONTOUR_COLOURS = (
    ("FACEMESH_FACE_OVAL", (10, 200, 10)),
    ("FACEMESH_LEFT_EYE", (10, 200, 180)),
    ("FACEMESH_LEFT_EYEBROW", (10, 220, 180)),
    ("FACEMESH_RIGHT_EYE", (180, 200, 10)),
    ("FACEMESH_RIGHT_EYEBROW", (180, 220, 10)),
    ("FACEMESH_LIPS", (10, 180, 10)),
)
#: iris centre landmark -> RGB colour of its pupil square
PUPIL_COLOURS = {468: (250, 200, 10), 473: (10, 200, 250)}


def contour_spec(bundled: bool = True) -> dict[tuple[int, int], tuple[int, int, int]]:
    """Edge -> RGB colour, in drawing order (first set an edge appears in fixes its place);
    the edge sets of mediapipe 0.10.21's ``face_mesh`` or of the Tasks API (same edges)."""
    spec: dict[tuple[int, int], tuple[int, int, int]] = {}
    for set_name, colour in CONTOUR_COLOURS:
        if bundled:
            from mediapipe.python.solutions import face_mesh

            edges = list(getattr(face_mesh, set_name))
        else:
            from mediapipe.tasks.python.vision import FaceLandmarksConnections

            tasks_name = set_name.replace("FACEMESH_", "FACE_LANDMARKS_")
            edges = [(c.start, c.end) for c in getattr(FaceLandmarksConnections, tasks_name)]
        for edge in edges:
            spec[edge] = colour
    return spec


def _valid(value: float) -> bool:
    return (value > 0 or math.isclose(0, value)) and (value < 1 or math.isclose(1, value))


def _field(point: Any, name: str) -> float | None:
    """A landmark's optional field: unset is None (protobuf ``HasField``, Tasks dataclass None)."""
    if hasattr(point, "HasField"):
        return getattr(point, name) if point.HasField(name) else None
    return getattr(point, name, None)


def _hidden(point: Any, visibility: float) -> bool:
    """True when a landmark carries a visibility/presence that mediapipe would not draw."""
    seen, present = _field(point, "visibility"), _field(point, "presence")
    return (seen is not None and seen < visibility) or (present is not None and present < 0.5)


def face_size(points: Any, height: int, width: int) -> float:
    """Short side in pixels of the box around all landmarks of one face."""
    xs = [p.x for p in points]
    ys = [p.y for p in points]
    return min((max(xs) - min(xs)) * width, (max(ys) - min(ys)) * height)


def draw_face(canvas: np.ndarray, points: Any, spec: dict) -> None:
    """Draw one face's contours and pupils onto an RGB canvas (in place)."""
    height, width = canvas.shape[:2]
    pixels: dict[int, tuple[int, int]] = {}
    for index, point in enumerate(points):
        if _hidden(point, 0.5) or not (_valid(point.x) and _valid(point.y)):
            continue
        pixels[index] = (
            min(math.floor(point.x * width), width - 1),
            min(math.floor(point.y * height), height - 1),
        )
    for (start, end), colour in spec.items():
        if start in pixels and end in pixels:
            cv2.line(canvas, pixels[start], pixels[end], colour, THICKNESS)
    for index, colour in PUPIL_COLOURS.items():
        if index >= len(points):
            continue
        point = points[index]
        if _hidden(point, 0.9) or not (0 <= point.x < 1 and 0 <= point.y < 1):
            continue
        x, y = int(width * point.x), int(height * point.y)
        # slicing as the reference does: a square starting above/left of the image draws nothing
        canvas[y - PUPIL_HALF : y + PUPIL_HALF, x - PUPIL_HALF : x + PUPIL_HALF] = colour


@register
class Face(Annotator):
    """MediaPipe face mesh contours and pupils on black (RGB), as controlnet_aux draws them."""

    name = "face"
    version = "1"
    outputs = ("face",)
    stats = ("faces",)
    description = "MediaPipe face-mesh contours + pupils on black (RGB), controlnet_aux colours"
    params = (
        Param(
            "backend",
            "mediapipe",
            "Tasks API + face_landmarker.task, or the bundled model",
            choices=("mediapipe", "mediapipe-bundled"),
        ),  # fmt: skip
        Param("task_repo", "", "mediapipe: Hugging Face repo holding face_landmarker.task, if any"),
        Param("weights_dir", "", "folder with face_landmarker.task (else $HINTSET_WEIGHTS_DIR)"),
        Param("max_faces", 1, "most faces drawn per image (controlnet_aux default 1)", minimum=1),
        Param("min_confidence", 0.5, "FaceMesh min_detection_confidence", maximum=1.0),
        Param("min_face_size", 64, "drop faces whose landmark box is smaller (pixels, short side)"),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._mesh: Any = None
        self._spec: dict | None = None
        self._identity: list[dict[str, Any]] = []

    @classmethod
    def weights_files(cls) -> list[Any]:
        return [FACE_TASK]

    @classmethod
    def weights_by_backend(cls) -> dict[str, list[Any]]:
        """The Tasks route reads face_landmarker.task; the bundled model ships in its wheel."""
        return {"mediapipe": [FACE_TASK], "mediapipe-bundled": []}

    def _task_files(self) -> list[Any]:
        if self.config["backend"] != "mediapipe":
            return []
        return in_repo([FACE_TASK], self.config["task_repo"])

    def check_ready(self) -> None:
        """The package, then face_landmarker.task present (or fetched from ``task_repo``) and
        hash-checked; loads nothing."""
        from annotators.weights import resolve_all

        super().check_ready()
        resolve_all(self._task_files(), self.config["weights_dir"] or None)

    def weights_identity(self) -> list[dict[str, Any]]:
        return list(self._identity)

    def requirements(self) -> tuple[tuple[str, str], ...]:
        """mediapipe: its Tasks API (the ``pose`` extra) or 0.10.21's ``mp.solutions``
        (``pose-bundled``)."""
        if self.config["backend"] == "mediapipe-bundled":
            return (("mediapipe.python.solutions", "pose-bundled"),)
        return (("mediapipe", "pose"),)

    def load(self) -> None:
        """Create the FaceLandmarker (Tasks) or mediapipe 0.10.21's bundled FaceMesh, once."""
        if self._mesh is not None:
            return
        filter_native_logs()  # absl / TF Lite lines would break progress bars
        cfg = self.config
        if cfg["backend"] == "mediapipe":
            options = {"num_faces": cfg["max_faces"], "min_face_detection_confidence":
                       cfg["min_confidence"]}  # fmt: skip
            tasks, self._identity = load_tasks(self._task_files(), cfg["weights_dir"], [options])
            self._mesh, self._spec = tasks[0], contour_spec(bundled=False)
            return
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as err:
            raise AnnotatorError(f"face: needs mediapipe 0.10.21 ({err})") from None
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=self.config["max_faces"],
            refine_landmarks=True,
            min_detection_confidence=self.config["min_confidence"],
        )
        self._spec = contour_spec()

    def landmarks(self, rgb: np.ndarray) -> list[Any]:
        """Landmark lists of the faces kept (detected, then filtered by size)."""
        self.load()
        if self.config["backend"] == "mediapipe":
            found = self._mesh.detect(mp_image(rgb)).face_landmarks
        else:
            result = self._mesh.process(np.ascontiguousarray(rgb)).multi_face_landmarks or []
            found = [face.landmark for face in result]
        height, width = rgb.shape[:2]
        minimum = self.config["min_face_size"]
        return [face for face in found if minimum <= 0 or face_size(face, height, width) >= minimum]

    def _annotate(self, rgb: np.ndarray, rng: np.random.Generator) -> Annotation:
        faces = self.landmarks(rgb)
        canvas = np.zeros_like(rgb)
        for face in faces:
            draw_face(canvas, face, self._spec)
        return Annotation(maps={"face": canvas}, stats={"faces": float(len(faces))})
