"""Encode maps, images and side data to bytes (PNG, JPEG, JSON), deterministically."""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np


def encode_png(arr: np.ndarray) -> bytes:
    """PNG bytes of an HxW (uint8/uint16) or HxWx3 RGB uint8 map."""
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise ValueError(f"PNG encoding failed for array {arr.shape} {arr.dtype}")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an HxWx3 RGB uint8 image."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError(f"JPEG encoding failed for array {rgb.shape}")
    return buf.tobytes()


def encode_json(obj: Any) -> bytes:
    """Compact JSON with sorted keys, so equal data gives equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def encode_text(text: str, what: str = "text") -> bytes:
    """UTF-8 bytes of ``text``; ValueError naming ``what`` when UTF-8 cannot hold it (a lone
    surrogate, from a JSON ``"\\ud800"`` or a file name that was not UTF-8)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{what} is not valid UTF-8 text ({err.reason}: "
                         f"{text[err.start : err.end]!r} at character {err.start})") from None  # fmt: skip


def check_texts(fields: dict[str, Any]) -> None:
    """ValueError naming the first text field of ``fields`` that cannot be stored as UTF-8."""
    for name, value in fields.items():
        if isinstance(value, str):
            encode_text(value, name)


def storable(value: Any) -> Any:
    """``value`` with what UTF-8 cannot hold escaped (``\\ud800``), so a failed sample's
    record (index row, report) can still be written; other values unchanged."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def decode_png(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_png` (RGB order for colour maps, 16-bit kept)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("not a decodable PNG")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    return arr
