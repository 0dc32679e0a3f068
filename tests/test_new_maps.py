"""shuffle, tile, inpaint (and face parameters): ControlNet 1.1 / controlnet_aux conventions on real photos.

The generic contract (size kept, deterministic, batch equals single, odd sizes) runs for
these too in ``test_annotators.py`` (every classical annotator). Here: the published
recipes (fidelity), per-sample seeding and the real-photo behaviour.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from annotators import create
from annotators.shuffle import content_shuffle
from annotators.tile import pyramid_degrade
from pipeline.decode import load_image, resize_short_side


@pytest.fixture(scope="module")
def photo(photo_paths) -> np.ndarray:
    return resize_short_side(load_image(photo_paths[2]), 192)


# -- shuffle ------------------------------------------------------------------------------


def published_shuffle(img: np.ndarray, seed: int, f: int = 256) -> np.ndarray:
    """ControlNet 1.1's recipe stated independently: legacy np.random after np.random.seed,
    coarse uniform grid (H//f+2, W//f+2), bicubic to (W+2f, H+2f), crop f, min-max, x then y."""
    np.random.seed(seed)
    height, width = img.shape[:2]
    fields = []
    for scale in (width - 1, height - 1):
        grid = np.random.uniform(0, 1, size=(height // f + 2, width // f + 2, 1))
        big = cv2.resize(grid, (width + 2 * f, height + 2 * f), interpolation=cv2.INTER_CUBIC)
        field = big[f : f + height, f : f + width]
        field = field - field.min()
        field = field / field.max()
        fields.append(field[:, :, None] * float(scale))
    flow = np.concatenate(fields, axis=2).astype(np.float32)
    return cv2.remap(img, flow, None, cv2.INTER_LINEAR)


@pytest.mark.parametrize("f", [256, 64])
def test_shuffle_matches_controlnet_recipe_with_the_same_draws(photo, f):
    ours = content_shuffle(photo, np.random.RandomState(1234), f)
    assert np.array_equal(ours, published_shuffle(photo, 1234, f))


def test_shuffle_is_seeded_per_sample(photo):
    shuffle = create("shuffle")
    a, a_again, b = (shuffle(photo, key=k) for k in ("a", "a", "b"))
    assert np.array_equal(a, a_again)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, create("shuffle", seed=1)(photo, key="a"))
    assert a.shape == photo.shape and not np.array_equal(a, photo)


def test_shuffle_moves_content_not_colours(photo):
    shuffled = create("shuffle", f=32)(photo, key="x")
    # every output pixel is a bilinear mix of input pixels: the colour range is kept,
    # and a fine flow moves most pixels
    assert shuffled.min() >= photo.min() and shuffled.max() <= photo.max()
    assert np.mean(np.any(shuffled != photo, axis=2)) > 0.5


# -- tile ---------------------------------------------------------------------------------


def test_tile_pyramid_matches_downsample_detector(photo):
    img = np.ascontiguousarray(photo[:128, :192])  # a multiple of 8: pyrUp needs no dstsize
    seed = 5
    rng = np.random.default_rng(seed)
    h = img.astype(np.float32)
    for _ in range(3):
        h += rng.normal(0.0, 16.0, size=h.shape).astype(np.float32)
        h = cv2.pyrDown(h)
    for _ in range(3):
        h = cv2.pyrUp(h)
        h += rng.normal(0.0, 16.0, size=h.shape).astype(np.float32)
    expected = h.clip(0, 255).astype(np.uint8)
    assert np.array_equal(pyramid_degrade(img, np.random.default_rng(seed)), expected)


def test_tile_without_noise_is_a_blur_of_the_image(photo):
    out = create("tile", noise=0.0)(photo)
    assert out.shape == photo.shape
    diff = np.abs(out.astype(int) - photo.astype(int))
    assert 0 < diff.mean() < 30
    # fine detail is lost: the Laplacian energy drops
    assert cv2.Laplacian(out, cv2.CV_32F).var() < 0.5 * cv2.Laplacian(photo, cv2.CV_32F).var()


@pytest.mark.parametrize("mode", ["pyramid", "resample", "blur"])
def test_tile_modes_keep_odd_sizes(mode):
    image = np.random.default_rng(0).integers(0, 256, (37, 101, 3), dtype=np.uint8)
    assert create("tile", mode=mode)(image).shape == image.shape


def test_tile_random_factor_is_seeded_and_recorded(photo):
    tile = create("tile", mode="resample", factor=8.0, random_factor=True)
    first, again = tile.annotate(photo, key="k"), tile.annotate(photo, key="k")
    factor = first.stats["tile_factor"]
    assert 1.0 <= factor <= 8.0 and again.stats["tile_factor"] == factor
    assert tile.annotate(photo, key="other").stats["tile_factor"] != factor


def test_tile_rejects_bad_params():
    with pytest.raises(ValueError, match="factor: 0.5 is outside the allowed range"):
        create("tile", factor=0.5)


# -- inpaint ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["strokes", "boxes", "percentile", "mixed"])
def test_inpaint_masks_are_binary_partial_and_seeded(photo, kind):
    inpaint = create("inpaint", kind=kind)
    coverages = []
    for key in ("a", "b", "c", "d"):
        result = inpaint.annotate(photo, key=key)
        mask = result.maps["inpaint"]
        assert mask.shape == photo.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert 0.0 < result.stats["inpaint_coverage"] < 1.0
        assert np.array_equal(mask, inpaint(photo, key=key))
        coverages.append(result.stats["inpaint_coverage"])
    assert len(set(coverages)) > 1  # different keys, different masks


def test_inpaint_masked_image_blacks_out_the_mask(photo):
    inpaint = create("inpaint", masked_image=True)
    assert inpaint.outputs == ("inpaint", "inpaintmasked")
    result = inpaint.annotate(photo, key="s")
    mask, masked = result.maps["inpaint"] > 0, result.maps["inpaintmasked"]
    assert masked.shape == photo.shape
    assert not masked[mask].any()
    assert np.array_equal(masked[~mask], photo[~mask])


def test_inpaint_percentile_follows_img2mask_rule():
    # one channel is a ramp: whatever the channel, the mask is "value below a percentile"
    ramp = np.tile(np.arange(100, dtype=np.uint8), (20, 1))
    image = np.stack([ramp, ramp, ramp], axis=2)
    mask = create("inpaint", kind="percentile")(image, key="k") > 0
    columns = mask.any(axis=0)
    # masked columns form one contiguous run at one end of the ramp, 10-90% wide
    assert 0.09 <= columns.mean() <= 0.9
    assert columns[0] != columns[-1]
    assert np.array_equal(mask, np.repeat(columns[None], 20, axis=0))


# -- face ---------------------------------------------------------------------------------


def test_face_rejects_bad_params():
    with pytest.raises(ValueError, match="max_faces: 0 is outside"):
        create("face", max_faces=0)
    with pytest.raises(ValueError, match="min_confidence: 1.5 is outside"):
        create("face", min_confidence=1.5)


# -- CLI ----------------------------------------------------------------------------------


def test_cli_lists_and_writes_the_new_maps(cli, photo_paths, tmp_path):
    listed = json.loads(cli("annotators", "--json", check=True).stdout)
    rows = {row["name"]: row for row in listed}
    for name in ("shuffle", "tile", "inpaint"):
        assert name in rows and rows[name]["weights"] == []
    assert [w["file"] for w in rows["face"]["weights"]] == ["face_landmarker.task"]
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(photo_paths[3].read_bytes())
    out = tmp_path / "out"
    cli(
        "annotate", src, "-o", out, "-a", "shuffle,tile,inpaint", "--resolution", "256",
        "--param", "inpaint.masked_image=true", "--param", "shuffle.seed=3", check=True,
    )  # fmt: skip
    image = resize_short_side(load_image(src / "a.jpg"), 256)
    for suffix in ("shuffle", "tile", "inpaint", "inpaintmasked"):
        written = cv2.imread(str(out / f"a.{suffix}.png"), cv2.IMREAD_UNCHANGED)
        assert written is not None and written.shape[:2] == image.shape[:2], suffix
    expected = create("shuffle", seed=3)(image, key="a")
    written = cv2.cvtColor(cv2.imread(str(out / "a.shuffle.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, expected)


def test_build_writes_both_inpaint_maps_and_verifies(cli, photo_paths, tmp_path):
    """Through ``hintset build`` (real Ray): the optional second map lands in the shards."""
    import io
    import tarfile

    src = tmp_path / "in"
    src.mkdir()
    for path in photo_paths[:3]:
        (src / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "ds"
    cli(
        "build", src, "-o", out, "-a", "inpaint,shuffle", "-p", "inpaint.masked_image=true",
        "--resolution", "96", "--workers", "1", "-q", check=True,
    )  # fmt: skip
    assert cli("verify", out).returncode == 0
    names = []
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(fileobj=io.BytesIO(shard.read_bytes())) as tar:
            names += tar.getnames()
    for suffix in ("inpaint.png", "inpaintmasked.png", "shuffle.png"):
        assert sum(n.endswith(suffix) for n in names) == 3, suffix
    manifest = json.loads((out / "manifest.json").read_text())
    assert "inpaintmasked" in json.dumps(manifest)
