"""Issue 21 (trust, round 3), points 6, 13, 14, 18, 19, 26, 27: nothing hangs, user files
survive, missing extras and weights are refused before any work, one image cannot stall a worker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.ownership import NotHintsetOutput, owned_files
from pipeline.storage import Storage
from tests.conftest import run_cli
from tests.test_cloud import s3  # noqa: F401 - the moto S3 server fixture
from tests.test_misuse import one_error_line as error_line

FAST = ("-r", "64", "--shard-size", "2", "-w", "1", "-q")


@pytest.fixture(scope="module")
def three_photos(tmp_path_factory, photo_paths) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for path in photo_paths[:3]:
        shutil.copy(path, folder / path.name)
    return folder


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- 13: --overwrite deletes only what the manifest and plan record -------------------------
def test_overwrite_keeps_user_files_inside_the_dataset_folders(tmp_path, three_photos):
    out = tmp_path / "ds"
    assert run_cli("build", three_photos, "-o", out, *FAST).returncode == 0
    mine = {"shards/mine.tar": b"my tar", "stats/notes.json": b"{}", "index/README": b"mine",
            "plan/ideas.txt": b"x", "shards/00007.tar": b"not planned", "notes.txt": b"top"}  # fmt: skip
    for rel, data in mine.items():
        (out / rel).write_bytes(data)
    proc = run_cli("build", three_photos, "-o", out, *FAST, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    after = tree(out)
    assert all(after[rel] == data for rel, data in mine.items())
    assert sorted(n for n in after if n.startswith("shards/0000")) == [
        "shards/00000.tar", "shards/00001.tar", "shards/00007.tar"]  # fmt: skip
    assert run_cli("verify", out).returncode == 0


def test_overwrite_checks_every_target_before_deleting_any(tmp_path, three_photos):
    out = tmp_path / "ds"
    assert run_cli("build", three_photos, "-o", out, *FAST).returncode == 0
    before = tree(out)
    (out / "stats" / "00001.json").unlink()
    (out / "stats" / "00001.json").mkdir()  # a planned name that is not a file hintset wrote
    del before["stats/00001.json"]
    with pytest.raises(NotHintsetOutput, match="not a file hintset wrote"):
        owned_files(Storage(out))
    proc = run_cli("build", three_photos, "-o", out, *FAST, "--overwrite")
    assert proc.returncode == 2 and "not a file hintset wrote" in error_line(proc.stderr)
    assert tree(out) == before  # nothing deleted


# -- 14: a folder of other files is never a build output -----------------------------------
def test_build_into_a_folder_of_other_files_is_refused(tmp_path, three_photos):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("x")
    for extra in ((), ("--overwrite",)):
        proc = run_cli("build", three_photos, "-o", out, *FAST, *extra)
        assert proc.returncode == 2
        assert "not a hintset output" in error_line(proc.stderr)
        assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]


def test_build_into_an_empty_folder_is_fine(tmp_path, three_photos):
    out = tmp_path / "empty"
    out.mkdir()
    assert run_cli("build", three_photos, "-o", out, *FAST).returncode == 0


# -- 13 and 14 on S3 (moto server on 127.0.0.1) ---------------------------------------------
def test_s3_overwrite_keeps_a_user_object_named_index(
    s3,  # noqa: F811
    three_photos,
):
    out = "s3://bucket/trust13"
    assert run_cli("build", three_photos, "-o", out, *FAST).returncode == 0
    s3.pipe("bucket/trust13/index", b"my object named index")
    s3.pipe("bucket/trust13/shards/mine.txt", b"mine")
    proc = run_cli("build", three_photos, "-o", out, *FAST, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    s3.invalidate_cache()
    assert s3.cat("bucket/trust13/index") == b"my object named index"
    assert s3.cat("bucket/trust13/shards/mine.txt") == b"mine"
    assert sorted(n.rsplit("/", 1)[-1] for n in s3.ls("bucket/trust13/shards")) == [
        "00000.tar", "00001.tar", "mine.txt"]  # fmt: skip
    assert json.loads(s3.cat("bucket/trust13/manifest.json"))["status"] == "complete"


def test_s3_build_into_a_prefix_of_other_objects_is_refused(
    s3,  # noqa: F811
    three_photos,
):
    s3.pipe("bucket/trust14/report.csv", b"a,b")
    proc = run_cli("build", three_photos, "-o", "s3://bucket/trust14", *FAST)
    assert proc.returncode == 2 and "not a hintset output" in error_line(proc.stderr)
    s3.invalidate_cache()
    assert s3.ls("bucket/trust14", detail=False) == ["bucket/trust14/report.csv"]


# -- 6: workers Ray cannot place never make a build wait forever ----------------------------
@pytest.fixture(scope="module")
def four_photos(tmp_path_factory, photo_paths) -> Path:
    folder = tmp_path_factory.mktemp("four")
    for path in photo_paths[3:7]:
        shutil.copy(path, folder / path.name)
    return folder


def test_more_workers_than_cpus_build_on_those_that_started(tmp_path, four_photos):
    """4 workers (one per shard) of half the machine's CPUs each: 2 are placed, the build
    runs on them (on 2 cores: 4 one-CPU workers, as in the issue)."""
    from ray._private.utils import get_num_cpus

    cpus = max(1, get_num_cpus() // 2)
    args = ("-r", "64", "--shard-size", "1", "--workers", "8", "--cpus-per-worker", str(cpus),
            "--start-timeout", "8", "-q")  # fmt: skip
    proc = run_cli("build", four_photos, "-o", tmp_path / "ds", *args, timeout=180)
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "workers started (" in line]
    placed = get_num_cpus() // cpus
    assert len(said) == 1, proc.stderr
    assert said[0].startswith(f"{placed} of 4 workers started ("), proc.stderr
    assert said[0].endswith(f"--start-timeout 8 s); building on {placed}"), proc.stderr
    assert "4 ok, 0 failed" in proc.stderr and "in 4 shards" in proc.stderr


def test_a_worker_larger_than_this_machine_is_refused_at_once(tmp_path, four_photos):
    proc = run_cli("build", four_photos, "-o", tmp_path / "ds", *FAST, "--cpus-per-worker", "64")
    assert proc.returncode == 2
    assert "--cpus-per-worker 64 asks for more CPUs than this machine has" in error_line(
        proc.stderr
    )
    assert not (tmp_path / "ds").exists()


def test_no_worker_placed_within_the_timeout_names_what_was_asked_and_free(tmp_path):
    """A cluster (here a local Ray with 1 CPU) that cannot place one 2-CPU worker."""
    import ray

    from pipeline.engine import WorkerSetup
    from pipeline.ray_runner import BuildFailed, RunOptions, run_shards
    from pipeline.units import Unit
    from pipeline.worker import AnnotatorSpec

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)  # fmt: skip
    try:
        options = RunOptions(root=str(tmp_path), setup=WorkerSetup([AnnotatorSpec("canny", {})]),
                             cpus_per_worker=2)  # fmt: skip
        unit = Unit(id=0, kind="files", urls=("x.jpg",), keys=("x",), rels=("x.jpg",))
        with pytest.raises(BuildFailed) as err:
            run_shards([unit], options, workers=1, start_timeout=3)
    finally:
        ray.shutdown()
    assert str(err.value) == (
        "no worker could start within 3 s (--start-timeout): 2 CPU each; "
        "the cluster has 1 CPU (1 free)"
    )


# -- 18: a command or annotator whose extra is missing says which, before any work ----------
@pytest.mark.parametrize("args", [("tiny-base", "{tmp}/base"), ("train", "--data", "{tmp}/ds"),
                                  ("export", "{tmp}", "-o", "{tmp}/export")])  # fmt: skip
def test_training_commands_without_the_train_extra_say_which(args, without, tmp_path):
    proc = run_cli(*(a.format(tmp=tmp_path) for a in args), env=without("torch"))
    assert proc.returncode == 2
    assert error_line(proc.stderr) == (f"error: hintset {args[0]} needs torch (not installed): "
                                       "pip install 'hintset[train]'")  # fmt: skip
    assert run_cli(args[0], "--help", env=without("torch")).returncode == 0


def test_annotate_without_an_annotators_extra_stops_before_any_work(without, tmp_path,
                                                                    three_photos):  # fmt: skip
    out = tmp_path / "out"
    proc = run_cli("annotate", three_photos, "-o", out, "-a", "canny,pose", "-q",
                   env=without("mediapipe"))  # fmt: skip
    assert proc.returncode == 2
    assert error_line(proc.stderr) == ("error: pose backend=mediapipe needs mediapipe (not "
                                       "installed): pip install 'hintset[pose]'")  # fmt: skip
    assert not out.exists()


def test_build_names_every_missing_extra_in_one_line(without, tmp_path, three_photos):
    out = tmp_path / "ds"
    proc = run_cli("build", three_photos, "-o", out, "-a", "hed,pose", "-p", "pose.backend=dwpose",
                   *FAST, env={**without("torch", "onnxruntime"), "HINTSET_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert "hed needs torch (not installed): pip install 'hintset[models]'" in line
    assert (
        "pose backend=dwpose needs onnxruntime (not installed): pip install 'hintset[dwpose]'"
        in line
    )
    assert not out.exists()


# -- 19: missing weights stop annotate and build before any work, and fast ------------------
def test_build_with_missing_weights_changes_nothing(tmp_path, three_photos):
    out = tmp_path / "ds"
    assert run_cli("build", three_photos, "-o", out, *FAST).returncode == 0
    before = tree(out)
    env = {"HINTSET_OFFLINE": "1", "HINTSET_WEIGHTS_DIR": str(tmp_path / "none"),
           "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
    for extra in ((), ("--overwrite",)):
        proc = run_cli("build", three_photos, "-o", out, *FAST, "-a", "canny,hed,lines",
                       "-p", "lines.backend=mlsd", *extra, env=env)  # fmt: skip
        assert proc.returncode == 2
        line = error_line(proc.stderr)
        assert "missing weights ControlNetHED.pth" in line
        assert "missing weights mlsd_large_512_fp32.pth" in line and str(tmp_path / "none") in line
        assert tree(out) == before  # manifest still complete, no plan or lock added
    proc = run_cli("annotate", three_photos, "-o", tmp_path / "maps", "-a", "hed", "-q", env=env)
    assert proc.returncode == 2 and "missing weights ControlNetHED.pth" in error_line(proc.stderr)
    assert not (tmp_path / "maps").exists()


def test_an_unreachable_hub_fails_at_once_without_retries(tmp_path, monkeypatch):
    """Not offline by configuration, but the hub does not answer: no 25 s of retries."""
    import socket
    import time

    from annotators import weights
    from annotators.weights import WeightsError, WeightsFile, resolve

    with socket.socket() as closed:  # a port on 127.0.0.1 nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HINTSET_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    weights.hub_reachable.cache_clear()
    started = time.monotonic()
    try:
        with pytest.raises(WeightsError, match="missing weights nothing.pth"):
            resolve(WeightsFile("nothing.pth", repo_id="someone/nothing"), tmp_path / "none")
    finally:
        weights.hub_reachable.cache_clear()
    assert time.monotonic() - started < 3


# -- 26: one image cannot stall a worker ----------------------------------------------------
def noisy_heatmaps(size: int, parts: int, seed: int = 0):
    """Heatmaps full of peaks (and random PAFs), as random weights or a noise image give."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    bumps = (np.sin(xx / 2.2) * np.sin(yy / 2.2) > 0)[..., None]
    heat = rng.random((size, size, parts)) * 0.05 + 0.6 * bumps * rng.random((size, size, parts))
    return heat, rng.normal(0, 0.5, (size, size, 38))


