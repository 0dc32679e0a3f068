"""The bundled-model route: ``backend=mediapipe-bundled`` of ``pose`` and ``face`` (mediapipe
0.10.21's ``mp.solutions``, models inside the wheel, offline). These run in the environment of
the ``pose-bundled`` extra (scripts/test.sh makes it) and skip where mediapipe is current; there
the Tasks route (tests/test_pose.py) is the default."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from annotators import create
from annotators.face import PUPIL_COLOURS, contour_spec
from pipeline.decode import load_image, resize_short_side
from tests.conftest import run_cli

pytest.importorskip("mediapipe.python.solutions", reason="needs the pose-bundled environment")

BUNDLED = ("-p", "pose.backend=mediapipe-bundled")
#: photos in tests/data/photos with one clearly visible face (FaceMesh finds it at 512)
FACE_PHOTOS = (3, 8, 10, 11)


@pytest.fixture(scope="module")
def face_photos(photo_paths) -> list[np.ndarray]:
    return [resize_short_side(load_image(photo_paths[i]), 512) for i in FACE_PHOTOS]


@pytest.fixture(scope="module")
def mediapipe_results(photo_paths):
    annotator = create("pose", backend="mediapipe-bundled")
    images = [resize_short_side(load_image(p), 512) for p in photo_paths]
    return images, [annotator.annotate(image) for image in images]


def test_mediapipe_finds_people_in_real_photos(mediapipe_results):
    images, results = mediapipe_results
    with_person = 0
    for image, result in zip(images, results, strict=True):
        height, width = image.shape[:2]
        people = result.data["pose"]["people"]
        assert len(people) <= 1  # MediaPipe's bundled pose model finds one person
        assert result.maps["pose"].shape == image.shape
        assert bool(result.maps["pose"].any()) == bool(people)  # drawn exactly where found
        assert result.stats["pose_people"] == len(people)
        for person in people:
            flat = person["pose_keypoints_2d"]
            present = [(flat[i], flat[i + 1]) for i in range(0, 54, 3) if flat[i + 2] > 0]
            assert all(0 <= x < width and 0 <= y < height for x, y in present)
            with_person += len(present) >= 10
    assert with_person >= 14, f"a person with >= 10 keypoints in only {with_person} of 20 photos"


def test_mediapipe_is_deterministic(mediapipe_results):
    images, results = mediapipe_results
    again = create("pose", backend="mediapipe-bundled").annotate(images[0])
    assert np.array_equal(again.maps["pose"], results[0].maps["pose"])
    assert again.data == results[0].data


def test_mediapipe_hands_and_face(photo_paths):
    image = resize_short_side(load_image(photo_paths[1]), 512)
    result = create("pose", backend="mediapipe-bundled", hands=True, face=True).annotate(image)
    person = result.data["pose"]["people"][0]
    assert len(person["face_keypoints_2d"]) % 3 == 0 and len(person["face_keypoints_2d"]) > 100
    for side in ("hand_left_keypoints_2d", "hand_right_keypoints_2d"):
        assert len(person[side]) in (0, 63)


def test_annotate_writes_pose_png_and_json(photo_paths, tmp_path, cli):
    proc = cli(
        "annotate", *photo_paths[:3], "-o", tmp_path, "-a", "pose", *BUNDLED, "-q", "-w", "1"
    )
    assert proc.returncode == 0, proc.stderr
    for path in photo_paths[:3]:
        data = json.loads((tmp_path / f"{path.stem}.pose.json").read_text())
        image = cv2.imread(str(tmp_path / f"{path.stem}.pose.png"))
        assert (data["canvas_height"], data["canvas_width"]) == image.shape[:2]


def test_build_writes_pose_png_and_json_and_counts_no_person(photos_dir, tmp_path, cli):
    import webdataset as wds

    out = tmp_path / "ds"
    proc = cli("build", photos_dir, "-o", out, "-a", "pose", *BUNDLED, "--resolution", "256",
               "--shard-size", "10", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    samples = list(wds.WebDataset([str(p) for p in sorted((out / "shards").glob("*.tar"))],
                                  shardshuffle=False))  # fmt: skip
    assert len(samples) == 20 and all("pose.png" in s and "pose.json" in s for s in samples)
    manifest = json.loads((out / "manifest.json").read_text())
    people = manifest["totals"]["stats"]["pose_people"]
    empty = sum(not json.loads(s["pose.json"])["people"] for s in samples)
    assert people["zeros"] == empty  # images with no person found, for filtering
    inspect = cli("inspect", out, check=True).stdout
    assert "pose_people" in inspect and f"zeros {empty}/20" in inspect


def test_face_finds_faces_in_real_photos(face_photos):
    face = create("face", backend="mediapipe-bundled")
    for image in face_photos:
        result = face.annotate(image)
        assert result.stats["faces"] == 1.0
        drawn = result.maps["face"]
        assert drawn.shape == image.shape
        assert 0.001 < np.mean(drawn.any(axis=2)) < 0.05
        colours = {tuple(c) for c in drawn.reshape(-1, 3)} - {(0, 0, 0)}
        allowed = set(contour_spec().values()) | set(PUPIL_COLOURS.values())
        assert colours <= allowed and len(colours) >= 6


def test_face_equals_mediapipe_drawing_with_controlnet_aux_specs(face_photos):
    """The reference draws with mediapipe's draw_landmarks (BGR colours) and reverses channels."""
    from mediapipe.framework.formats import landmark_pb2
    from mediapipe.python.solutions import drawing_utils
    from mediapipe.python.solutions.drawing_styles import DrawingSpec

    face = create("face", backend="mediapipe-bundled")
    bgr = {  # controlnet_aux's DrawingSpec colours (BGR)
        "FACEMESH_FACE_OVAL": (10, 200, 10),
        "FACEMESH_LEFT_EYE": (180, 200, 10),
        "FACEMESH_LEFT_EYEBROW": (180, 220, 10),
        "FACEMESH_RIGHT_EYE": (10, 200, 180),
        "FACEMESH_RIGHT_EYEBROW": (10, 220, 180),
        "FACEMESH_LIPS": (10, 180, 10),
    }
    from mediapipe.python.solutions import face_mesh

    spec = {}
    for set_name, colour in bgr.items():
        for edge in getattr(face_mesh, set_name):
            spec[edge] = DrawingSpec(color=colour, thickness=2, circle_radius=1)
    for image in face_photos:
        (points,) = face.landmarks(image)
        landmarks = landmark_pb2.NormalizedLandmarkList(landmark=points)
        canvas = np.zeros_like(image)
        drawing_utils.draw_landmarks(
            canvas, landmarks, connections=spec.keys(), landmark_drawing_spec=None,
            connection_drawing_spec=spec,
        )  # fmt: skip
        height, width = image.shape[:2]
        for index, colour in ((468, (10, 200, 250)), (473, (250, 200, 10))):
            point = landmarks.landmark[index]
            x, y = int(width * point.x), int(height * point.y)
            canvas[y - 2 : y + 2, x - 2 : x + 2] = colour
        assert np.array_equal(face(image), canvas[:, :, ::-1])


