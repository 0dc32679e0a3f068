"""MediaPipe's Tasks API (PoseLandmarker, HandLandmarker, FaceLandmarker) for ``pose`` and ``face``.

Current mediapipe releases (0.10.30 and later) ship no models: each task reads a ``.task``
file (a zip of TF Lite models plus metadata) that Google publishes. Here those files are
weights like any other (:mod:`annotators.weights`): ``--weights-dir``, ``$HINTSET_WEIGHTS_DIR``,
or a Hugging Face repo named with ``task_repo`` (its cache, then the hub); the sha256 of
the file used goes into the manifest. The older bundled route (mediapipe 0.10.21's
``mp.solutions``, models inside the wheel) is the ``mediapipe-bundled`` backend.
"""

from __future__ import annotations

import atexit
import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from annotators.weights import WeightsError, WeightsFile, identity, resolve_all

PUBLISHED = "https://storage.googleapis.com/mediapipe-models"


def _published(task: str, model: str, size: str) -> WeightsFile:
    """A ``.task`` file as Google publishes it (no Hugging Face repo: ``repo_id`` empty)."""
    filename = f"{model}.task"
    source = f"{PUBLISHED}/{task}/{model}/float16/1/{filename}"
    return WeightsFile(filename, repo_id="", source=source, size_hint=size)


POSE_TASKS = {  # model_complexity -> pose landmarker (the same BlazePose GHUM 3D models)
    0: _published("pose_landmarker", "pose_landmarker_lite", "~6 MB"),
    1: _published("pose_landmarker", "pose_landmarker_full", "~9 MB"),
    2: _published("pose_landmarker", "pose_landmarker_heavy", "~30 MB"),
}
HAND_TASK = _published("hand_landmarker", "hand_landmarker", "~8 MB")
FACE_TASK = _published("face_landmarker", "face_landmarker", "~4 MB")


def task_files(model_complexity: int, hands: bool = False, face: bool = False) -> list[WeightsFile]:
    """The ``.task`` files one pose configuration loads (pose model first)."""
    files = [POSE_TASKS[model_complexity]]
    return files + [HAND_TASK] * hands + [FACE_TASK] * face


def in_repo(specs: Sequence[WeightsFile], repo: str) -> list[WeightsFile]:
    """``specs`` looked up in the Hugging Face repo ``repo`` too (none: local folders only)."""
    return [dataclasses.replace(s, repo_id=repo) if repo else s for s in specs]


def load_tasks(specs: Sequence[WeightsFile], weights_dir: str | None,
               options: Sequence[dict[str, Any]]) -> tuple[list[Any], list[dict]]:  # fmt: skip
    """(landmarkers, identities): every file resolved first (one WeightsError line naming all
    missing ones), then one IMAGE-mode landmarker per file with its ``options``."""
    paths = resolve_all(specs, weights_dir or None)
    from mediapipe.tasks.python import BaseOptions, vision

    kinds = {"pose": vision.PoseLandmarker, "hand": vision.HandLandmarker,
             "face": vision.FaceLandmarker}  # fmt: skip
    made = []
    for spec, path, extra in zip(specs, paths, options, strict=True):
        cls = kinds[spec.filename.split("_")[0]]
        settings = getattr(vision, f"{cls.__name__}Options")(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.IMAGE,
            **extra,
        )
        try:
            made.append(cls.create_from_options(settings))
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign file: one line
            message = " ".join(str(err).split())[:200]
            raise WeightsError(f"cannot load {spec.filename} ({path}): {message}") from None
        close_at_exit(made[-1])
    return made, [identity(s, p) for s, p in zip(specs, paths, strict=True)]


def close_at_exit(task: Any) -> None:
    """Close ``task`` while mediapipe 1.x can still do it: its close runs on a thread pool that
    Python shuts down with threading's exit hooks, before ``atexit`` and ``__del__`` (which then
    print a traceback). Hooks registered later run first, so this one precedes that pool's."""
    register = getattr(threading, "_register_atexit", atexit.register)
    register(task.close)


def mp_image(rgb: np.ndarray) -> Any:
    """An ``mp.Image`` (SRGB) of an RGB uint8 array."""
    import mediapipe as mp

    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))


def face_contour_edges() -> list[tuple[int, int]]:
    """FaceMesh contour edges (oval, eyes, eyebrows, lips) as the Tasks API lists them."""
    from mediapipe.tasks.python.vision import FaceLandmarksConnections

    return [(c.start, c.end) for c in FaceLandmarksConnections.FACE_LANDMARKS_CONTOURS]
