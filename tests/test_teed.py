"""teed and anyline: the published TEED layout, and maps equal to controlnet_aux's detectors.

controlnet_aux cannot be installed into the project's environment (it would replace numpy and
add a second OpenCV), so the reference here is its published processing written out step by
step on the same network output: TEEDdetector (sigmoid of the mean of the four outputs,
``safe_step``) and AnylineDetector (its detail layer with scikit-image's
``remove_small_objects`` on the 3-channel copy, and its uint8 ``combine_layers``).
``benchmarks/reference_check.py`` runs controlnet_aux 0.0.10 itself (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from annotators import create
from annotators.learned import clear_cache
from annotators.weights import WeightsError
from tests.weights import write_teed

pytestmark = pytest.mark.usefixtures("offline_weights")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("teed-weights")
    write_teed(folder)
    yield folder
    clear_cache()


@pytest.fixture(scope="module")
def images(photo_paths) -> list[np.ndarray]:
    """Two real photos cropped to multiples of 8 (the reference runs the network unpadded)."""
    from pipeline.decode import load_image, resize_short_side

    out = []
    for index in (3, 7):
        image = resize_short_side(load_image(photo_paths[index]), 64)
        out.append(image[: image.shape[0] // 8 * 8, : image.shape[1] // 8 * 8].copy())
    return out


def reference_safe_step(x: np.ndarray, step: int = 2) -> np.ndarray:
    y = x.astype(np.float32) * float(step + 1)
    return y.astype(np.int32).astype(np.float32) / float(step)


def reference_teed(model, image: np.ndarray, safe_steps: int = 2) -> np.ndarray:
    """TEEDdetector.__call__ after its resize: HWC -> 1CHW float 0..255, the network, mean, sigmoid."""
    with torch.no_grad():
        edges = model(torch.from_numpy(image.copy()).float().permute(2, 0, 1)[None])
    edges = np.stack([e.numpy().astype(np.float32)[0, 0] for e in edges], axis=2)
    edge = 1 / (1 + np.exp(-np.mean(edges, axis=2).astype(np.float64)))
    if safe_steps:
        edge = reference_safe_step(edge, safe_steps)
    return (edge * 255.0).clip(0, 255).astype(np.uint8)


def reference_anyline(model, image: np.ndarray) -> np.ndarray:
    """AnylineDetector.__call__ after its resize, with scikit-image < 0.26's exclusive min_size."""
    mteed = np.repeat(reference_teed(model, image)[:, :, None], 3, axis=2)
    x = image.astype(np.float32)
    g = cv2.GaussianBlur(x, (0, 0), 2.0)
    intensity = np.min(g - x, axis=2).clip(0, 255)
    intensity /= max(16, np.median(intensity[intensity > 3]))
    intensity *= 127
    lineart = np.repeat(intensity.clip(0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    # remove_small_objects(lineart.astype(bool), min_size=36, connectivity=1) on HxWx3
    labels, _ = ndimage.label(lineart.astype(bool), ndimage.generate_binary_structure(3, 1))
    sizes = np.bincount(labels.ravel())
    cleaned = ~(sizes < 36)[labels] & lineart.astype(bool)
    lineart = lineart * cleaned
    mask = lineart.astype(bool)
    temp = 1 - (1 - lineart) * (1 - mteed)  # uint8 arithmetic, as published
    return (mteed * (~mask) + temp * mask)[:, :, 0]


def test_published_layout():
    from annotators.teed import build_teed

    state = build_teed().state_dict()
    assert len(state) == 36 and sum(v.numel() for v in state.values()) == 58_910
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["block_1.conv1.weight"] == (16, 3, 3, 3)
    assert shapes["dblock_3.denselayer1.conv1.weight"] == (48, 32, 3, 3)
    assert shapes["up_block_3.features.0.weight"] == (16, 48, 1, 1)
    assert shapes["up_block_3.features.5.weight"] == (1, 1, 4, 4)
    assert shapes["block_cat.DWconv1.weight"] == (24, 1, 3, 3)
    assert shapes["block_cat.DWconv2.weight"] == (24, 1, 3, 3)


@pytest.mark.parametrize("safe_steps", [2, 0])
def test_teed_equals_reference(weights_dir, images, safe_steps):
    annotator = create("teed", safe_steps=safe_steps, weights_dir=str(weights_dir), device="cpu")
    results = annotator.annotate_batch(images)
    for image, result in zip(images, results, strict=True):
        expected = reference_teed(annotator.model, image, safe_steps)
        diff = np.abs(result.maps["teed"].astype(int) - expected.astype(int))
        assert diff.max() <= 1 and np.mean(diff > 0) < 0.01
    if safe_steps:
        assert set(np.unique(results[0].maps["teed"])) <= {0, 127, 255}


def test_anyline_equals_reference(weights_dir, images):
    annotator = create("anyline", weights_dir=str(weights_dir), device="cpu")
    for image, mine in zip(images, annotator.annotate_batch(images), strict=True):
        expected = reference_anyline(annotator.model, image)
        diff = np.abs(mine.maps["anyline"].astype(int) - expected.astype(int))
        assert diff.max() <= 1 and np.mean(diff > 0) < 0.01
        assert mine.maps["anyline"].any()
    # a different checkpoint from teed's (each annotator loads its own file)
    teed = create("teed", weights_dir=str(weights_dir), device="cpu")
    teed.load()
    assert annotator.weights_identity()[0]["file"] == "MTEED.pth"
    assert teed.weights_identity()[0]["sha256"] != annotator.weights_identity()[0]["sha256"]


@pytest.mark.parametrize("name", ["teed", "anyline"])
def test_any_size_and_batch_equals_single(weights_dir, photos, name):
    annotator = create(name, weights_dir=str(weights_dir), device="cpu", batch_size=4)
    batch = annotator.annotate_batch([*photos, photos[0]])
    for image, result in zip([*photos, photos[0]], batch, strict=True):
        assert result.maps[name].shape == image.shape[:2] and result.maps[name].dtype == np.uint8
        single = annotator.annotate_batch([image])[0].maps[name]
        assert np.abs(single.astype(int) - result.maps[name].astype(int)).max() <= 1


def test_anyline_min_area_removes_specks():
    from annotators.teed import detail_layer

    image = np.full((40, 40, 3), 200, np.uint8)
    image[5:8, 5:9] = 0  # 12 dark pixels: kept at min_area 12, removed at 13
    image[20:22, 20:23] = 0  # 6 dark pixels: removed at both
    kept = detail_layer(image, 2.0, 3.0, 12)
    assert kept[5:8, 5:9].all() and not kept[20:22, 20:23].any()
    assert not detail_layer(image, 2.0, 3.0, 13)[5:8, 5:9].any()


@pytest.mark.parametrize(("name", "filename"), [("teed", "7_model.pth"), ("anyline", "MTEED.pth")])
def test_missing_weights_give_one_line(tmp_path, name, filename):
    with pytest.raises(WeightsError) as err:
        create(name, weights_dir=str(tmp_path), device="cpu").load()
    assert "\n" not in str(err.value) and filename in str(err.value)


def test_cli_lists_licence_and_reference_and_records_them(cli, weights_dir, photo_paths, tmp_path):
    rows = {r["name"]: r for r in json.loads(cli("annotators", "--json", check=True).stdout)}
    teed, anyline = rows["teed"]["backends"][""], rows["anyline"]["backends"][""]
    assert teed["files"] == ["7_model.pth"] and teed["licence"].startswith("MIT")
    assert anyline["files"] == ["MTEED.pth"] and anyline["repos"] == ["TheMistoAI/MistoLine"]
    assert anyline["licence"].startswith("openrail++") and "AnylineDetector" in anyline["reference"]
    weights = json.loads(cli("weights", "--json", "--weights-dir", weights_dir, check=True).stdout)
    assert {("teed", "7_model.pth"), ("anyline", "MTEED.pth")} <= {
        (r["annotator"], r["name"]) for r in weights if r["present"]
    }
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo_paths[0], src / "a.jpg")
    out = tmp_path / "out"
    cli("annotate", src, "-o", out, "-a", "teed,anyline", "--resolution", "64",
        "--weights-dir", weights_dir, check=True, env={"HINTSET_OFFLINE": "1"})  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    licences = {a["name"]: a["licence"] for a in report["annotators"]}
    assert licences["anyline"].startswith("openrail++") and licences["teed"].startswith("MIT")
    for name in ("teed", "anyline"):
        written = cv2.imread(str(out / f"a.{name}.png"), cv2.IMREAD_UNCHANGED)
        assert written.ndim == 2 and min(written.shape) == 64


def test_cli_without_weights_fails_before_work_with_one_line(cli, photo_paths, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo_paths[0], src / "a.jpg")
    proc = cli("annotate", src, "-o", tmp_path / "out", "-a", "anyline",
               "--weights-dir", tmp_path / "none", env={"HINTSET_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode == 2  # checked before any work
    errors = [line for line in proc.stderr.splitlines() if "MTEED.pth" in line]
    assert len(errors) == 1 and "missing weights" in errors[0]
    assert not list((tmp_path / "out").glob("*.png"))