def test_face_filters_small_faces_and_draws_black_without_faces(face_photos):
    assert not create("face", backend="mediapipe-bundled", min_face_size=100000)(
        face_photos[0]
    ).any()
    empty = create("face", backend="mediapipe-bundled").annotate(np.zeros((64, 80, 3), np.uint8))
    assert empty.stats["faces"] == 0.0 and not empty.maps["face"].any()


def test_mediapipe_logs_do_not_reach_the_terminal(tmp_path, photo_paths):
    folder = tmp_path / "people"
    folder.mkdir()
    for path in photo_paths[:4]:
        shutil.copy(path, folder / path.name)
    proc = run_cli(
        "annotate", folder, "-o", tmp_path / "out", "-a", "pose", *BUNDLED, "-w", "1", "-q"
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("4 done"), proc.stderr
    rows = [np.asarray(Image.open(p)) for p in (tmp_path / "out").glob("*.pose.png")]
    assert len(rows) == 4 and any(r.any() for r in rows)  # pose still ran


def test_tasks_route_gives_the_bundled_keypoints(mediapipe_results, tmp_path):
    """The Tasks API with a .task assembled from the same bundled models finds the same person
    in the same photos; keypoints agree to a few pixels (the two graphs crop and refine
    differently; benchmarks/pose_tasks_vs_bundled.py prints the figures)."""
    from tests.mediapipe_task import write_pose_task

    write_pose_task(tmp_path)
    tasks = create("pose", weights_dir=str(tmp_path))
    assert tasks.config["backend"] == "mediapipe"
    images, results = mediapipe_results
    distances = []
    for image, bundled in zip(images, results, strict=True):
        found = tasks.annotate(image)
        people, expected = found.data["pose"]["people"], bundled.data["pose"]["people"]
        assert len(people) == len(expected)
        for a, b in zip(people, expected, strict=True):
            ka = np.array(a["pose_keypoints_2d"]).reshape(18, 3)
            kb = np.array(b["pose_keypoints_2d"]).reshape(18, 3)
            seen = (ka[:, 2] > 0) & (kb[:, 2] > 0)
            distances += list(np.hypot(*(ka[seen, :2] - kb[seen, :2]).T))
    assert [w["file"] for w in tasks.weights_identity()] == ["pose_landmarker_full.task"]
    assert len(distances) > 150 and np.median(distances) < 1.0 and max(distances) < 16