def test_openpose_keeps_the_highest_127_peaks_in_reference_order():
    import numpy as np

    from annotators.openpose import MAX_PEAKS, find_peaks

    heat, _ = noisy_heatmaps(128, 1)
    everything = find_peaks(heat[:, :, 0], 0.1, max_peaks=10**6)
    kept = find_peaks(heat[:, :, 0], 0.1)
    assert MAX_PEAKS == 127 and len(everything) > 150 and len(kept) == 127
    scores = sorted((p[2] for p in everything), reverse=True)
    assert sorted(p[2] for p in kept) == sorted(scores[:127])
    order = [(y, x) for x, y, _ in kept]
    assert order == sorted(order)  # row-major, as np.nonzero (and the reference) lists them
    three = np.zeros((40, 40))
    three[10, 10], three[20, 20], three[30, 8] = 0.5, 0.9, 0.7
    assert [p[:2] for p in find_peaks(three, 0.001)] == [(10, 10), (20, 20), (8, 30)]
    assert [p[:2] for p in find_peaks(three, 0.001, max_peaks=2)] == [(20, 20), (8, 30)]


@pytest.mark.timeout(120)  # the old grouping (no cap, one pair at a time) ran for minutes here
def test_openpose_grouping_of_a_heatmap_full_of_peaks_is_bounded():
    import time

    from annotators.openpose import PEAK_THRESHOLD, find_peaks, group_people

    heat, paf = noisy_heatmaps(128, 18)
    peaks = [find_peaks(heat[:, :, part], PEAK_THRESHOLD) for part in range(18)]
    assert max(len(p) for p in peaks) == 127
    started = time.monotonic()
    group_people(peaks, paf, 128)
    assert time.monotonic() - started < 30


