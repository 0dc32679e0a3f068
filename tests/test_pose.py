"""Pose: OpenPose-style drawing, the MediaPipe backend on real photos, the OpenPose networks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotators import create
from annotators.pose_draw import (
    COLORS,
    HAND_EDGES,
    LIMB_SEQUENCE,
    draw_people,
    draw_wholebody,
    hand_edge_color,
    limb_color,
    openpose_json,
)
from annotators.weights import WeightsError, sha256_file
from pipeline.decode import load_image, resize_short_side

#: a standing person facing the camera, 18 keypoints (x, y) on a 200x300 canvas
STANDING = [(100, 40), (100, 70), (80, 70), (70, 110), (65, 150), (120, 70), (130, 110),
            (135, 150), (88, 150), (86, 200), (85, 250), (112, 150), (114, 200), (115, 250),
            (95, 35), (105, 35), (90, 38), (110, 38)]  # fmt: skip


def body(points, missing=()):
    return [None if i in missing else (float(x), float(y), 0.9) for i, (x, y) in enumerate(points)]


def test_joint_centres_have_the_exact_keypoint_colour():
    canvas = draw_people((300, 200), [{"body": body(STANDING)}])
    assert canvas.shape == (300, 200, 3) and canvas.dtype == np.uint8
    for i, (x, y) in enumerate(STANDING):
        if i in (14, 15, 16, 17):  # face points overlap each other; checked separately below
            continue
        assert tuple(canvas[y, x]) == COLORS[i], i


def test_limbs_have_the_shaded_limb_colour():
    canvas = draw_people((300, 200), [{"body": body(STANDING)}])
    for limb in (3, 4, 7, 8, 10, 11):  # arms and legs: long, away from other limbs
        a, b = (STANDING[k - 1] for k in LIMB_SEQUENCE[limb])
        mid = ((a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
        assert tuple(canvas[mid[1], mid[0]]) == limb_color(limb), limb
        assert limb_color(limb) == tuple(int(c * 0.6) for c in COLORS[limb])


def test_absent_keypoints_draw_nothing():
    assert not draw_people((300, 200), []).any()
    only_nose = draw_people((300, 200), [{"body": body(STANDING, missing=set(range(1, 18)))}])
    ys, xs = np.nonzero(only_nose.any(axis=2))
    assert abs(xs.mean() - 100) < 1 and abs(ys.mean() - 40) < 1 and len(xs) < 60  # one dot
    no_right_arm = draw_people((300, 200), [{"body": body(STANDING, missing={3, 4})}])
    assert not no_right_arm[130, 67].any()  # where the right forearm would be


@pytest.mark.parametrize(
    ("size", "rule", "stick", "joint"),
    [(512, "fixed", 9, 9), (1024, "fixed", 9, 9), (499, "xinsir", 9, 9), (512, "xinsir", 17, 17),
     (1024, "xinsir", 25, 25), (2048, "xinsir", 33, 33), (6000, "xinsir", 57, 57)],
)  # fmt: skip
def test_stick_rule_fixed_is_controlnet11_and_xinsir_scales_with_resolution(
    size, rule, stick, joint
):
    """xinsir's draw_bodypose: half-width and radius 4 x (1 below 500 px, 2 below 1000, 3 below
    2000, ..., 7 from 5000); ControlNet 1.1: 4 px at any size (a 9 px wide stick, 9 px dots)."""
    people = [{"body": [None, (size * 0.3, size / 2, 0.9), (size * 0.7, size / 2, 0.9)]
               + [None] * 15}]  # fmt: skip
    for draw in (draw_people, draw_wholebody):
        canvas = draw((size, size), people, rule)
        middle = canvas[:, size // 2]
        assert np.count_nonzero(middle.any(axis=1)) == stick  # the neck -> shoulder limb
        assert {tuple(c) for c in middle[middle.any(axis=1)]} == {limb_color(0)}
        at_joint = canvas[:, int(size * 0.7)]
        assert np.count_nonzero(np.all(at_joint == COLORS[2], axis=1)) == joint


def test_xinsir_draws_person_by_person_controlnet11_all_limbs_first():
    """A second person's limb over the first one's joint: under it with ControlNet 1.1's order
    (all limbs, then all joints), over it with xinsir's (limbs then joints, person by person)."""
    first = [None, (100.0, 100.0, 0.9)] + [None] * 16  # only a neck: one joint
    second = [None, (60.0, 100.0, 0.9), (140.0, 100.0, 0.9)] + [None] * 15  # a limb across it
    people = [{"body": first}, {"body": second}]
    assert tuple(draw_people((200, 200), people)[100, 100]) == COLORS[1]
    assert tuple(draw_people((200, 200), people, "xinsir")[100, 100]) == limb_color(0)


