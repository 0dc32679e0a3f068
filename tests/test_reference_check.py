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


def test_annotators_without_a_reference_are_registered_backends():
    """Every (annotator, backend) the check names as having no controlnet_aux 0.0.10 reference
    is a registered backend; issue 25's densepose, animal pose, DSINE and Marigold are named."""
    from annotators import get
    from benchmarks.reference_check import NO_REFERENCE

    for name, backend in NO_REFERENCE:
        assert backend in get(name).catalogue(), (name, backend)
    new = {("densepose", ""), ("animal_pose", ""), ("normal", "dsine"), ("normal", "marigold"),
           ("depth", "marigold-depth-v1-1")}  # fmt: skip
    assert new <= set(NO_REFERENCE)
