"""Pose: OpenPose-style drawing, the MediaPipe backend on real photos, the OpenPose networks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from annotators import create
from annotators.pose_draw import (
    COLORS,
    HAND_EDGES,
    LIMB_SEQUENCE,
    draw_people,
    hand_edge_color,
    limb_color,
    openpose_json,
)
from annotators.weights import WeightsError
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


@pytest.fixture(scope="module")
def mediapipe_results(photo_paths):
    annotator = create("pose")
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
    again = create("pose").annotate(images[0])
    assert np.array_equal(again.maps["pose"], results[0].maps["pose"])
    assert again.data == results[0].data


def test_mediapipe_hands_and_face(photo_paths):
    image = resize_short_side(load_image(photo_paths[1]), 512)
    result = create("pose", hands=True, face=True).annotate(image)
    person = result.data["pose"]["people"][0]
    assert len(person["face_keypoints_2d"]) % 3 == 0 and len(person["face_keypoints_2d"]) > 100
    for side in ("hand_left_keypoints_2d", "hand_right_keypoints_2d"):
        assert len(person[side]) in (0, 63)


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


def test_annotate_writes_pose_png_and_json(photo_paths, tmp_path, cli):
    proc = cli("annotate", *photo_paths[:3], "-o", tmp_path, "-a", "pose", "-q", "-w", "1")
    assert proc.returncode == 0, proc.stderr
    for path in photo_paths[:3]:
        data = json.loads((tmp_path / f"{path.stem}.pose.json").read_text())
        image = cv2.imread(str(tmp_path / f"{path.stem}.pose.png"))
        assert (data["canvas_height"], data["canvas_width"]) == image.shape[:2]


def test_build_writes_pose_png_and_json_and_counts_no_person(photos_dir, tmp_path, cli):
    import webdataset as wds

    out = tmp_path / "ds"
    proc = cli("build", photos_dir, "-o", out, "-a", "pose", "--resolution", "256",
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
