"""A contact sheet of a dataset: each sample's image, caption and every map side by side."""

from __future__ import annotations

import base64
import html

import cv2
import numpy as np

from pipeline.atomic import atomic_write
from pipeline.decode import decode_image
from pipeline.layout import SHARDS, iter_tar_samples
from pipeline.storage import Storage

THUMB = 192


def read_samples(root: str, count: int) -> list[dict[str, bytes]]:
    """The first ``count`` samples of the dataset as {extension: bytes} (plus ``__key__``)."""
    storage = Storage(root)
    samples: list[dict[str, bytes]] = []
    for name in storage.list(SHARDS):
        with storage.fs.open(storage.path(f"{SHARDS}/{name}"), "rb") as handle:
            for key, members in iter_tar_samples(handle):
                if len(samples) == count:
                    return samples
                samples.append({"__key__": key.encode(), **members})
    return samples


def thumbnail(data: bytes) -> np.ndarray:
    """An RGB thumbnail THUMB px high of an image or map."""
    rgb = decode_image(data, min_side=1)
    scale = THUMB / rgb.shape[0]
    return cv2.resize(
        rgb, (max(1, round(rgb.shape[1] * scale)), THUMB), interpolation=cv2.INTER_AREA
    )


def panels(sample: dict[str, bytes]) -> list[tuple[str, np.ndarray]]:
    """(label, thumbnail) for the image and each map, image first: ``image``, ``canny``, ..."""
    items = [(ext, data) for ext, data in sample.items() if ext.endswith(("jpg", "png", "webp"))]
    items.sort(key=lambda kv: (kv[0].count("."), kv[0]))
    return [(label(ext), thumbnail(data)) for ext, data in items]


def label(ext: str) -> str:
    """What a panel shows: ``image`` for the sample's image, else the map name (``canny``)."""
    return ext.rsplit(".", 1)[0] if "." in ext else "image"


LABEL_HEIGHT = 18


def label_band(names: list[str], widths: list[int], width: int) -> np.ndarray:
    """A dark strip with each panel's name at the left edge of its column."""
    band = np.full((LABEL_HEIGHT, width, 3), 40, np.uint8)
    x = 0
    for name, panel_width in zip(names, widths, strict=True):
        cv2.putText(band, name, (x + 4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)  # fmt: skip
        x += panel_width
    return band


def write_html(samples: list[dict[str, bytes]], path: str) -> None:
    """An HTML page with inline thumbnails, captions and map names."""
    rows = []
    for sample in samples:
        cells = "".join(
            f'<figure><img src="data:image/jpeg;base64,{_jpeg_b64(img)}"><figcaption>'
            f"{html.escape(label)}</figcaption></figure>"
            for label, img in panels(sample)
        )
        caption = html.escape(sample.get("txt", b"").decode("utf-8", "replace"))
        rows.append(f"<section><h3>{html.escape(sample['__key__'].decode())}</h3>"
                    f"<p>{caption}</p><div>{cells}</div></section>")  # fmt: skip
    style = ("body{font-family:sans-serif;background:#222;color:#eee}div{display:flex;gap:6px}"
             "figure{margin:0}figcaption{font-size:12px;text-align:center}")  # fmt: skip
    page = f"<!doctype html><meta charset=utf-8><style>{style}</style>{''.join(rows)}"
    atomic_write(path, page.encode("utf-8"))


def write_png(samples: list[dict[str, bytes]], path: str) -> None:
    """A PNG contact sheet: one row per sample, caption above, then each column's name
    (image, canny, ...) above its panel."""
    cells = [panels(sample) for sample in samples]
    strips = [np.hstack([img for _, img in row]) for row in cells]
    width = max(strip.shape[1] for strip in strips)
    rows = []
    for sample, row, strip in zip(samples, cells, strips, strict=True):
        header = np.zeros((24, width, 3), np.uint8)
        text = sample.get("txt", b"").decode("utf-8", "replace")[:120]
        cv2.putText(header, f"{sample['__key__'].decode()}: {text}", (4, 17),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
        names = label_band([name for name, _ in row], [img.shape[1] for _, img in row], width)
        body = np.pad(strip, ((0, 4), (0, width - strip.shape[1]), (0, 0)))
        rows.append(np.vstack([header, names, body]))
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("the contact sheet could not be encoded as PNG")
    atomic_write(path, png.tobytes())


def _jpeg_b64(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return base64.b64encode(buf.tobytes()).decode()
