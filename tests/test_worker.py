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
