"""Every annotator declares the per-sample stats it emits (``stats``), which ``--filter`` checks
rules against: run each one on a real photo and compare what it emits with what it declares.

Annotators that need no weights run as they are; learned ones with random weights in the
published layout (tiny configs where there are any). The two expensive checkpoints are not
written here; their stats come from the same helpers as checked ones (see ``NOT_RUN``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import annotators
from annotators import create, list_annotators
from annotators.base import Annotator
from annotators.learned import clear_cache
from pipeline.decode import load_image, resize_short_side
from tests.weights import (
    write_animal_pose,
    write_depth,
    write_dwpose,
    write_hed,
    write_lineart,
    write_mlsd,
    write_pidinet,
    write_sam,
    write_seg,
    write_teed,
)

pytestmark = pytest.mark.usefixtures("offline_weights")

#: (annotator, parameters); learned ones get ``weights_dir`` and ``device=cpu`` added
CASES = [
    ("canny", {}),
    ("canny", {"random_thresholds": True}),
    ("lines", {}),
    ("lines", {"backend": "hough"}),
    ("lines", {"backend": "mlsd"}),
    ("tile", {}),
    ("tile", {"mode": "resample", "random_factor": True}),
    ("tile", {"mode": "blur"}),
    ("shuffle", {}),
    ("inpaint", {"masked_image": True}),
    ("pose", {"backend": "dwpose", "hands": True, "face": True}),  # tiny ONNX graphs
    ("hed", {}),
    ("scribble", {}),
    ("softedge", {}),
    ("lineart", {}),
    ("teed", {}),
    ("anyline", {}),
    ("depth", {"model": "dpt-hybrid"}),
    ("seg", {"model": "segformer-b0", "resolution": 96}),
    ("normal", {"backend": "depth"}),
    ("sam", {"points_per_side": 4}),
    ("animal_pose", {}),  # tiny ONNX graphs (its detector replaces dwpose's: no person found)
]
#: registered annotators whose weights are too costly to write here, and why they are covered
NOT_RUN = {
    "lineart_anime": "218 MB netG.pth; its stat comes from learned.gray_annotations, as lineart's",
    "face": "face_landmarker.task cannot be made here; tests/test_pose_bundled.py checks 'faces'",
    "densepose": "runs only with the written TorchScript's sha256 trusted; tests/test_densepose.py "
    "checks both stats",
}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stats-weights")
    for write in (write_hed, write_mlsd, write_pidinet, write_lineart, write_teed):
        write(folder)
    write_depth(folder, tiny=True, models=["dpt-hybrid"])
    write_seg(folder, tiny=True, models=["segformer-b0"])
    write_dwpose(folder, tiny=True)
    write_animal_pose(folder)
    write_sam(folder)
    yield folder
    clear_cache()


@pytest.fixture(scope="module")
def photo(photo_paths) -> np.ndarray:
    return resize_short_side(load_image(photo_paths[3]), 96)


def real_annotators() -> list[str]:
    return [n for n in list_annotators() if not n.startswith("test_")]


def test_every_annotator_declares_its_stats():
    for name in real_annotators():
        declared_by = [k for k in annotators.get(name).__mro__[:-1] if "stats" in vars(k)]
        assert [k for k in declared_by if k is not Annotator], (
            f"{name} does not declare `stats` (the names in Annotation.stats; () for none)"
        )


def test_every_annotator_is_checked_here():
    checked = {name for name, _ in CASES} | set(NOT_RUN)
    missing = sorted(set(real_annotators()) - checked)
    assert not missing, f"add {missing} to CASES (or NOT_RUN with a reason) in this file"


@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_emitted_stats_equal_declared(name, params, photo, weights_dir):
    cls = annotators.get(name)
    if "weights_dir" in {p.name for p in cls.params}:  # learned (or with a learned backend)
        params = {**params, "weights_dir": str(weights_dir), "device": "cpu"}
    annotator = create(name, **params)
    emitted = annotator.annotate_batch([photo, photo[:, ::-1].copy()], keys=["a", "b"])
    for annotation in emitted:
        assert sorted(annotation.stats) == sorted(annotator.stats)
        assert all(isinstance(v, float) for v in annotation.stats.values())
    assert set(annotator.stats) <= set(cls.stats)  # an instance only narrows the class's list
