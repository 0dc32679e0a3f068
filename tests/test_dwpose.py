"""pose backend=dwpose: small ONNX files with the published names, shapes and dtypes (YOLOX-L's
``images`` -> ``output`` (1, 8400, 85); RTMPose's ``input`` (1, 3, 384, 288) -> ``simcc_x``
(1, 133, 576), ``simcc_y`` (1, 133, 768)) whose outputs the tests control, run through the real
onnxruntime and the real loading code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotators import create
from annotators.dwpose import crop_matrix, decode_simcc, person_boxes
from annotators.pose_draw import COLORS, HAND_JOINT_COLOR, limb_color
from annotators.weights import WeightsError
from tests.weights import write_dwpose

pytestmark = pytest.mark.usefixtures("offline_weights")
FILES = ["yolox_l.onnx", "dw-ll_ucoco_384.onnx"]

# A person in a 480x640 image (letterbox ratio 1): COCO-WholeBody keypoints in image pixels.
BODY = [(320, 80), (335, 70), (305, 70), (350, 78), (290, 78), (380, 140), (260, 140),
        (410, 210), (230, 210), (430, 280), (210, 280), (360, 280), (280, 280), (365, 360),
        (275, 360), (370, 440), (270, 440)]  # fmt: skip
FEET = [(460 + 8 * i, 460) for i in range(6)]
FACE = [(440 + 12 * (i % 6), 300 + 10 * (i // 6)) for i in range(68)]
LEFT_HAND = [(440 + 25 * (i % 3), 150 + 16 * (i // 3)) for i in range(21)]
RIGHT_HAND = [(x - 300, y) for x, y in LEFT_HAND]
WHOLEBODY = BODY + FEET + FACE + LEFT_HAND + RIGHT_HAND
HIDDEN = 4  # the right ear: score 0.2
# The detector's box (200, 40, 440, 440) grown 1.25x to 3:4 -> 375 x 500 around (320, 240);
# crop pixel (u, v) of the 288x384 crop is image (u * 375 / 288 + 132.5, v * 500 / 384 - 10).
SCALE_X, SCALE_Y, LEFT, TOP = 375 / 288, 500 / 384, 132.5, -10.0


def crop_keypoints() -> np.ndarray:
    """(133, 3) crop x, y, score of WHOLEBODY."""
    out = np.array([((x - LEFT) / SCALE_X, (y - TOP) / SCALE_Y, 0.9) for x, y in WHOLEBODY])
    out[HIDDEN, 2] = 0.2
    return out


def expected_image_points() -> np.ndarray:
    """Independent decoding: SimCC bin = round(2 u); u = bin / 2; back through the box."""
    bins = np.round(crop_keypoints()[:, :2] * 2)
    return np.stack([bins[:, 0] / 2 * SCALE_X + LEFT, bins[:, 1] / 2 * SCALE_Y + TOP], 1)


@pytest.fixture(scope="session")
def random_dir(tmp_path_factory) -> Path:
    """The detector reports one person; the pose network's SimCC depend on the crop."""
    folder = tmp_path_factory.mktemp("dwpose-random")
    write_dwpose(folder, tiny=True)
    return folder


@pytest.fixture(scope="session")
def known_dir(tmp_path_factory) -> Path:
    """The pose network returns ``crop_keypoints()`` whatever the crop."""
    folder = tmp_path_factory.mktemp("dwpose-known")
    write_dwpose(folder, tiny=True, keypoints=crop_keypoints())
    return folder


def dwpose(folder: Path, **params):
    return create("pose", backend="dwpose", weights_dir=str(folder), device="cpu", **params)


