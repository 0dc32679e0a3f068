"""Image decoding in one place: bytes -> upright HxWx3 uint8 RGB, or one clear DecodeError.

Handles EXIF orientation, gray/palette/RGBA/LA (alpha composited on white),
16-bit and CMYK inputs, and guards against decompression bombs before any pixel
is decoded. Also the short-side resize every part of hintset uses.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

#: Default pixel limit (about 12k x 12k): larger images are rejected before decoding.
MAX_PIXELS = 150_000_000
#: Smallest side accepted; smaller images are useless as training data.
MIN_SIDE = 8

# We apply our own limit; PIL's own bomb check would raise a different error type.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


class DecodeError(ValueError):
    """An input could not be turned into an RGB image; ``str(err)`` is a one-line reason."""


class Decoded(NamedTuple):
    """A decoded image and its true size: ``size`` is (width, height) of the full decode,
    EXIF-upright, even when ``rgb`` was decoded at a reduced (draft) size."""

    rgb: np.ndarray
    size: tuple[int, int]


def decode_image(data: bytes, **kwargs: Any) -> np.ndarray:
    """Decode encoded image bytes to an upright HxWx3 uint8 RGB array (see :func:`decode`)."""
    return decode(data, **kwargs).rgb


def decode(
    data: bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
    draft_short_side: int = 0,
) -> Decoded:
    """Decode encoded image bytes to an upright HxWx3 uint8 RGB array and its full size.

    ``draft_short_side`` lets JPEG decoding skip detail it would throw away: the
    result's short side stays >= that value (pass the target resolution).
    """
    if len(data) == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError(f"not an image ({sniff(data)}, {len(data):,} bytes)") from None
    except Exception as err:  # noqa: BLE001 - any parser failure is a bad input
        raise DecodeError(f"unreadable image header: {_reason(err)}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise DecodeError(
            f"image too large: {width}x{height} = {width * height:,} pixels "
            f"exceeds the limit of {max_pixels:,} (decompression-bomb guard)"
        )
    if min(width, height) < min_side:
        raise DecodeError(f"image too small: {width}x{height} (minimum side {min_side})")
    if img.format == "JPEG":
        check_jpeg_data(data, width, height)
    size = (height, width) if _orientation(img) in (5, 6, 7, 8) else (width, height)
    fast = _decode_jpeg_with_opencv(data, img, draft_short_side)
    if fast is not None:
        return Decoded(fast, size)
    if draft_short_side and img.format == "JPEG" and img.mode in ("RGB", "L"):
        scale = min(width, height) / draft_short_side
        if scale >= 2:
            img.draft(img.mode, (int(width / scale) + 1, int(height / scale) + 1))
    try:
        img.load()
        img = ImageOps.exif_transpose(img, in_place=False) if _orientation(img) > 1 else img
    except Exception as err:  # noqa: BLE001 - truncated/corrupt data raises OSError & co
        raise DecodeError(
            f"corrupt or truncated image data ({img.format}): {_reason(err)}"
        ) from None
    return Decoded(to_rgb(img), size)


_MAGIC = ((b"%PDF", "application/pdf"), (b"\x1f\x8b", "application/gzip"),
          (b"PK\x03\x04", "application/zip"), (b"ftyp", "video/mp4"))  # fmt: skip


_BYTES = re.compile(r"""b(['"]).*?(?<!\\)\1""")


def _reason(err: BaseException) -> str:
    """A decoder's message without the input bytes it may quote (``chunk b'..'``), short."""
    text = " ".join(_BYTES.sub("<bytes>", str(err)).split())
    return text if len(text) <= 120 else text[:117] + "..."


def sniff(data: bytes) -> str:
    """A media type guessed from the first bytes (``text/html``, ``application/pdf``, ...).

    Errors name this, never the bytes themselves: an input may be any server's answer.
    """
    head = data[:512]
    for magic, kind in _MAGIC:
        if head.startswith(magic) or (kind == "video/mp4" and head[4:8] == magic):
            return kind
    if any(b < 9 or 13 < b < 32 or b == 127 for b in head):  # control bytes: not text
        return "application/octet-stream"
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n").lower()
    if text.startswith(("<!doctype html", "<html", "<head", "<body")):
        return "text/html"
    if text.startswith(("<?xml", "<svg")):
        return "image/svg+xml" if "<svg" in text else "application/xml"
    return "application/json" if text.startswith(("{", "[")) else "text/plain"


#: Huffman-coded JPEG frame types -> fewest bits one 8x8 block can take (sequential: a DC
#: code and an end-of-block code of >= 1 bit each; progressive: the DC scan's code)
_MIN_BITS_PER_BLOCK = {0xC0: 2, 0xC1: 2, 0xC2: 1}


def check_jpeg_data(data: bytes, width: int, height: int) -> None:
    """Raise DecodeError when the file is too short to hold the image its header declares.

    Decoders (OpenCV and Pillow alike) pad such data with grey and only warn; a header
    patched to 12000x12000 would otherwise become a flat image with status ok.
    """
    frame = _jpeg_frame(data)
    if frame is None or frame[0] not in _MIN_BITS_PER_BLOCK:
        return
    marker, sampling = frame
    h_max = max(h for h, _ in sampling)
    v_max = max(v for _, v in sampling)
    if len(sampling) == 1:
        blocks = -(-width // 8) * -(-height // 8)
    else:
        mcus = -(-width // (8 * h_max)) * -(-height // (8 * v_max))
        blocks = mcus * sum(h * v for h, v in sampling)
    needed = blocks * _MIN_BITS_PER_BLOCK[marker] // 8
    if needed > len(data):
        raise DecodeError(
            f"corrupt JPEG data: the header declares {width}x{height} ({blocks:,} blocks, "
            f"at least {needed:,} bytes) but the file has {len(data):,} bytes"
        )


def _jpeg_frame(data: bytes) -> tuple[int, list[tuple[int, int]]] | None:
    """(SOF marker, per-component (h, v) sampling factors) from a JPEG header, or None."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            count = data[pos + 9] if pos + 9 < len(data) else 0
            comps = data[pos + 10 : pos + 10 + 3 * count]
            sampling = [(b >> 4, b & 15) for b in comps[1::3]]
            if len(sampling) != count or not count or not all(h and v for h, v in sampling):
                return None
            return marker, sampling
        if marker in (0xDA, 0xD9):  # scan or end before any frame header
            return None
        pos += 2 + length
    return None


_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
            (2, cv2.IMREAD_REDUCED_COLOR_2))  # fmt: skip


def _decode_jpeg_with_opencv(
    data: bytes, img: Image.Image, draft_short_side: int
) -> np.ndarray | None:
    """Decode a complete 8-bit RGB/gray JPEG with OpenCV (about 1 ms faster than Pillow).

    Only for files that end with the JPEG end-of-image marker: OpenCV silently
    pads truncated JPEGs, so anything else goes through Pillow, which rejects them.
    OpenCV applies the EXIF orientation itself. Returns None to fall back to Pillow.
    """
    if img.format != "JPEG" or img.mode not in ("RGB", "L"):
        return None
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None
    flag = cv2.IMREAD_COLOR
    short = min(img.size)
    for factor, reduced in _REDUCED:
        if draft_short_side and short // factor >= draft_short_side:
            flag = reduced
            break
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = upright, 5-8 swap width and height); 1 without EXIF."""
    if "exif" not in img.info:
        return 1
    return int(img.getexif().get(0x0112, 1) or 1)


def to_rgb(img: Image.Image) -> np.ndarray:
    """Normalise any PIL mode to HxWx3 uint8 RGB (alpha over white, 16-bit scaled to 8-bit)."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        full_scale = 65535.0 if mode != "F" else max(1.0, float(arr.max()))
        if mode == "I" and arr.max() <= 255:
            full_scale = 255.0
        gray = np.clip(np.rint(arr * (255.0 / full_scale)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        rgb = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        return np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    if mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def load_image(path: str | Path, **kwargs) -> np.ndarray:
    """Read and decode a file; I/O problems become DecodeError too."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DecodeError(f"cannot read file: {err.strerror or err}") from None
    return decode_image(data, **kwargs)


def resized_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) after scaling the short side to ``resolution`` (0: unchanged)."""
    if resolution <= 0 or min(height, width) == resolution:
        return width, height
    scale = resolution / min(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_short_side(rgb: np.ndarray, resolution: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Resize so the short side equals ``resolution`` (0 keeps the size); aspect ratio kept.

    The target size is checked against ``max_pixels`` first (DecodeError if larger): a
    2000000x8 strip at 512 would otherwise ask OpenCV for 196 GB.
    """
    height, width = rgb.shape[:2]
    size = resized_size(width, height, resolution)
    if size == (width, height):
        return rgb
    if size[0] * size[1] > max_pixels:
        raise DecodeError(
            f"resized image too large: {width}x{height} at short side {resolution} becomes "
            f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over the limit of {max_pixels:,}"
        )
    interpolation = cv2.INTER_AREA if size[0] < width else cv2.INTER_CUBIC
    return cv2.resize(rgb, size, interpolation=interpolation)
