"""densepose: a tiny TorchScript archive in the published form (``forward(image)`` on a 3xHxW
uint8 RGB tensor -> boxes, coarse and fine segmentation, u, v) loaded through the real loading
code (sha256 trust check, torch.jit.load); the colouring checked against the viridis / parula
maps the DensePose ControlNets were trained on."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotators import create
from annotators.densepose import densepose_map, int_box
from annotators.weights import WeightsError, sha256_file
from tests.weights import write_densepose

pytestmark = pytest.mark.usefixtures("offline_weights")
FILE = "densepose_r50_fpn_dl.torchscript"
# the tiny file's person: the red rectangle rows 40..199, columns 60..139 -> box (60, 40, 80, 160)
TOP, LEFT, HEIGHT, WIDTH = 40, 60, 160, 80


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("densepose")
    path = write_densepose(folder)[0]
    return folder, sha256_file(path)


def densepose(weights: tuple[Path, str], **params):
    folder, digest = weights
    return create("densepose", weights_dir=str(folder), device="cpu", trusted_sha256=digest,
                  **params)  # fmt: skip


def person(shape=(240, 320)) -> np.ndarray:
    image = np.full((*shape, 3), 30, np.uint8)
    image[TOP : TOP + HEIGHT, LEFT : LEFT + WIDTH] = (255, 0, 0)
    return image


def colour(label: int, cmap: str) -> tuple[int, int, int]:
    """Independent: OpenCV's colour map at int(label * 255 / 24), BGR -> RGB; viridis maps get
    every 0 channel replaced by viridis(0) = (68, 1, 84), as the reference does."""
    bgr = cv2.applyColorMap(
        np.uint8([[label * 255 // 24]]), getattr(cv2, f"COLORMAP_{cmap.upper()}")
    )
    rgb = [int(c) for c in bgr[0, 0][::-1]]
    if cmap == "viridis":
        rgb = [v or z for v, z in zip(rgb, (68, 1, 84), strict=True)]
    return tuple(rgb)


def certain_pixels() -> list[tuple[int, int, int]]:
    """(y, x, label) where bilinear resizing of the 112x112 outputs leaves no doubt: both
    neighbouring source rows in one band, both source columns on one side of column 28."""
    out = []
    for y in range(HEIGHT):
        src = (y + 0.5) * 112 / HEIGHT - 0.5
        lo, hi = (min(max(f(src), 0), 111) for f in (math.floor, math.ceil))
        if lo * 24 // 112 != hi * 24 // 112:
            continue
        for x in range(WIDTH):
            sx = (x + 0.5) * 112 / WIDTH - 0.5
            if math.floor(sx) >= 28:
                out.append((TOP + y, LEFT + x, lo * 24 // 112 + 1))
            elif math.ceil(sx) <= 27:
                out.append((TOP + y, LEFT + x, 0))
    return out


@pytest.mark.parametrize("cmap", ["viridis", "parula"])
def test_parts_have_the_published_colour_maps(weights, cmap):
    result = densepose(weights, cmap=cmap).annotate(person())
    part_map = result.maps["densepose"]
    assert part_map.shape == (240, 320, 3) and part_map.dtype == np.uint8
    background = (68, 1, 84) if cmap == "viridis" else (0, 0, 0)
    pixels = certain_pixels()
    assert len(pixels) > 8000 and {label for *_, label in pixels} == set(range(25))
    for y, x, label in pixels:
        expected = colour(label, cmap) if label else background
        assert tuple(part_map[y, x]) == expected, (y, x, label)
    outside = np.ones((240, 320), bool)
    outside[TOP : TOP + HEIGHT, LEFT : LEFT + WIDTH] = False
    assert np.all(part_map[outside] == background)
    # the colour maps' ends, as published: viridis (68, 1, 84) .. (253, 231, 37), parula .. (249, 251, 14)
    assert colour(24, cmap) == {"viridis": (253, 231, 37), "parula": (249, 251, 14)}[cmap]
    assert result.stats == {"densepose_people": 1.0, "densepose_coverage": 0.125}


def test_later_people_cover_earlier_ones_only_where_they_have_a_body():
    import torch

    fine = torch.zeros(2, 25, 112, 112)
    fine[0, 5], fine[1, 20] = 1.0, 1.0  # person 0: part 5 everywhere; person 1: part 20
    coarse = torch.zeros(2, 2, 112, 112)
    coarse[:, 1] = 1.0
    coarse[1, 1, :, :56] = -1.0  # person 1: no body in the left half of its box
    boxes = torch.tensor([[10.9, 10.9, 50.2, 50.2], [30.0, 10.9, 70.0, 50.2]])
    assert int_box(boxes[0]) == (10, 10, 39, 39)  # x, y, w, h each truncated (39.3 -> 39)
    rgb, body, people = densepose_map((60, 80), (boxes, coarse, fine, fine, fine), "parula")
    assert people == 2 and body.sum() == 39 * 39 + 39 * 20
    assert tuple(rgb[30, 35]) == colour(5, "parula")  # inside person 1's box, not its body
    assert tuple(rgb[30, 60]) == colour(20, "parula")
    assert not rgb[30, 49].any() and not rgb[55, 5].any()  # between the bodies; outside


def test_no_person_and_batches(weights, photos):
    annotator = densepose(weights)
    empty = annotator.annotate(np.zeros((100, 90, 3), np.uint8))
    assert np.all(empty.maps["densepose"] == (68, 1, 84))
    assert empty.stats == {"densepose_people": 0.0, "densepose_coverage": 0.0}
    images = [photo.copy() for photo in photos] + [person()]
    images[0][10:40, 20:50] = (255, 0, 0)
    batch = annotator.annotate_batch(images)
    for image, result in zip(images, batch, strict=True):
        assert result.maps["densepose"].shape == image.shape
        single = densepose(weights).annotate(image)
        assert np.array_equal(single.maps["densepose"], result.maps["densepose"])
    assert batch[0].stats["densepose_people"] == 1.0
    assert annotator.weights_identity()[0]["sha256"] == weights[1]


def test_untrusted_tampered_or_missing_files_fail_before_work(weights, tmp_path, cli, photo_paths):
    folder, digest = weights
    with pytest.raises(WeightsError) as err:
        create("densepose", weights_dir=str(folder)).check_ready()
    message = str(err.value)
    assert "\n" not in message and FILE in message and f"trusted_sha256={digest}" in message
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    shutil.copy(folder / FILE, tampered / FILE)
    with open(tampered / FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(WeightsError, match="is TorchScript"):
        densepose((tampered, digest)).load()
    with pytest.raises(ValueError, match="precision: 'fp16' is not one of"):
        create("densepose", precision="fp16")  # the file runs as published
    with pytest.raises(WeightsError, match=f"missing weights {FILE} "):
        densepose((tmp_path / "none", digest)).check_ready()
    for where, extra in (
        (folder, []),
        (tmp_path / "none", ["-p", f"densepose.trusted_sha256={digest}"]),
    ):
        out = tmp_path / "out"
        proc = cli(
            "annotate", photo_paths[0], "-o", out, "-a", "densepose", "--weights-dir", where, *extra
        )
        assert proc.returncode == 2 and not out.exists(), proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and FILE in lines[0], proc.stderr


def test_cli_lists_and_runs_densepose(cli, weights, tmp_path):
    listed = {r["name"]: r for r in json.loads(cli("annotators", "--json", check=True).stdout)}
    backend = listed["densepose"]["backends"][""]
    assert backend["files"] == [FILE, "densepose_r101_fpn_dl.torchscript"]
    assert "CC-BY-SA-3.0" in backend["licence"] and "DensePose" in backend["reference"]
    assert set(listed["densepose"]["stats"]) == {"densepose_people", "densepose_coverage"}
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), person()[:, :, ::-1])
    folder, digest = weights
    proc = cli("annotate", src, "-o", tmp_path / "out", "-a", "densepose", "--weights-dir", folder,
               "-p", f"densepose.trusted_sha256={digest}", "--resolution", "240")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = cv2.imread(str(tmp_path / "out" / "a.densepose.png"))[:, :, ::-1]
    assert tuple(written[195, 100]) == (253, 231, 37)  # part 24 at the bottom of the box