def test_known_keypoints_are_decoded_and_drawn_as_openpose(known_dir):
    image = np.full((480, 640, 3), 90, np.uint8)
    result = dwpose(known_dir, hands=True, face=True).annotate(image)
    canvas, people = result.maps["pose"], result.data["pose"]["people"]
    assert canvas.shape == (480, 640, 3) and len(people) == 1
    expected = expected_image_points()
    body = np.array(people[0]["pose_keypoints_2d"]).reshape(18, 3)
    # OpenPose order from COCO: nose, neck, right arm, left arm, right leg, left leg, eyes, ears
    coco = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
    for i, k in enumerate(coco):
        point = (expected[5] + expected[6]) / 2 if k is None else expected[k]
        if k == HIDDEN:
            assert body[i].tolist() == [0, 0, 0]
            assert not canvas[int(point[1]), int(point[0])].any()
            continue
        assert np.allclose(body[i, :2], point, atol=1e-3) and body[i, 2] == pytest.approx(0.9)
        assert tuple(canvas[int(point[1]), int(point[0])]) == COLORS[i], i
    # the right hip -> right knee limb (limb 7) in its colour x 0.6, between the joints
    mid = (expected[12] + expected[14]) / 2
    assert tuple(canvas[int(mid[1]), int(mid[0])]) == limb_color(7)
    for key, first in (("hand_left", 91), ("hand_right", 112), ("face", 23)):
        count = 68 if key == "face" else 21
        points = np.array(people[0][f"{key}_keypoints_2d"]).reshape(count, 3)
        assert np.allclose(points[:, :2], expected[first : first + count], atol=1e-3)
        colour = (255, 255, 255) if key == "face" else HAND_JOINT_COLOR
        assert all(tuple(canvas[int(y), int(x)]) == colour for x, y in points[:, :2])
    assert not any(canvas[int(y), int(x)].any() for x, y in expected[17:23])  # feet: not drawn
    body_only = dwpose(known_dir).annotate(image).maps["pose"]
    assert not body_only[145:252, 435:496].any() and not body_only[145:252, 135:196].any()
    assert not body_only[295:415, 435:505].any()  # no hands, no face
    assert np.array_equal(body_only[:, 200:435], canvas[:, 200:435])  # the same body


def test_no_person_runs_the_pose_network_on_the_whole_image(tmp_path):
    points = np.zeros((133, 3))
    points[0] = (144.0, 192.0, 0.8)  # the crop centre -> the image centre
    write_dwpose(tmp_path, tiny=True, boxes=[], keypoints=points)
    result = dwpose(tmp_path).annotate(np.zeros((480, 640, 3), np.uint8))
    nose = result.data["pose"]["people"][0]["pose_keypoints_2d"][:3]
    assert nose == pytest.approx([320.0, 240.0, 0.8], abs=1e-3)
    assert result.stats["pose_people"] == 1.0


