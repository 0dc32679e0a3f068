"""The shared per-sample worker: formats, failures isolated per sample, batches."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from annotators import Annotation, Annotator, register
from pipeline.encode import decode_png
from pipeline.worker import AnnotatorSpec, Worker, parse_specs


@register
class FailsOnDark(Annotator):
    """Test-only annotator: raises on images darker than 20 on average."""

    name = "test_fails_on_dark"
    outputs = ("mean",)

    def _annotate(self, rgb, rng):
        if rgb.mean() < 20:
            raise RuntimeError("too dark to annotate")
        return Annotation(maps={"mean": np.full(rgb.shape[:2], int(rgb.mean()), np.uint8)})


def encoded(fmt: str, value: int = 128, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
def test_every_supported_format_is_annotated(fmt):
    result = Worker([AnnotatorSpec("canny")], resolution=64).process("k", encoded(fmt))
    assert result.status == "ok", result.error
    assert decode_png(result.files["canny.png"]).shape == (64, 85)


def test_wrong_extension_is_irrelevant(tmp_path):
    (tmp_path / "actually_png.jpg").write_bytes(encoded("PNG"))
    worker = Worker([AnnotatorSpec("canny")], resolution=0)
    result = worker.process("k", (tmp_path / "actually_png.jpg").read_bytes())
    assert result.status == "ok" and result.image.shape == (30, 40, 3)


def test_one_failing_sample_does_not_fail_its_batch():
    worker = Worker([AnnotatorSpec("canny"), AnnotatorSpec("test_fails_on_dark")], resolution=0)
    items = [("bright", encoded("PNG", 200)), ("dark", encoded("PNG", 5)),
             ("broken", b"\x89PNG garbage"), ("grey", encoded("PNG", 100))]  # fmt: skip
    results = {r.key: r for r in worker.process_batch(items)}
    assert results["bright"].status == results["grey"].status == "ok"
    assert set(results["bright"].files) == {"canny.png", "mean.png"}
    assert decode_png(results["grey"].files["mean.png"]).max() == 100
    assert results["dark"].status == "failed"
    assert (
        results["dark"].error == "annotator test_fails_on_dark: RuntimeError: too dark to annotate"
    )
    assert results["dark"].files == {}
    assert results["broken"].status == "failed" and results["broken"].error.startswith("decode: ")


def test_output_suffixes_and_specs():
    specs = parse_specs("canny,lines", ["lines.backend=hough"])
    assert specs[1] == AnnotatorSpec("lines", {"backend": "hough"})
    assert Worker(specs).output_suffixes() == ["canny.png", "lines.png"]


def test_min_size_filters_and_upscaling_is_recorded():
    worker = Worker([AnnotatorSpec("canny")], resolution=64, min_size=32)
    tiny, small, big = (
        worker.process("k", encoded("PNG", size=s)) for s in ((40, 30), (50, 40), (90, 80))
    )
    assert (
        tiny.status == "filtered" and tiny.error == "filtered: 40x30 is smaller than --min-size 32"
    )
    assert tiny.files == {} and tiny.original_size == (40, 30)
    assert small.status == "ok" and small.upscaled and small.size == (80, 64)
    assert big.status == "ok" and not big.upscaled


def test_original_size_is_kept_with_min_size(photo_paths):
    """resolution 0 (--keep-original) decodes at full size even with --min-size set."""
    worker = Worker([AnnotatorSpec("canny")], resolution=0, min_size=64)
    result = worker.process("k", photo_paths[0].read_bytes())
    assert result.size == result.original_size and min(result.size) > 400


def test_resize_target_over_the_pixel_limit_fails_the_sample():
    worker = Worker([AnnotatorSpec("canny")], resolution=4000, max_pixels=2_000_000)
    result = worker.process("k", encoded("PNG", size=(400, 30)))
    assert result.status == "failed" and result.error.startswith(
        "resize: resized image too large: 400x30"
    )