def test_a_stalled_sample_fails_alone_and_the_shard_completes(tmp_path, three_photos):
    """test_stall sleeps 600 s on the one bright photo; --sample-timeout 2 interrupts it."""
    import time

    out = tmp_path / "ds"
    started = time.monotonic()
    proc = run_cli("build", three_photos, "-o", out, "-a", "canny,test_stall",
                   "-p", "test_stall.threshold=130", "-p", "test_stall.seconds=600",
                   "--sample-timeout", "2", "--import", "tests.plugins", "-r", "64",
                   "--shard-size", "3", "-w", "1", "-q", timeout=400)  # fmt: skip
    assert time.monotonic() - started < 300
    assert proc.returncode == 1, proc.stderr
    assert "2 ok, 1 failed" in proc.stderr and "in 1 shard ->" in proc.stderr
    from pipeline.layout import read_index

    rows = read_index((out / "index" / "00000.parquet").read_bytes())
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 3 and len(failed) == 1
    assert failed[0]["error"] == ("annotator test_stall: SampleTimeout: over the 2 s per-sample "
                                  "time budget (--sample-timeout)")  # fmt: skip
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_the_budget_is_checked_between_annotators_where_it_cannot_interrupt(photos):
    """Off the main thread no timer interrupts; the sample still fails after the annotator
    that ran over, and later annotators skip it."""
    import threading

    import tests.plugins  # noqa: F401 - registers test_slow
    from pipeline.worker import AnnotatorSpec, Result, Worker

    worker = Worker([AnnotatorSpec("test_slow", {"seconds": 0.5}), AnnotatorSpec("canny")],
                    sample_timeout=0.2)  # fmt: skip
    results = [Result(key="a", image=photos[0]), Result(key="b", image=photos[1])]
    thread = threading.Thread(target=worker.run_models, args=(results,))
    thread.start()
    thread.join()
    for result in results:
        assert result.status == "failed"
        assert result.error == ("annotator test_slow: SampleTimeout: over the 0.2 s per-sample "
                                "time budget (--sample-timeout)")  # fmt: skip
        assert "canny" not in result.timings