def yolox_row(table: np.ndarray, box: tuple, score: float, stride: int, cls: int = 0) -> None:
    """Encode a box in the YOLOX output layout (rows: stride 8, then 16, then 32; y-major)."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    gx, gy = int(cx // stride), int(cy // stride)
    offset = {8: 0, 16: 6400, 32: 8000}[stride]
    row = offset + gy * (640 // stride) + gx
    table[row, :4] = (
        cx / stride - gx,
        cy / stride - gy,
        np.log((x2 - x1) / stride),
        np.log((y2 - y1) / stride),
    )
    table[row, 4], table[row, 5 + cls] = 1.0, score


def test_person_boxes_decode_the_grid_then_nms_and_thresholds():
    table = np.zeros((8400, 85), np.float32)
    yolox_row(table, (100, 100, 200, 300), 0.9, 8)
    yolox_row(table, (104, 98, 204, 296), 0.8, 16)  # overlaps the first: suppressed
    yolox_row(table, (400, 50, 500, 150), 0.7, 32)
    yolox_row(table, (300, 300, 400, 400), 0.25, 16)  # above 0.1 for NMS, below 0.3: dropped
    yolox_row(table, (500, 400, 600, 600), 0.9, 32, cls=1)  # not a person
    boxes = person_boxes(table, ratio=0.5)
    assert np.allclose(boxes, [[200, 200, 400, 600], [800, 100, 1000, 300]], atol=1e-3)


def test_simcc_decoding_and_crop_matrix_match_an_independent_computation():
    rng = np.random.default_rng(1)
    simcc_x, simcc_y = rng.normal(size=(133, 576)), rng.normal(size=(133, 768))
    simcc_x[3] = -1.0  # no positive response: location -1, score <= 0
    locs, scores = decode_simcc(simcc_x, simcc_y)
    for k in (0, 50, 132):
        assert locs[k].tolist() == [simcc_x[k].argmax() / 2.0, simcc_y[k].argmax() / 2.0]
        assert scores[k] == min(simcc_x[k].max(), simcc_y[k].max())
    assert locs[3].tolist() == [-0.5, -0.5] and scores[3] <= 0
    matrix = crop_matrix(np.array([320.0, 240.0]), np.array([375.0, 500.0]), (288, 384))
    k = 288 / 375
    assert np.allclose(matrix, [[k, 0, 144 - 320 * k], [0, k, 192 - 240 * k]], atol=1e-4)


def test_real_photos_keep_size_and_batch_equals_single(random_dir, photos, photo_paths):
    from pipeline.decode import load_image, resize_short_side

    annotator = dwpose(random_dir, hands=True, face=True)
    images = [*photos, resize_short_side(load_image(photo_paths[0]), 256)]
    batch = annotator.annotate_batch(images)
    for image, result in zip(images, batch, strict=True):
        assert result.maps["pose"].shape == image.shape
        single = annotator.annotate(image)
        assert np.array_equal(single.maps["pose"], result.maps["pose"])
        assert single.data == result.data
    assert batch[-1].stats["pose_people"] == 1.0 and batch[-1].maps["pose"].any()
    assert [w["file"] for w in annotator.weights_identity()] == FILES


def test_missing_weights_give_one_line_naming_both_files(tmp_path, known_dir):
    with pytest.raises(WeightsError) as err:
        dwpose(tmp_path / "none").load()
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in FILES)
    assert str(tmp_path / "none") in message and "huggingface.co/yzd-v/DWPose" in message
    shutil.copy(known_dir / FILES[0], tmp_path / FILES[0])
    with pytest.raises(WeightsError, match=f"missing weights {FILES[1]} "):
        dwpose(tmp_path).load()
    with pytest.raises(ValueError, match="fp32"):
        create("pose", backend="dwpose", precision="fp16")


def test_cli_lists_and_runs_dwpose(cli, random_dir, photo_paths, tmp_path):
    listed = {r["name"]: r for r in json.loads(cli("annotators", "--json", check=True).stdout)}
    by_backend = listed["pose"]["weights_by_backend"]
    assert [f["file"] for f in by_backend["dwpose"]] == FILES
    rows = json.loads(cli("weights", "--json", "--weights-dir", random_dir, check=True).stdout)
    assert {r["name"]: r["present"] for r in rows if r["annotator"] == "pose"} == {
        "body_pose_model.pth": False, "hand_pose_model.pth": False,
        FILES[0]: True, FILES[1]: True, "pose_landmarker_lite.task": False,
        "pose_landmarker_full.task": False, "pose_landmarker_heavy.task": False,
        "hand_landmarker.task": False, "face_landmarker.task": False,
    }  # fmt: skip
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo_paths[0], src / "a.jpg")
    out = tmp_path / "out"
    proc = cli(
        "annotate", src, "-o", out, "-a", "pose", "--resolution", "128", "--weights-dir",
        random_dir, "-p", "pose.backend=dwpose", "-p", "pose.hands=true", "-p", "pose.face=true",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = cv2.imread(str(out / "a.pose.png"))
    assert written is not None and min(written.shape[:2]) == 128
    keypoints = json.loads((out / "a.pose.json").read_text())
    assert len(keypoints["people"][0]["face_keypoints_2d"]) == 68 * 3


@pytest.mark.slow
def test_real_size_graphs_have_the_published_inputs_outputs_and_sizes(tmp_path):
    """The speed benchmark's random files: YOLOX-L (54.2 M parameters, 217 MB) and RTMPose-L
    384x288 (33.6 M, 134 MB, as dw-ll_ucoco_384.onnx), loadable by onnxruntime."""
    import onnx
    import onnxruntime

    paths = write_dwpose(tmp_path)
    expected = {
        FILES[0]: (54.2, {"images": [1, 3, 640, 640]}, {"output": [1, 8400, 85]}),
        FILES[1]: (33.6, {"input": [1, 3, 384, 288]},
                   {"simcc_x": [1, 133, 576], "simcc_y": [1, 133, 768]}),
    }  # fmt: skip
    for path in paths:
        millions, inputs, outputs = expected[path.name]
        weights = onnx.load(str(path)).graph.initializer
        assert round(sum(int(np.prod(w.dims)) for w in weights) / 1e6, 1) == millions
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert {i.name: i.shape for i in session.get_inputs()} == inputs
        assert {o.name: o.shape for o in session.get_outputs()} == outputs
