"""animal_pose: small ONNX files with the published names, shapes and dtypes (YOLOX-L's ``images``
-> ``output`` (1, 8400, 85); RTMPose-m AP-10K's ``input`` (1, 3, 256, 256) -> ``simcc_x``,
``simcc_y`` (1, 17, 512)) whose outputs the tests control, through onnxruntime and the real
loading code; the drawing checked pixel by pixel against ComfyUI's convention."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotators import create
from annotators.animal_pose import LIMB_COLORS, LIMBS, animal_boxes, draw_animals
from annotators.weights import WeightsError
from tests.test_dwpose import yolox_row
from tests.weights import write_animal_pose

pytestmark = pytest.mark.usefixtures("offline_weights")
FILES = ["yolox_l.onnx", "rtmpose-m_ap10k_256.onnx"]

# A dog facing right in a 480x640 image: AP-10K keypoints in image pixels.
DOG = [(420, 170), (440, 170), (460, 190), (400, 210), (220, 210), (380, 240), (380, 280),
       (380, 330), (410, 240), (410, 280), (410, 330), (240, 240), (240, 280), (240, 330),
       (270, 240), (270, 280), (270, 330)]  # fmt: skip
FAINT = 16  # the right back paw: score 0.1, drawn all the same (the reference has no threshold)
# ANIMAL_BOX (160, 120, 480, 360) grown 1.25x to 1:1 -> 400 x 400 around (320, 240): crop pixel
# (u, v) of the 256x256 crop is image (u * 400 / 256 + 120, v * 400 / 256 + 40).
SCALE, LEFT, TOP = 400 / 256, 120.0, 40.0


def bins() -> np.ndarray:
    """SimCC bins (2 per crop pixel) nearest to DOG, moved one bin on where the image point
    would fall on a whole pixel (the map truncates; float32 noise must not flip it)."""
    out = np.round((np.array(DOG) - (LEFT, TOP)) / SCALE * 2)
    whole = np.abs((out / 2 * SCALE + 0.5) % 1 - 0.5) < 0.05
    return out + whole


def crop_keypoints() -> np.ndarray:
    out = np.concatenate([bins() / 2, np.full((17, 1), 0.8)], 1)
    out[FAINT, 2] = 0.1
    return out


def expected_points() -> np.ndarray:
    """Independent decoding: u = bin / 2; back through the box."""
    return bins() / 2 * SCALE + np.array([LEFT, TOP])


@pytest.fixture(scope="module")
def known_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("animal-known")
    write_animal_pose(folder, keypoints=crop_keypoints())
    return folder


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("animal-random")
    write_animal_pose(folder)
    return folder


def animal(folder: Path, **params):
    return create("animal_pose", weights_dir=str(folder), device="cpu", **params)


def test_known_keypoints_are_decoded_and_drawn_as_comfyui(known_dir):
    result = animal(known_dir).annotate(np.full((480, 640, 3), 90, np.uint8))
    canvas, data = result.maps["animal_pose"], result.data["animal_pose"]
    assert canvas.shape == (480, 640, 3)
    assert data["version"] == "ap10k" and (data["canvas_height"], data["canvas_width"]) == (
        480,
        640,
    )
    points = np.array(data["animals"][0])
    assert len(data["animals"]) == 1 and points.shape == (17, 3)
    expected = expected_points()
    assert np.allclose(points[:, :2], expected, atol=1e-3)
    assert points[FAINT, 2] == pytest.approx(0.1) and points[0, 2] == pytest.approx(0.8)
    # limbs away from the others: their midpoint has the limb's colour, exactly
    for limb in (5, 6, 8, 9, 10, 12, 13, 15, 16):
        a, b = (expected[k - 1] for k in LIMBS[limb])
        mid = ((a + b) / 2).astype(int)
        assert tuple(canvas[mid[1], mid[0]]) == LIMB_COLORS[limb], limb
    # the whole map: cv2.line, thickness 5, between truncated points, limb by limb
    reference = np.zeros_like(canvas)
    for (a, b), colour in zip(LIMBS, LIMB_COLORS, strict=True):
        start, end = (tuple(int(v) for v in expected[k - 1]) for k in (a, b))
        cv2.line(reference, start, end, colour, 5)
    assert np.array_equal(canvas, reference)
    assert not canvas[400:].any() and not canvas[:, :200].any()
    assert result.stats == {"animal_pose_animals": 1.0, "animal_pose_keypoints": 16.0}


def test_images_are_padded_to_64_as_the_reference(known_dir):
    """A 480x600 image runs as 480x640 (edge padding at the right): the letterbox ratio, hence
    the box and keypoints, are those of the 480x640 case; the map is cropped back."""
    result = animal(known_dir).annotate(np.full((480, 600, 3), 90, np.uint8))
    points = np.array(result.data["animal_pose"]["animals"][0])
    assert np.allclose(points[:, :2], expected_points(), atol=1e-3)
    assert result.maps["animal_pose"].shape == (480, 600, 3)


def test_draw_truncates_points_and_draws_every_limb():
    points = np.zeros((17, 2)) + (10.9, 90.9)
    points[0], points[1] = (50.9, 50.9), (90.9, 50.9)  # the eyes: limb 0, white, at y 50
    canvas = draw_animals((100, 120), [points])
    white = np.nonzero(np.all(canvas[:, 70] == (255, 255, 255), axis=1))[0]
    assert len(white) >= 5 and white.min() + white.max() == 100  # centred on 50, not 51
    assert tuple(canvas[90, 10]) == LIMB_COLORS[-1]  # the last limb, on top of the others


def test_only_animal_classes_are_kept_with_class_aware_nms():
    table = np.zeros((8400, 85), np.float32)
    yolox_row(table, (100, 100, 200, 300), 0.9, 8, cls=16)  # a dog
    yolox_row(table, (104, 98, 204, 296), 0.8, 16, cls=16)  # the same dog again: suppressed
    yolox_row(table, (102, 100, 202, 298), 0.7, 32, cls=15)  # a cat there: another class, kept
    yolox_row(table, (400, 50, 500, 150), 0.9, 32, cls=0)  # a person: not an animal
    yolox_row(table, (300, 300, 400, 400), 0.25, 16, cls=17)  # a horse below 0.3: dropped
    boxes = animal_boxes(table, ratio=0.5)
    assert np.allclose(boxes, [[204, 200, 404, 596], [200, 200, 400, 600]], atol=1e-3)  # cat 1st


def test_no_animal_gives_an_empty_map_and_no_pose_run(tmp_path):
    write_animal_pose(tmp_path, boxes=[(160.0, 120.0, 480.0, 360.0, 0.9, 0)])  # a person only
    result = animal(tmp_path).annotate(np.zeros((480, 640, 3), np.uint8))
    assert not result.maps["animal_pose"].any() and result.data["animal_pose"]["animals"] == []
    assert result.stats == {"animal_pose_animals": 0.0, "animal_pose_keypoints": 0.0}


def test_real_photos_keep_size_and_batch_equals_single(random_dir, photos):
    annotator = animal(random_dir, batch_size=4)
    images = [*photos, np.full((480, 640, 3), 120, np.uint8)]
    batch = annotator.annotate_batch(images)
    for image, result in zip(images, batch, strict=True):
        assert result.maps["animal_pose"].shape == image.shape
        single = animal(random_dir, batch_size=1).annotate(image)
        assert np.array_equal(single.maps["animal_pose"], result.maps["animal_pose"])
        assert single.data == result.data
    assert batch[-1].maps["animal_pose"].any()  # the dog box of a 480x640 image is inside it
    assert [w["file"] for w in annotator.weights_identity()] == FILES


def test_missing_weights_fail_before_work_with_one_line(tmp_path, known_dir, photo_paths, cli):
    with pytest.raises(WeightsError) as err:
        animal(tmp_path / "none").check_ready()
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in FILES)
    assert "huggingface.co/hr16/UnJIT-DWPose" in message
    shutil.copy(known_dir / FILES[0], tmp_path / FILES[0])
    with pytest.raises(WeightsError, match=f"missing weights {FILES[1]} "):
        animal(tmp_path).load()
    with pytest.raises(ValueError, match="fp32"):
        create("animal_pose", precision="fp16")
    out = tmp_path / "out"
    proc = cli("annotate", photo_paths[0], "-o", out, "-a", "animal_pose",
               "--weights-dir", tmp_path / "none")  # fmt: skip
    assert proc.returncode == 2 and not out.exists()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(f in lines[0] for f in FILES), proc.stderr


def test_cli_lists_and_runs_animal_pose(cli, known_dir, tmp_path):
    listed = {r["name"]: r for r in json.loads(cli("annotators", "--json", check=True).stdout)}
    backend = listed["animal_pose"]["backends"][""]
    assert backend["files"] == FILES and "hr16/UnJIT-DWPose" in backend["repos"]
    assert "Apache-2.0" in backend["licence"] and "AnimalPose" in backend["reference"]
    entry = listed["animal_pose"]
    assert set(entry["stats"]) >= {"animal_pose_animals", "animal_pose_keypoints"}
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "dog.png"), np.full((480, 640, 3), 90, np.uint8))
    out = tmp_path / "out"
    proc = cli("annotate", src, "-o", out, "-a", "animal_pose", "--weights-dir", known_dir,
               "--resolution", "480")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = cv2.imread(str(out / "dog.animal_pose.png"))
    assert written is not None and written.shape == (480, 640, 3) and written.any()
    assert len(json.loads((out / "dog.animal_pose.json").read_text())["animals"]) == 1