# -- 27: no empty progress bar before an error; "1 shard"; labelled preview columns ---------
def test_a_refused_build_or_annotate_draws_no_progress_bar(tmp_path, three_photos):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    proc = run_cli("build", three_photos, "-o", out, "-r", "64")  # no -q: the bar would show
    assert proc.returncode == 2 and "not a hintset output" in error_line(proc.stderr)
    maps = tmp_path / "maps"
    assert run_cli("annotate", three_photos, "-o", maps, "-r", "64", "-q").returncode == 0
    proc = run_cli("annotate", three_photos, "-o", maps, "-r", "128")  # other settings: refused
    assert proc.returncode == 2 and "other settings" in error_line(proc.stderr)


def test_the_preview_png_names_each_column(tmp_path, three_photos):
    import cv2

    from pipeline.preview import LABEL_HEIGHT, THUMB

    out = tmp_path / "ds"
    assert run_cli("build", three_photos, "-o", out, *FAST, "-a", "canny").returncode == 0
    assert run_cli("preview", out, "-o", tmp_path / "p.png", "-n", "1").returncode == 0
    sheet = cv2.imread(str(tmp_path / "p.png"))
    band = sheet[24 : 24 + LABEL_HEIGHT]  # below the caption line, above the panels
    assert (band == 40).all(axis=2).mean() > 0.8  # the dark label strip
    columns = [band[:, x : x + 60] for x in (0, sheet.shape[1] // 2)]
    assert all((col > 200).all(axis=2).any() for col in columns)  # white text in both columns
    assert sheet.shape[0] == 24 + LABEL_HEIGHT + THUMB + 4
