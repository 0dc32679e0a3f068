"""lineart, lineart_anime and softedge: random weights in the published layout, real loading.

Checkpoints are written once per session (real sizes, published names and containers) by
``tests/weights.py`` and loaded offline from a local folder through the same code a
user runs. Fidelity: the maps follow ControlNet 1.1's pre- and post-processing exactly
(checked here against the network called directly on the documented inputs).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from annotators import create
from annotators.learned import clear_cache
from annotators.nets.pidinet import pdc_conv
from annotators.weights import WeightsError, load_state_dict
from tests.weights import write_lineart, write_lineart_anime, write_pidinet


def assert_close(ours: np.ndarray, expected: np.ndarray) -> None:
    """Equal within 1 grey level (float rounding differs between tensor memory layouts)."""
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01, (diff.max(), np.mean(diff > 0))


#: offline, no user weights, an empty Hugging Face cache (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("offline_weights")

LEARNED = {
    "lineart": ["sk_model.pth", "sk_model2.pth"],
    "lineart_anime": ["netG.pth"],
    "softedge": ["table5_pidinet.pth"],
}


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("new-weights")
    for write in (write_lineart, write_lineart_anime, write_pidinet):
        write(folder)
    yield folder
    clear_cache()


def make(name: str, weights_dir: Path, **params):
    return create(name, weights_dir=str(weights_dir), device="cpu", **params)


@pytest.mark.parametrize("name", sorted(LEARNED))  # coarse / safe: in their own tests below
def test_real_photos_keep_size_and_batch_equals_single(weights_dir, photos, name):
    annotator = make(name, weights_dir)
    batch = annotator.annotate_batch(photos, keys=["a", "b"])
    for image, result in zip(photos, batch, strict=True):
        out = result.maps[name]
        assert out.shape == image.shape[:2] and out.dtype == np.uint8
        assert np.array_equal(out, annotator(image))
        assert out.std() > 0  # the random network reacts to the photo
    identity = annotator.weights_identity()
    assert [w["file"] for w in identity] == [LEARNED[name][0]]
    assert len(identity[0]["sha256"]) == 64


def test_lineart_is_inverted_sigmoid_of_rgb_over_255(weights_dir, photos):
    annotator = make("lineart", weights_dir)
    image = photos[0][:64, :96]  # a multiple of 4: no padding, as ControlNet's 64-multiples
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    annotator.load()
    with torch.inference_mode():
        darkness = annotator.model(x)[0, 0].numpy()
    expected = 255 - (darkness * 255.0).clip(0, 255).astype(np.uint8)
    assert_close(annotator(image), expected)


def test_lineart_coarse_uses_the_other_file(weights_dir, photos):
    fine, coarse = make("lineart", weights_dir), make("lineart", weights_dir, coarse=True)
    assert not np.array_equal(fine(photos[0]), coarse(photos[0]))
    assert [w["file"] for w in coarse.weights_identity()] == ["sk_model2.pth"]


def test_lineart_anime_resizes_to_256_multiples_and_back(weights_dir, photos):
    annotator = make("lineart_anime", weights_dir)
    image = photos[1]  # 77 x W -> works at 256 x 256k, then bicubic back
    height, width = image.shape[:2]
    annotator.load()
    big = cv2.resize(image, (256 * -(-width // 256), 256), interpolation=cv2.INTER_CUBIC)
    x = torch.from_numpy(big).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.inference_mode():
        line = (annotator.model(x)[0, 0] * 127.5 + 127.5).numpy()
    back = cv2.resize(line, (width, height), interpolation=cv2.INTER_CUBIC)
    assert_close(annotator(image), 255 - back.clip(0, 255).astype(np.uint8))


def test_softedge_feeds_bgr_and_keeps_the_fused_output(weights_dir, photos):
    annotator = make("softedge", weights_dir)
    image = photos[0][:64, :96]
    annotator.load()
    bgr = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        outputs = annotator.model(bgr)
    assert len(outputs) == 5
    fused = outputs[-1][0, 0].numpy()
    assert_close(annotator(image), (fused * 255.0).clip(0, 255).astype(np.uint8))
    # ControlNet's safe_step: 3 levels (0, 127, 255) from floor(p * 3) / 2
    safe = make("softedge", weights_dir, safe=True)(image)
    levels = np.minimum((fused.astype(np.float32) * 3).astype(np.int32) / 2.0, 1.0)
    assert_close(safe, (levels * 255).clip(0, 255).astype(np.uint8))
    assert set(np.unique(safe)) <= {0, 127, 255}


def test_pixel_difference_convolutions_follow_pidinet():
    """cd: conv minus centre x kernel sum; ad: w - w[clockwise]; rd: 5x5 outer minus inner ring."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(1, 1, 9, 9)).astype(np.float32))
    w = torch.from_numpy(rng.normal(size=(1, 1, 3, 3)).astype(np.float32))
    cx, cy = 4, 4
    patch3 = x[0, 0, cy - 1 : cy + 2, cx - 1 : cx + 2]
    centre = x[0, 0, cy, cx]
    cd = pdc_conv("cd", x, w)[0, 0, cy, cx]
    assert torch.isclose(cd, ((patch3 - centre) * w[0, 0]).sum(), atol=1e-5)
    flat = w[0, 0].flatten()
    clockwise = flat[[3, 0, 1, 6, 4, 2, 7, 8, 5]]
    ad = pdc_conv("ad", x, w)[0, 0, cy, cx]
    assert torch.isclose(ad, (patch3.flatten() * (flat - clockwise)).sum(), atol=1e-5)
    patch5 = x[0, 0, cy - 2 : cy + 3, cx - 2 : cx + 3].flatten()
    outer = patch5[[0, 2, 4, 10, 14, 20, 22, 24]]
    inner = patch5[[6, 7, 8, 11, 13, 16, 17, 18]]
    rd = pdc_conv("rd", x, w)[0, 0, cy, cx]
    assert torch.isclose(rd, ((outer - inner) * flat[1:]).sum(), atol=1e-5)


