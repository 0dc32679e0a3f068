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


def decode_png(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_png` (RGB order for colour maps, 16-bit kept)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("not a decodable PNG")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    return arr
