"""Decoding: bad inputs fail with one clear reason; odd-but-valid inputs become correct RGB."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.decode import DecodeError, decode_image, load_image, resize_short_side
from tests.corpus import BAD, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo_paths):
    return write_corpus(tmp_path_factory.mktemp("corpus"), photo_paths[0])


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_raise_one_line_reason(corpus, name):
    with pytest.raises(DecodeError) as info:
        load_image(corpus / name)
    message = str(info.value)
    assert BAD[name] in message
    assert "\n" not in message


def test_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")


def test_bomb_is_rejected_before_decoding(corpus):
    with pytest.raises(DecodeError, match="50000x50000"):
        load_image(corpus / "bomb.png")


def test_pixel_limit_is_configurable(photo_paths):
    data = photo_paths[0].read_bytes()
    with pytest.raises(DecodeError, match="too large"):
        decode_image(data, max_pixels=1000)


def test_cmyk_becomes_rgb(corpus):
    rgb = load_image(corpus / "cmyk.jpg")
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    red, green, blue = rgb[15, 20].astype(int)
    assert red > 230 and green < 25 and blue < 25  # CMYK (0,255,255,0) is red


def test_16_bit_is_scaled_to_8_bit(corpus):
    rgb = load_image(corpus / "deep16.png")
    assert rgb.shape == (30, 40, 3)
    assert np.all(rgb == 128)


def test_gray_is_replicated(corpus):
    assert np.all(load_image(corpus / "gray.png") == 77)


def test_transparent_rgba_is_composited_on_white(corpus):
    assert np.all(load_image(corpus / "rgba.png") == 255)


def test_palette_colours_are_kept(corpus):
    rgb = load_image(corpus / "palette.png")
    assert tuple(rgb[0, 0]) == (200, 40, 10)


def test_exif_orientation_is_applied(corpus):
    rgb = load_image(corpus / "exif_rotated.jpg")
    assert rgb.shape == (64, 32, 3)  # stored 64 wide, 32 high; displayed upright as 32x64
    top, bottom = rgb[4, 16].astype(int), rgb[60, 16].astype(int)
    assert top[0] > 200 and top[2] < 60  # red half now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_real_photos_decode(photo_paths):
    for path in photo_paths:
        rgb = load_image(path)
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8


def test_draft_decoding_keeps_short_side_at_least_target(photo_paths):
    rgb = decode_image(photo_paths[0].read_bytes(), draft_short_side=100)
    assert min(rgb.shape[:2]) >= 100


@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (333, 1000), (512, 512)])
def test_resize_short_side(shape):
    rgb = np.zeros((*shape, 3), np.uint8)
    out = resize_short_side(rgb, 256)
    assert min(out.shape[:2]) == 256
    ratio_in, ratio_out = shape[1] / shape[0], out.shape[1] / out.shape[0]
    assert abs(ratio_in - ratio_out) < 0.01
    assert resize_short_side(rgb, 0) is rgb


def test_opencv_and_pillow_paths_agree(photo_paths):
    from PIL import Image

    from pipeline.decode import to_rgb

    for path in photo_paths[:5]:
        fast = load_image(path)
        with Image.open(path) as img:
            slow = to_rgb(img.convert("RGB"))
        assert fast.shape == slow.shape
        assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 1.0


def test_trailing_padding_still_decodes(photo_paths):
    data = photo_paths[0].read_bytes() + b"\x00" * 64
    assert decode_image(data).shape == load_image(photo_paths[0]).shape


def test_reduced_decoding_of_large_jpeg():
    import cv2

    big = np.zeros((2000, 3000, 3), np.uint8)
    big[:, 1500:] = 255
    data = cv2.imencode(".jpg", big)[1].tobytes()
    small = decode_image(data, draft_short_side=500)
    assert small.shape == (500, 750, 3)  # decoded at 1/4 scale by the JPEG decoder
    assert small[:, :360].mean() < 10 and small[:, 390:].mean() > 245  # edge at 1500/4