def test_xinsir_union_preset_selects_the_scaled_sticks():
    from annotators.presets import get_preset

    params = get_preset("xinsir-union-sdxl").annotators["pose"]
    assert params["stick_rule"] == "xinsir"
    assert create("pose", **params).config["stick_rule"] == "xinsir"
    assert create("pose").config["stick_rule"] == "fixed"
    with pytest.raises(ValueError, match="stick_rule"):
        create("pose", stick_rule="thick")


def test_hands_use_rainbow_edges_and_face_white_dots():
    hand = [(20 + 8 * (i // 4), 20 + 6 * (i % 4) + (i > 0) * 10, 1.0) for i in range(21)]
    canvas = draw_people((120, 120), [{"body": [None] * 18, "right_hand": hand,
                                       "face": [(100.0, 100.0, 1.0)]}])  # fmt: skip
    assert tuple(canvas[100, 100]) == (255, 255, 255)
    colours = {tuple(c) for c in canvas.reshape(-1, 3)}
    assert hand_edge_color(0) == (255, 0, 0) and len({hand_edge_color(i) for i in range(20)}) == 20
    assert any(hand_edge_color(i) in colours for i in range(len(HAND_EDGES)))


def test_json_is_openpose_format():
    data = openpose_json((300, 200), [{"body": body(STANDING, missing={4})}])
    person = data["people"][0]
    assert (data["canvas_width"], data["canvas_height"]) == (200, 300)
    assert len(person["pose_keypoints_2d"]) == 54
    assert person["pose_keypoints_2d"][12:15] == [0.0, 0.0, 0.0]  # keypoint 4 absent
    assert person["pose_keypoints_2d"][:3] == [100.0, 40.0, 0.9]
    assert person["hand_left_keypoints_2d"] == [] and person["face_keypoints_2d"] == []


def test_face_needs_mediapipe():
    with pytest.raises(ValueError, match="face points need backend=mediapipe"):
        create("pose", backend="openpose", face=True)


def paf_for(people: list[list], shape) -> np.ndarray:
    """Synthetic part affinity fields: unit vectors along every limb of every person."""
    from annotators.openpose import PAF_CHANNELS

    pafs = np.zeros((*shape, 38), np.float32)
    for points in people:
        for limb, (ka, kb) in enumerate(LIMB_SEQUENCE):
            (x1, y1), (x2, y2) = points[ka - 1], points[kb - 1]
            direction = np.array([x2 - x1, y2 - y1], np.float32)
            direction /= np.linalg.norm(direction)
            mask = np.zeros(shape, np.uint8)
            cv2.line(mask, (x1, y1), (x2, y2), 1, thickness=5)
            for channel, value in zip(PAF_CHANNELS[limb], direction, strict=True):
                pafs[:, :, channel][mask > 0] = value
    return pafs


def test_paf_grouping_separates_two_people():
    from annotators.openpose import group_people

    second = [(x + 250, y + 20) for x, y in STANDING]
    shape = (320, 460)
    peaks = [[(*STANDING[k], 0.9), (*second[k], 0.8)] for k in range(18)]
    people = group_people(peaks, paf_for([STANDING, second], shape), shape[0])
    assert len(people) == 2
    found = sorted([[tuple(map(int, p[:2])) for p in person["body"]] for person in people])
    assert found == sorted([STANDING, second])


@pytest.fixture(scope="module")
def openpose_weights(tmp_path_factory):
    from tests.weights import write_openpose

    folder = tmp_path_factory.mktemp("openpose")
    write_openpose(folder)
    return folder


def test_openpose_runs_full_pipeline_with_published_layout(
    openpose_weights, photo_paths, monkeypatch
):
    import torch

    monkeypatch.setenv("HINTSET_OFFLINE", "1")
    state = torch.load(openpose_weights / "body_pose_model.pth", weights_only=True)
    assert "conv1_1.weight" in state and tuple(state["Mconv7_stage6_L1.weight"].shape) == (
        38,
        128,
        1,
        1,
    )
    hand = torch.load(openpose_weights / "hand_pose_model.pth", weights_only=True)
    assert tuple(hand["Mconv1_stage2.weight"].shape) == (128, 150, 7, 7)
    annotator = create("pose", backend="openpose", hands=True, weights_dir=str(openpose_weights))
    image = resize_short_side(load_image(photo_paths[0]), 184)
    result = annotator.annotate(image)
    assert result.maps["pose"].shape == image.shape and result.maps["pose"].dtype == np.uint8
    assert result.data["pose"]["canvas_width"] == image.shape[1]
    names = {w["file"] for w in annotator.weights_identity()}
    assert names == {"body_pose_model.pth", "hand_pose_model.pth"}
    assert all(len(w["sha256"]) == 64 for w in annotator.weights_identity())


def test_openpose_network_produces_heatmaps_and_pafs_of_the_right_shape(openpose_weights):
    import torch

    from annotators.nets.openpose import build_body
    from annotators.openpose import network_input, to_image_size
    from annotators.weights import load_into, load_state_dict

    net = build_body().eval()
    load_into(net, load_state_dict(openpose_weights / "body_pose_model.pth"), "body_pose_model.pth")
    image = np.full((100, 140, 3), 90, np.uint8)
    tensor, valid = network_input(image, 1.0)
    with torch.no_grad():
        pafs, heat = net(torch.from_numpy(tensor[None]))
    assert pafs.shape == (1, 38, 13, 18) and heat.shape == (1, 19, 13, 18)
    assert to_image_size(heat[0].numpy(), valid, (100, 140)).shape == (100, 140, 19)


@pytest.mark.parametrize("damage", ["drop", "rename"])
def test_openpose_bad_state_dict_is_one_clear_line(openpose_weights, tmp_path, damage):
    import shutil

    import torch

    state = torch.load(openpose_weights / "body_pose_model.pth", weights_only=True)
    if damage == "drop":
        del state["conv4_2.weight"]
    else:
        state["conv4_2.kernel"] = state.pop("conv4_2.weight")
    torch.save(state, tmp_path / "body_pose_model.pth")
    shutil.copy(openpose_weights / "hand_pose_model.pth", tmp_path / "hand_pose_model.pth")
    from annotators.learned import clear_cache

    clear_cache()
    with pytest.raises(WeightsError) as info:
        create("pose", backend="openpose", weights_dir=str(tmp_path)).load()
    message = str(info.value)
    assert "body_pose_model.pth" in message and "conv4_2.weight" in message and "\n" not in message


def test_missing_openpose_weights_fail_with_one_line(photo_paths, tmp_path, cli, monkeypatch):
    proc = cli("annotate", photo_paths[0], "-o", tmp_path, "-a", "pose",
               "-p", "pose.backend=openpose", "-q",
               env={"HINTSET_OFFLINE": "1", "HINTSET_WEIGHTS_DIR": str(tmp_path / "none"),
                    "HF_HOME": str(tmp_path / "hf")})  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "body_pose_model.pth" in errors[0]


# -- the default backend: MediaPipe's Tasks API, .task files as weights -------------------


def tasks_marks(points, shape, visibility=0.9):
    """33 Tasks ``NormalizedLandmark``s putting OpenPose body keypoint i at ``points[i]``."""
    from mediapipe.tasks.python.components.containers.landmark import NormalizedLandmark

    from annotators.pose import MEDIAPIPE_TO_OPENPOSE

    marks = [NormalizedLandmark(x=0.5, y=0.5, z=0.0, visibility=0.0) for _ in range(33)]
    for i, index in enumerate(MEDIAPIPE_TO_OPENPOSE):
        if index is not None:
            x, y = points[i]
            marks[index] = NormalizedLandmark(x=x / shape[1], y=y / shape[0], z=0.0,
                                              visibility=visibility, presence=0.99)  # fmt: skip
    return marks


def test_tasks_results_become_the_same_openpose_maps():
    """mediapipe's own result classes, built directly (a real .task cannot be downloaded here)."""
    from mediapipe.tasks.python.components.containers.category import Category
    from mediapipe.tasks.python.components.containers.landmark import NormalizedLandmark
    from mediapipe.tasks.python.vision import (
        FaceLandmarkerResult,
        HandLandmarkerResult,
        PoseLandmarkerResult,
    )

    from annotators.mediapipe_tasks import face_contour_edges
    from annotators.pose import people_from_tasks

    shape = (512, 256)  # x / 256 and y / 512 are exact in binary: keypoints come back exactly
    pose = PoseLandmarkerResult(pose_landmarks=[tasks_marks(STANDING, shape)],
                                pose_world_landmarks=[])  # fmt: skip
    people = people_from_tasks(pose, None, None, [], shape, 0.5)
    assert people == [{"body": body(STANDING)}]  # the neck is the mid-shoulder point
    assert np.array_equal(
        draw_people(shape, people), draw_people(shape, [{"body": body(STANDING)}])
    )
    assert openpose_json(shape, people)["people"][0]["pose_keypoints_2d"][3:6] == [100.0, 70.0, 0.9]
    hidden = tasks_marks(STANDING, shape, visibility=0.3)  # below min_confidence: dropped
    assert people_from_tasks(PoseLandmarkerResult([hidden], []), None, None, [], shape, 0.5) == []
    assert people_from_tasks(PoseLandmarkerResult([], []), None, None, [], shape, 0.5) == []

    hand = [NormalizedLandmark(x=(20 + i) / 256, y=100 / 512) for i in range(21)]
    left = Category(index=0, score=0.97, display_name="Left", category_name="Left")
    hands = HandLandmarkerResult(handedness=[[left]], hand_landmarks=[hand],
                                 hand_world_landmarks=[[]])  # fmt: skip
    mesh = [NormalizedLandmark(x=i / 1024, y=0.25) for i in range(478)]
    face = FaceLandmarkerResult(face_landmarks=[mesh], face_blendshapes=[],
                                facial_transformation_matrixes=[])  # fmt: skip
    face_ids = sorted({i for edge in face_contour_edges() for i in edge})
    (person,) = people_from_tasks(pose, hands, face, face_ids, shape, 0.5)
    # MediaPipe's "Left" is the person's right hand (it labels as in a mirrored selfie)
    assert person["right_hand"] == [(20.0 + i, 100.0, 1.0) for i in range(21)]
    assert "left_hand" not in person
    assert person["face"] == [(i / 1024 * 256, 128.0, 1.0) for i in face_ids]
    data = openpose_json(shape, [person])["people"][0]
    assert len(data["hand_right_keypoints_2d"]) == 63 and len(data["face_keypoints_2d"]) == 3 * 128


def test_task_files_are_weights_found_checked_and_recorded(tmp_path, offline_weights, monkeypatch):
    import dataclasses
    import hashlib

    from annotators.mediapipe_tasks import POSE_TASKS
    from annotators.weights import find_local, identity, resolve

    folder = tmp_path / "w"
    folder.mkdir()
    pose = create("pose", hands=True, weights_dir=str(folder))
    names = [f.filename for f in pose.configured_weights()]
    assert names == ["pose_landmarker_full.task", "hand_landmarker.task"]
    assert [f.filename for f in create("pose", model_complexity=2).configured_weights()] == [
        "pose_landmarker_heavy.task"
    ]
    with pytest.raises(WeightsError) as err:
        pose.check_ready()
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in names) and str(folder) in message
    assert "Hugging Face cache" not in message  # no repo is searched unless task_repo names one
    assert ("https://storage.googleapis.com/mediapipe-models/pose_landmarker/"
            "pose_landmarker_full/float16/1/pose_landmarker_full.task") in message  # fmt: skip
    (folder / "pose_landmarker_full.task").write_bytes(b"not a zip of models")
    with pytest.raises(WeightsError, match="^missing weights hand_landmarker.task "):
        pose.check_ready()
    (folder / "hand_landmarker.task").write_bytes(b"also not one")
    pose.check_ready()  # both present: nothing raised

    # sha256: recorded for the manifest; a published hash that differs is an error
    path = folder / "pose_landmarker_full.task"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert identity(POSE_TASKS[1], path)["sha256"] == digest
    with pytest.raises(WeightsError, match="expected 000000000000"):
        resolve(dataclasses.replace(POSE_TASKS[1], sha256="0" * 64), folder)

    # a hub id (task_repo): the Hugging Face cache layout of that repo
    snapshot = tmp_path / "hf" / "models--someone--mediapipe-tasks" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "pose_landmarker_full.task").write_bytes(b"cached")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    cached = create("pose", task_repo="someone/mediapipe-tasks").configured_weights()[0]
    assert find_local(cached) == snapshot / "pose_landmarker_full.task"
    assert find_local(POSE_TASKS[1]) is None  # no repo named: the cache is not searched

    # a file that is not a .task: mediapipe's loader error as one line
    with pytest.raises(WeightsError, match=r"^cannot load pose_landmarker_full.task \(") as err:
        create("pose", weights_dir=str(folder)).load()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "files"), [
    ("pose", "pose_landmarker_full.task"),
    ("pose -p pose.hands=true -p pose.face=true",
     "pose_landmarker_full.task, hand_landmarker.task, face_landmarker.task"),
    ("face", "face_landmarker.task"),
])  # fmt: skip
def test_annotate_without_task_files_stops_before_work(photo_paths, tmp_path, cli, name, files):
    out = tmp_path / "out"
    proc = cli("annotate", photo_paths[0], "-o", out, "-a", *name.split(),
               env={"HINTSET_OFFLINE": "1", "HINTSET_WEIGHTS_DIR": str(tmp_path / "none"),
                    "HF_HOME": str(tmp_path / "hf")})  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert (
        len(lines) == 1 and f"missing weights {files} (from https://storage.googleapis" in lines[0]
    )
    assert not out.exists()  # nothing was done


