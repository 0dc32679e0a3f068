"""benchmarks/reference_check.py reads every image type the pipeline reads, not only ``*.jpg``."""

from __future__ import annotations

import shutil

import cv2

from benchmarks.reference_check import image_paths, photos


def test_reads_png_webp_and_jpeg(photo_paths, tmp_path):
    image = cv2.imread(str(photo_paths[0]))
    cv2.imwrite(str(tmp_path / "b.png"), image)
    cv2.imwrite(str(tmp_path / "c.webp"), image)
    shutil.copy(photo_paths[1], tmp_path / "d.JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    assert [p.name for p in image_paths(tmp_path)] == ["b.png", "c.webp", "d.JPEG"]
    loaded = photos(3, folder=tmp_path)
    assert len(loaded) == 3
    for rgb in loaded:
        assert min(rgb.shape[:2]) == 512 and rgb.shape[0] % 64 == 0 and rgb.shape[1] % 64 == 0