def test_published_layouts(weights_dir):
    sk = load_state_dict(weights_dir / "sk_model.pth")
    assert len(sk) == 24 and tuple(sk["model0.1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(sk["model2.2.conv_block.5.weight"].shape) == (256, 256, 3, 3)
    assert tuple(sk["model4.1.weight"].shape) == (1, 64, 7, 7)
    anime = torch.load(weights_dir / "netG.pth", weights_only=True)
    assert all(k.startswith("module.model.model.") for k in anime)
    assert sum(v.numel() for v in anime.values()) == 54_405_505
    raw = torch.load(weights_dir / "table5_pidinet.pth", weights_only=True)
    pidi = raw["state_dict"]
    assert len(pidi) == 83 and sum(v.numel() for v in pidi.values()) == 710_149
    assert tuple(pidi["module.init_block.weight"].shape) == (60, 3, 3, 3)
    assert tuple(pidi["module.dilations.3.conv2_4.weight"].shape) == (24, 24, 3, 3)
    assert tuple(pidi["module.block4_1.shortcut.weight"].shape) == (240, 240, 1, 1)


@pytest.mark.parametrize("name", sorted(LEARNED))
def test_missing_weights_give_one_line(tmp_path, name):
    annotator = create(name, weights_dir=str(tmp_path), device="cpu")
    with pytest.raises(WeightsError) as err:
        annotator.load()
    message = str(err.value)
    assert "\n" not in message and LEARNED[name][0] in message and str(tmp_path) in message


@pytest.mark.parametrize("name", sorted(LEARNED))
def test_strict_loading_rejects_a_missing_key(weights_dir, tmp_path, name):
    filename = LEARNED[name][0]
    source = torch.load(weights_dir / filename, weights_only=True)
    state = source.get("state_dict", source)
    state.pop(sorted(state)[0])
    torch.save(source, tmp_path / filename)
    with pytest.raises(WeightsError, match=f"{filename} does not match the network: missing keys"):
        create(name, weights_dir=str(tmp_path), device="cpu").load()


def test_cli_lists_learned_files_and_runs_them(cli, weights_dir, photo_paths, tmp_path):
    rows = json.loads(cli("weights", "--json", "--weights-dir", weights_dir, check=True).stdout)
    found = {(r["annotator"], r["name"]): r["present"] for r in rows}
    for name, files in LEARNED.items():
        assert all(found[(name, f)] for f in files), name
    listed = {r["name"]: r for r in json.loads(cli("annotators", "--json", check=True).stdout)}
    assert set(listed) >= set(LEARNED)
    assert list(listed["lineart"]["weights_by_backend"]) == ["fine", "coarse"]
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo_paths[0], src / "a.jpg")
    out = tmp_path / "out"
    proc = cli(
        "annotate", src, "-o", out, "-a", ",".join(sorted(LEARNED)), "--resolution", "96",
        "--weights-dir", weights_dir, "--param", "softedge.safe=true",
        env={"HINTSET_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name in LEARNED:
        written = cv2.imread(str(out / f"a.{name}.png"), cv2.IMREAD_UNCHANGED)
        assert written is not None and written.ndim == 2 and min(written.shape) == 96


def test_cli_without_weights_fails_with_one_line(cli, photo_paths, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo_paths[0], src / "a.jpg")
    proc = cli(
        "annotate", src, "-o", tmp_path / "out", "-a", "softedge",
        "--weights-dir", tmp_path / "none", env={"HINTSET_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "table5_pidinet.pth" in line]
    assert len(errors) == 1 and "missing weights" in errors[0]