def test_build_without_task_files_stops_before_ray_starts(photos_dir, tmp_path, cli):
    proc = cli("build", photos_dir, "-o", tmp_path / "ds", "-a", "canny,pose", "-q",
               env={"HINTSET_OFFLINE": "1", "HINTSET_WEIGHTS_DIR": str(tmp_path / "none")})  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: missing weights pose_landmarker_full.task (from https://")
    assert not (tmp_path / "ds").exists()


#: a pose_landmarker_full.task assembled from mediapipe 0.10.21's bundled models and that
#: route's keypoints on the photos (``bundled.json``): scripts/test.sh makes both in the
#: pose-bundled environment and names the folder here
TASKS_DIR = os.environ.get("HINTSET_TEST_TASKS", "")


@pytest.mark.skipif(not TASKS_DIR, reason="needs the .task that scripts/test.sh assembles")
def test_current_mediapipe_tasks_route_gives_the_bundled_keypoints(photo_paths, tmp_path, cli):
    """The current mediapipe (Tasks API) on real photos with a real .task: the same person in
    the same photos as the bundled route, keypoints within a few pixels; and through the CLI,
    no native log line on the terminal and the file's sha256 in the report."""
    from benchmarks.pose_tasks_vs_bundled import agreement, run

    folder = Path(TASKS_DIR)
    bundled = json.loads((folder / "bundled.json").read_text())
    both, only, distances, _ = agreement(run("tasks", folder), bundled)
    assert only == 0 and both == sum(v is not None for v in bundled.values()) >= 14
    assert np.median(distances) < 1.0 and distances.max() < 16
    proc = cli("annotate", *photo_paths[:2], "-o", tmp_path, "-a", "pose", "--weights-dir",
               folder, "-w", "1", "-q")  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 0 and len(lines) == 1 and lines[0].startswith("2 done"), proc.stderr
    report = (tmp_path / "report.json").read_text()
    assert sha256_file(folder / "pose_landmarker_full.task") in report


def test_native_log_lines_of_both_mediapipe_releases_are_dropped():
    from annotators.quiet import NOISE

    for line in (b"W0000 00:00:1733600000.1 123 gl_context.cc:357] GL version: 3.2",
                 b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
                 b"INFO: [compiled_model.cc:1022] Flatbuffer model initialized directly",
                 b"WARNING: [model_load.cc:402] Sparsity tensors may not yet be fully supported.",
                 b"WARNING: Logging before InitGoogle() is written to STDERR"):  # fmt: skip
        assert NOISE.match(line), line
    assert not NOISE.match(b"error: missing weights pose_landmarker_full.task (from ...)")
    assert not NOISE.match(b"Traceback (most recent call last):")
