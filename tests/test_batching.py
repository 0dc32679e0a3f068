"""Batch invariance of every learned annotator, and the automatic batch size.

Each learned annotator (every backend and benchmarked model, random weights in the published
layout) annotates photos of three sizes one at a time and as one call with network batches of
up to 4: each map must depend on its own image alone. Where a network's float kernels give
batch-size-dependent rounding (docs/learned-edges-lines-normals.md, "Batch invariance"), the
difference is bounded by :data:`BOUNDS` instead of zero.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from annotators import create, get, list_annotators
from annotators.learned import CLASSICAL_BATCH, LearnedAnnotator, auto_batch_size, clear_cache
from pipeline.decode import load_image, resize_short_side
from tests import weights as w
from tests import weights_backends as wb

pytestmark = pytest.mark.usefixtures("offline_weights")

TASK = "pose_landmarker_full.task"

#: case -> (annotator, params, writers of its weights)
CASES: dict[str, tuple[str, dict, tuple]] = {
    "anyline": ("anyline", {}, (w.write_teed,)),
    "teed": ("teed", {}, (w.write_teed,)),
    "depth:dpt-hybrid": ("depth", {"model": "dpt-hybrid"}, ("depth",)),
    "depth:depth-anything-v2-small": (
        "depth",
        {"model": "depth-anything-v2-small"},
        ("depth",),
    ),  # fmt: skip
    "hed": ("hed", {}, (w.write_hed,)),
    "scribble": ("scribble", {}, (w.write_hed,)),
    "lineart:fine": ("lineart", {}, (w.write_lineart,)),
    "lineart:coarse": ("lineart", {"coarse": True}, (w.write_lineart,)),
    "lineart_anime": ("lineart_anime", {}, (w.write_lineart_anime,)),
    "lines:mlsd": ("lines", {"backend": "mlsd"}, (w.write_mlsd,)),
    "normal:bae": ("normal", {"backend": "bae"}, (w.write_bae,)),
    "normal:depth": ("normal", {"backend": "depth"}, ("depth",)),
    "pose:openpose": ("pose", {"backend": "openpose", "hands": True}, (w.write_openpose,)),
    "pose:dwpose": ("pose", {"backend": "dwpose", "hands": True, "face": True}, ("dwpose",)),
    "pose:mediapipe": ("pose", {"backend": "mediapipe"}, ("pose_task",)),
    "pose:mediapipe-bundled": ("pose", {"backend": "mediapipe-bundled"}, ()),
    "sam": ("sam", {"points_per_side": 4}, (w.write_sam,)),
    "seg:upernet-convnext-small": ("seg", {"model": "upernet-convnext-small"}, ("seg",)),
    "seg:segformer-b0": ("seg", {"model": "segformer-b0"}, ("seg",)),
    "softedge": ("softedge", {}, (w.write_pidinet,)),
    "animal_pose": ("animal_pose", {}, (w.write_animal_pose,)),
    "densepose": ("densepose", {}, (w.write_densepose,)),  # + the written file's sha256
    "normal:dsine": ("normal", {"backend": "dsine"}, (wb.write_dsine,)),
    "normal:marigold": (
        "normal",
        {"backend": "marigold", "steps": 1, "processing_resolution": 64},
        (wb.write_marigold,),
    ),
}

#: case -> (max grey-level difference, largest fraction of differing pixels) at network batch
#: 4 vs 1 on CPU: float rounding of oneDNN kernels whose blocking depends on the batch (1x1
#: convolutions on small maps run as one GEMM over batch x pixels); see the docs section
BOUNDS: dict[str, tuple[int, float]] = {
    "normal:bae": (1, 0.001),  # continuous map: a rounding step of one level
    "normal:dsine": (1, 0.001),  # NormalBAE's encoder: the same rounding step
    "normal:marigold": (1, 0.001),  # per-image noise; the U-Net's batched GEMMs round apart
    "lines:mlsd": (255, 0.02),  # thresholded: a line whose score sits on the threshold flips
}


def required_cases() -> set[str]:
    """Every learned annotator: per benchmarked model (depth, seg), else per backend that
    loads weights when it has several (``pose:dwpose``), else by name."""
    needed = set()
    for name in list_annotators():
        cls = get(name)
        if not issubclass(cls, LearnedAnnotator):
            continue
        backends = cls.weights_by_backend()
        if models := getattr(cls, "benchmark_models", ()):
            needed |= {f"{name}:{model}" for model in models}
        elif len(backends) > 1:
            needed |= {f"{name}:{backend}" for backend, files in backends.items() if files}
        else:
            needed.add(name)
    return needed


def test_every_learned_annotator_has_a_case():
    assert required_cases() <= set(CASES), sorted(required_cases() - set(CASES))


def write_task(folder: Path) -> None:
    """``pose_landmarker_full.task``: the one scripts/test.sh assembled ($HINTSET_TEST_TASKS),
    else assembled here from mediapipe 0.10.21's bundled models; without either the mediapipe
    case skips (the current mediapipe wheel carries no models to build it from)."""
    import shutil

    given = Path(os.environ.get("HINTSET_TEST_TASKS") or "/nonexistent") / TASK
    if given.is_file():
        shutil.copy(given, folder / TASK)
        return
    try:
        from tests.mediapipe_task import write_pose_task

        write_pose_task(folder)
    except (ImportError, OSError):
        pass


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """Random weights of every network in one folder, written once."""
    folder = tmp_path_factory.mktemp("batching-weights")
    done = set()
    for _, _, writers in CASES.values():
        for writer in writers:
            if writer in done:
                continue
            done.add(writer)
            if writer == "depth":
                w.write_depth(folder, tiny=True, models=("dpt-hybrid", "depth-anything-v2-small"))
            elif writer == "seg":
                w.write_seg(folder, tiny=True, models=("upernet-convnext-small", "segformer-b0"))
            elif writer == "dwpose":
                w.write_dwpose(folder, tiny=True)
            elif writer == "pose_task":
                write_task(folder)
            else:
                writer(folder)
    yield folder
    clear_cache()


@pytest.fixture(scope="session")
def mixed_photos(photo_paths) -> list[np.ndarray]:
    """Five photos of three sizes (two share 64x80, two 72x56): batches of equal size form."""
    sizes = [(64, 80), (72, 56), (64, 80), (48, 48), (72, 56)]
    out = []
    for path, (h, wd) in zip(photo_paths[:5], sizes, strict=True):
        img = resize_short_side(load_image(path), max(h, wd))
        out.append(np.ascontiguousarray(img[:h, :wd]))
    return out


def differences(one: dict, many: dict) -> tuple[int, float]:
    """(max abs difference, fraction of differing values) over all maps of one image."""
    worst, frac = 0, 0.0
    for suffix, a in one.items():
        diff = np.abs(a.astype(np.int64) - many[suffix].astype(np.int64))
        worst, frac = max(worst, int(diff.max())), max(frac, float(np.mean(diff > 0)))
    return worst, frac


@pytest.mark.parametrize("case", sorted(CASES))
def test_maps_do_not_depend_on_batch_mates(weights_dir, mixed_photos, case):
    name, params, _ = CASES[case]
    if case == "pose:mediapipe-bundled":
        pytest.importorskip("mediapipe.python.solutions", reason="needs mediapipe 0.10.21")
    if case == "pose:mediapipe" and not (weights_dir / TASK).is_file():
        pytest.skip(f"needs {TASK} (scripts/test.sh assembles it: $HINTSET_TEST_TASKS)")
    if name == "densepose":  # TorchScript runs only when its sha256 is trusted
        import hashlib

        found = next(weights_dir.rglob("densepose_r50_fpn_dl.torchscript"))
        params = {**params, "trusted_sha256": hashlib.sha256(found.read_bytes()).hexdigest()}
    single = create(name, device="cpu", weights_dir=str(weights_dir), batch_size=1, **params)
    batched = create(name, device="cpu", weights_dir=str(weights_dir), batch_size=4, **params)
    keys = [f"k{i}" for i in range(len(mixed_photos))]
    alone = [
        single.annotate_batch([img], keys=[k])[0] for img, k in zip(mixed_photos, keys, strict=True)
    ]
    together = batched.annotate_batch(mixed_photos, keys=keys)
    limit, share = BOUNDS.get(case, (0, 0.0))
    for a, b in zip(alone, together, strict=True):
        assert a.maps.keys() == b.maps.keys()
        worst, frac = differences(a.maps, b.maps)
        assert worst <= limit and frac <= share, (case, worst, frac)
        if not limit:
            assert json.dumps(a.data, sort_keys=True) == json.dumps(b.data, sort_keys=True)
            assert a.stats == b.stats


def test_auto_network_batch_is_one_on_cpu(weights_dir, mixed_photos):
    annotator = create("hed", device="cpu", weights_dir=str(weights_dir))
    annotator.load()
    assert annotator.config["batch_size"] == 0 and annotator.network_batch_size() == 1
    assert create("hed", batch_size=3).network_batch_size() == 3


def test_auto_batch_size_rule():
    hed, canny = create("hed"), create("canny")
    assert auto_batch_size([canny], gpu=False) == CLASSICAL_BATCH
    assert auto_batch_size([canny, hed], gpu=False) == 1
    assert auto_batch_size([canny, hed], gpu=True) == hed.gpu_batch_size == 16
    assert auto_batch_size([hed, create("normal")], gpu=True) == 16
    assert auto_batch_size([create("normal")], gpu=True) == 8
    # classical backends and mediapipe (TF Lite on the CPU) count as classical
    assert auto_batch_size([create("lines"), create("pose")], gpu=True) == CLASSICAL_BATCH


def test_out_of_memory_on_cuda_halves_the_automatic_batch():
    """A CUDA out-of-memory error redoes the call at half the network batch, which then stays
    (no GPU here: the annotator's batch step raises above 2 images, as a small GPU would)."""
    import torch

    from annotators.base import Annotation

    seen: list[int] = []

    def on_small_gpu(**params):
        annotator = create("hed", device="cpu", **params)
        annotator.device = "cuda"  # what load() sets on a GPU machine

        def step(images, rngs):
            seen.append(annotator.network_batch_size())
            if seen[-1] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return [Annotation(maps={"hed": np.zeros(i.shape[:2], np.uint8)}) for i in images]

        annotator._annotate_batch = step
        return annotator

    annotator, photos = on_small_gpu(), [np.zeros((8, 8, 3), np.uint8)] * 4
    assert len(annotator.annotate_batch(photos)) == 4
    assert seen == [16, 8, 4, 2] and annotator.network_batch_size() == 2
    annotator.annotate_batch(photos)
    assert seen[-1] == 2  # the halved size stays
    with pytest.raises(torch.cuda.OutOfMemoryError):  # an explicit size is never changed
        on_small_gpu(batch_size=4).annotate_batch(photos)


def test_annotate_records_the_automatic_batch_size(cli, photo_paths, tmp_path):
    out = tmp_path / "maps"
    result = cli("annotate", str(photo_paths[0]), "-o", str(out), "-a", "canny", "-q")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "report.json").read_text())["batch_size"] == CLASSICAL_BATCH
    result = cli("annotate", str(photo_paths[0]), "-o", str(tmp_path / "b"), "-a", "canny",
                 "--batch-size", "3", "-q")  # fmt: skip
    assert json.loads((tmp_path / "b" / "report.json").read_text())["batch_size"] == 3


def test_help_says_what_the_default_batch_size_is(cli):
    for command in ("annotate", "build"):
        text = " ".join(cli(command, "--help").stdout.split())
        assert "default: auto: 1 on CPU when a learned annotator runs" in text
