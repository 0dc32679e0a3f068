"""A corpus of bad and odd-but-valid image files, generated on the fly for tests.

``write_corpus(folder, photo)`` writes every case and returns what each should do:
``BAD`` maps a file name to a fragment of the expected error, ``ODD`` lists files that
must decode (with a known content check in the tests).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: file name -> fragment of the one-line reason it must fail with
BAD = {
    "truncated.jpg": "truncated",
    "zero.jpg": "empty file",
    "text.jpg": "not an image",
    "bomb.png": "too large",
}
#: files that must decode to a valid RGB image
ODD = ["cmyk.jpg", "deep16.png", "gray.png", "rgba.png", "palette.png", "exif_rotated.jpg"]


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A 64x32 (w x h) JPEG, red left half, blue right, with EXIF orientation 6 (rotate 90 CW)."""
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, :32] = (255, 0, 0)
    arr[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(Image.fromarray(arr), "JPEG", quality=95, exif=exif)


def write_corpus(folder: Path, photo: Path) -> Path:
    """Write every bad and odd case into ``folder`` (created); return it."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = photo.read_bytes()
    files = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "zero.jpg": b"",
        "text.jpg": b"this is a text file, not a JPEG\n" * 4,
        "bomb.png": png_with_header(50000, 50000),
        "cmyk.jpg": encoded(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95),
        "deep16.png": encoded(
            Image.fromarray(np.full((30, 40), 32896, np.uint16)), "PNG"
        ),  # 32896/65535*255 = 128
        "gray.png": encoded(Image.new("L", (40, 30), 77), "PNG"),
        "rgba.png": encoded(Image.new("RGBA", (40, 30), (10, 20, 30, 0)), "PNG"),
        "palette.png": encoded(
            Image.new("RGB", (40, 30), (200, 40, 10)).convert("P", palette=Image.Palette.ADAPTIVE),
            "PNG",
        ),
        "exif_rotated.jpg": exif_rotated_jpeg(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder
