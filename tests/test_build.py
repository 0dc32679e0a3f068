"""``hintset build`` end to end on real Ray, with real processes killed and nodes removed."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.encode import decode_png
from pipeline.layout import read_index
from tests.conftest import ROOT, run_cli
from tests.corpus import BAD, ODD, write_corpus

#: small, fast builds: short side 128, 4 samples per shard
FAST = ("--resolution", "128", "--shard-size", "4", "-q")


def index_rows(out: Path) -> list[dict]:
    return [
        row for f in sorted((out / "index").glob("*.parquet")) for row in read_index(f.read_bytes())
    ]


def tars(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def copy_photos(paths: list[Path], folder: Path) -> Path:
    """A folder holding copies of ``paths``."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, photo_paths) -> Path:
    """The 20 real photos with the bad/odd corpus mixed in, captions from a JSONL file."""
    folder = tmp_path_factory.mktemp("mixed") / "photos"
    folder.mkdir()
    for path in photo_paths:
        shutil.copy(path, folder / path.name)
    write_corpus(folder, photo_paths[0])
    shutil.copy(photo_paths[0].parent / "captions.jsonl", folder.parent / "captions.jsonl")
    return folder


@pytest.fixture(scope="module")
def dataset(mixed, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ds") / "ds"
    proc = run_cli("build", mixed, "-o", out, "-a", "canny,lines", "--captions",
                   mixed.parent / "captions.jsonl", "--workers", "2", *FAST)  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the bad inputs failed (as annotate: exit 1)
    return out, proc


def test_every_input_is_in_the_index_exactly_once(dataset, mixed):
    out, proc = dataset
    rows = index_rows(out)
    sources = sorted(Path(r["source"]).name for r in rows)
    assert sources == sorted(p.name for p in mixed.iterdir())
    failed = {Path(r["source"]).name: r["error"] for r in rows if r["status"] == "failed"}
    assert set(failed) == set(BAD)
    for name, fragment in BAD.items():
        assert fragment in failed[name]
    assert all(r["status"] == "ok" for r in rows if Path(r["source"]).name in ODD)
    assert all("." not in r["key"] for r in rows)
    captioned = [r for r in rows if r["source"].endswith(".jpg") and "COCO" in r["source"]]
    assert all(r["caption"] for r in captioned)
    assert sum("FAILED" in line for line in proc.stderr.splitlines()) == len(BAD)


def test_verify_passes_and_catches_damage(dataset, cli, tmp_path):
    out, _ = dataset
    proc = cli("verify", out)
    assert proc.returncode == 0, proc.stderr
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    tar = damaged / "shards" / "00001.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 3000] = b"\xab" * 3000  # clobber member bytes
    tar.write_bytes(bytes(data))
    (damaged / "stats" / "00002.json").unlink()
    proc = cli("verify", damaged)
    assert proc.returncode == 1
    assert "shard 00001: tar sha256 differs from the manifest" in proc.stderr
    assert "00002: no stats file" in proc.stderr


def test_webdataset_reads_every_sample(dataset):
    import webdataset as wds

    out, _ = dataset
    ok = {r["key"] for r in index_rows(out) if r["status"] == "ok"}
    urls = [str(p) for p in sorted((out / "shards").glob("*.tar"))]
    seen = set()
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("rgb8"):
        seen.add(sample["__key__"])
        image = sample["jpg"]
        assert image.ndim == 3 and min(image.shape[:2]) == 128
        meta = sample["json"]
        assert meta["key"] == sample["__key__"] and meta["width"] == image.shape[1]
        assert isinstance(sample["txt"], str)
        for name in ("canny.png", "lines.png"):
            assert sample[name].shape[:2] == image.shape[:2]
    assert seen == ok


def test_ray_data_reads_every_sample(dataset):
    import ray

    out, _ = dataset
    ok = {r["key"] for r in index_rows(out) if r["status"] == "ok"}
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        rows = ray.data.read_webdataset(str(out / "shards"), decoder=None).take_all()
    finally:
        ray.shutdown()
    assert {r["__key__"] for r in rows} == ok
    for row in rows:
        assert {"jpg", "txt", "json", "canny.png", "lines.png"} <= set(row)
        edges = decode_png(row["canny.png"])
        assert set(np.unique(edges)) <= {0, 255}


def test_manifest_inspect_and_preview(dataset, cli, tmp_path):
    out, _ = dataset
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert [a["name"] for a in manifest["annotators"]] == ["canny", "lines"]
    assert manifest["totals"]["ok"] == 20 + len(ODD) and manifest["totals"]["failed"] == len(BAD)
    assert manifest["totals"]["no_caption"] == len(BAD) + len(ODD)
    proc = cli("inspect", out, check=True)
    assert "failures by reason" in proc.stdout and "canny_density" in proc.stdout
    info = json.loads(cli("inspect", out, "--json", check=True).stdout)
    assert sum(info["failures_by_reason"].values()) == len(BAD)
    for target in ("p.html", "p.png"):
        proc = cli("preview", out, "-o", tmp_path / target, "-n", "3")
        assert proc.returncode == 0 and (tmp_path / target).stat().st_size > 1000
    assert (tmp_path / "p.html").read_text().count("<section>") == 3


def test_kill_9_then_rerun_gives_byte_identical_shards(photos_dir, tmp_path):
    args = ("build", photos_dir, "-a", "canny,test_slow", "-p", "test_slow.seconds=0.1",
            "--import", "tests.plugins", "--workers", "1", "--resolution", "96",
            "--shard-size", "2", "-q")  # fmt: skip
    reference = tmp_path / "reference"
    assert run_cli(*args, "-o", reference).returncode == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, args), "-o", str(killed)],
                            env=env, start_new_session=True, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "stats").glob("*.json"))) < 2:
        time.sleep(0.1)
    time.sleep(random.uniform(0.0, 1.0))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((killed / "stats").glob("*.json")))
    assert 2 <= done_before < 10, "the kill should land mid-build"
    rerun = run_cli(*args, "-o", killed)
    assert rerun.returncode == 0, rerun.stderr
    assert tars(killed) == tars(reference)
    assert not [p for p in killed.rglob("*") if p.name.endswith(".tmp")]
    assert run_cli("verify", killed).returncode == 0


def test_new_inputs_go_into_new_shards(photo_paths, tmp_path):
    folder = copy_photos(photo_paths[:6], tmp_path / "in")
    out = tmp_path / "ds"
    assert run_cli("build", folder, "-o", out, *FAST).returncode == 0
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "shards").iterdir()}
    assert sorted(before) == ["00000.tar", "00001.tar"]
    for path in photo_paths[6:9]:
        shutil.copy(path, folder / path.name)
    proc = run_cli("build", folder, "-o", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "shards").iterdir()}
    assert sorted(after) == ["00000.tar", "00001.tar", "00002.tar"]
    assert all(after[name] == before[name] for name in before)
    assert len(index_rows(out)) == 9
    assert run_cli("verify", out).returncode == 0
    other = run_cli("build", folder, "-o", out, "--resolution", "64", "-q")
    assert other.returncode == 2 and "other options" in other.stderr


def test_annotator_raising_on_one_sample_fails_only_that_sample(photos_dir, tmp_path):
    out = tmp_path / "ds"
    proc = run_cli("build", photos_dir, "-o", out, "-a", "canny,test_raises",
                   "-p", "test_raises.threshold=150", "--import", "tests.plugins", *FAST)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    rows = index_rows(out)
    failed = [r for r in rows if r["status"] == "failed"]
    assert 0 < len(failed) < len(rows)
    assert all(r["error"].startswith("annotator test_raises: RuntimeError: refusing a bright")
               for r in failed)  # fmt: skip
    assert run_cli("verify", out).returncode == 0


def test_worker_dying_mid_shard_is_retried(photos_dir, tmp_path):
    out, marker = tmp_path / "ds", tmp_path / "died-once"
    proc = run_cli("build", photos_dir, "-o", out, "-a", "test_exits",
                   "-p", f"test_exits.marker={marker}", "--import", "tests.plugins",
                   "--workers", "1", *FAST)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()  # a worker process really died
    assert all(r["status"] == "ok" for r in index_rows(out)) and len(index_rows(out)) == 20
    assert run_cli("verify", out).returncode == 0


def test_two_node_cluster_survives_losing_a_node(photos_dir, tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    import tests.plugins  # noqa: F401 - registers test_slow in this (driver) process
    from pipeline.build import run_build
    from pipeline.verify import verify
    from pipeline.worker import AnnotatorSpec

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    second = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    out = tmp_path / "ds"
    result: dict = {}
    specs = [AnnotatorSpec("canny"), AnnotatorSpec("test_slow", {"seconds": 0.15})]

    def build() -> None:
        try:
            result["manifest"] = run_build([str(photos_dir)], str(out), specs, shard_size=2,
                                           resolution=64, address=cluster.address, workers=2,
                                           imports=("tests.plugins",), max_retries=5)  # fmt: skip
        except BaseException as err:  # noqa: BLE001 - surfaced by the assertion below
            result["error"] = err

    thread = threading.Thread(target=build)
    try:
        thread.start()
        deadline = time.time() + 120
        while time.time() < deadline and len(list((out / "stats").glob("*.json"))) < 4:
            time.sleep(0.1)
        cluster.remove_node(second)
        thread.join(timeout=300)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert "error" not in result, result.get("error")
    manifest = result["manifest"]
    assert manifest["totals"]["ok"] == 20 and manifest["totals"]["shards"] == 10
    assert manifest["last_run"]["nodes"] == 2  # both nodes built shards
    assert verify(str(out)) == []


def test_original_bytes_are_kept(photo_paths, tmp_path):
    import tarfile

    out = tmp_path / "ds"
    assert run_cli("build", photo_paths[0], "-o", out, "--keep-original", "-q").returncode == 0
    with tarfile.open(out / "shards" / "00000.tar") as tar:
        members = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar}
    assert members["jpg"] == photo_paths[0].read_bytes()
    original = decode_png(members["canny.png"])
    from pipeline.decode import load_image

    assert original.shape == load_image(photo_paths[0]).shape[:2]


def test_tar_inputs_get_maps_added(dataset, tmp_path):
    import tarfile

    src, _ = dataset
    out = tmp_path / "ds2"
    pattern = str(src / "shards" / "{00000..00001}.tar")
    proc = run_cli("build", pattern, "-o", out, "-a", "lines", *FAST)
    assert proc.returncode == 0, proc.stderr
    expected = [f"{name}__{r['key']}" for name in ("00000", "00001")
                for r in read_index((src / "index" / f"{name}.parquet").read_bytes())
                if r["status"] == "ok"]  # fmt: skip
    rows = index_rows(out)
    assert sorted(r["key"] for r in rows) == sorted(expected)
    assert all(r["status"] == "ok" and r["caption"] is not None for r in rows)
    with tarfile.open(out / "shards" / "00000.tar") as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(next(n for n in names if n.endswith(".json"))).read())
    assert any(n.endswith(".lines.png") for n in names)
    assert f"00000__{meta['source_meta']['key']}" in expected  # the input tar's metadata is kept


def test_output_as_fsspec_url(photo_paths, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in photo_paths[:3]:
        shutil.copy(path, folder / path.name)
    url = f"file://{tmp_path}/ds"
    proc = run_cli("build", folder, "-o", url, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert len(index_rows(tmp_path / "ds")) == 3
    assert run_cli("verify", url).returncode == 0


def test_learned_annotator_runs_on_ray_workers(photo_paths, tmp_path):
    """HED with random weights in the published layout, through --weights-dir, on CPU workers."""
    from tests.weights import write_hed

    weights = tmp_path / "weights"
    write_hed(weights)
    folder = tmp_path / "in"
    folder.mkdir()
    for path in photo_paths[:3]:
        shutil.copy(path, folder / path.name)
    out = tmp_path / "ds"
    proc = run_cli("build", folder, "-o", out, "-a", "hed", "--weights-dir", weights,
                   "--resolution", "64", "-q", env={"HINTSET_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["annotators"][0]["weights"][0]["file"] == "ControlNetHED.pth"
    assert len(manifest["annotators"][0]["weights"][0]["sha256"]) == 64
    assert all(r["status"] == "ok" for r in index_rows(out)) and len(index_rows(out)) == 3
    missing = run_cli("build", folder, "-o", tmp_path / "ds2", "-a", "hed", "-q",
                      env={"HINTSET_OFFLINE": "1", "HINTSET_WEIGHTS_DIR": str(tmp_path / "none"),
                           "HF_HOME": str(tmp_path / "hf")})  # fmt: skip
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.count("error:") == 1 and "ControlNetHED.pth" in missing.stderr


def test_min_size_filters_and_the_index_records_upscaling(photo_paths, tmp_path, cli):
    """#13 case 12: small inputs were upscaled silently; now --min-size and an upscaled column."""
    import cv2

    folder = tmp_path / "in"
    folder.mkdir()
    for path in photo_paths[:2]:
        shutil.copy(path, folder / path.name)
    photo = cv2.imread(str(photo_paths[2]))
    cv2.imwrite(str(folder / "small.png"), cv2.resize(photo, (100, 80)))
    cv2.imwrite(str(folder / "tiny.png"), cv2.resize(photo, (60, 45)))
    out = tmp_path / "ds"
    proc = run_cli("build", folder, "-o", out, "--min-size", "64", *FAST)
    assert proc.returncode == 0, proc.stderr  # filtered is not failed
    rows = {Path(r["source"]).name: r for r in index_rows(out)}
    assert rows["tiny.png"]["status"] == "filtered"
    assert rows["tiny.png"]["error"] == "filtered: 60x45 is smaller than --min-size 64"
    assert rows["small.png"]["status"] == "ok" and rows["small.png"]["upscaled"] is True
    assert [rows[p.name]["upscaled"] for p in photo_paths[:2]] == [False, False]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["filtered"] == 1 and manifest["totals"]["upscaled"] == 1
    assert manifest["totals"]["ok"] == 3 and manifest["totals"]["failed"] == 0
    assert "filtered 1  upscaled 1" in cli("inspect", out, check=True).stdout
    assert run_cli("verify", out).returncode == 0


def test_failed_inputs_exit_1_and_retry_failed_redoes_them(photo_paths, tmp_path):
    """#13 case 18: build exited 0 with failed inputs and could not retry them."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in photo_paths[:4]:
        shutil.copy(path, folder / path.name)
    late = folder / "zz_late.jpg"
    late.write_bytes(photo_paths[4].read_bytes()[:5000])  # still being copied: truncated
    out = tmp_path / "ds"
    first = run_cli("build", folder, "-o", out, *FAST)
    assert first.returncode == 1 and "FAILED zz_late" in first.stderr
    shutil.copy(photo_paths[4], late)  # the copy finished
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    assert run_cli("build", folder, "-o", out, *FAST).returncode == 1  # plain rerun: resumes
    retry = run_cli("build", folder, "-o", out, "--retry-failed", *FAST)
    assert retry.returncode == 0, retry.stderr
    rows = index_rows(out)
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    assert after["00000.tar"] == before["00000.tar"]  # the shard without failures: untouched
    assert after["00001.tar"] != before["00001.tar"]
    assert run_cli("verify", out).returncode == 0


def test_fractional_gpus_let_two_workers_share_one_gpu(photo_paths, tmp_path):
    """--gpus-per-worker 0.5 on a node with one (declared) GPU: two actors share it."""
    import ray

    from pipeline.build import run_build
    from pipeline.worker import AnnotatorSpec

    ray.init(
        address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR"
    )
    pids: set[int] = set()
    try:
        manifest = run_build([str(p) for p in photo_paths[:8]], str(tmp_path / "ds"),
                             [AnnotatorSpec("canny")], shard_size=1, resolution=64,
                             gpus_per_worker=0.5,
                             on_shard=lambda stats: pids.add(stats["pid"]))  # fmt: skip
    finally:
        ray.shutdown()
    assert manifest["totals"]["ok"] == 8
    assert len(pids) == 2  # GPU 1 // 0.5 = 2 actors, both built shards


def test_second_build_into_the_same_output_is_refused(photos_dir, tmp_path):
    """#13 case 6: two builds at once; the second is refused in one line, the first completes."""
    out = tmp_path / "ds"
    args = ("build", photos_dir, "-o", out, "-a", "canny,test_slow", "-p", "test_slow.seconds=0.1",
            "--import", "tests.plugins", "--workers", "1", *FAST)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, args)], env=env,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and not (out / ".hintset.lock").exists():
        time.sleep(0.05)
    second = run_cli(*args)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert "is being built by pid" in second.stderr
    assert not (out / ".hintset.lock").exists()
    assert len(index_rows(out)) == 20 and run_cli("verify", out).returncode == 0


def test_stale_lock_of_a_dead_build_is_taken_over(photo_paths, tmp_path):
    import socket

    out = tmp_path / "ds"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {"host": socket.gethostname(), "pid": dead.pid, "token": "x", "heartbeat": time.time()}
    (out / ".hintset.lock").write_text(json.dumps(lock))
    proc = run_cli("build", photo_paths[0], "-o", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert not (out / ".hintset.lock").exists()


def test_done_shard_with_missing_tar_or_index_is_rebuilt(photo_paths, tmp_path):
    """#13 case 7: a deleted tar or index is built again, never reported complete."""
    folder = copy_photos(photo_paths[:8], tmp_path / "in")
    out = tmp_path / "ds"
    assert run_cli("build", folder, "-o", out, *FAST).returncode == 0
    before = tars(out)
    (out / "shards" / "00001.tar").unlink()
    (out / "index" / "00000.parquet").unlink()
    proc = run_cli("build", folder, "-o", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "shard 00000: tar or index missing" in proc.stderr + proc.stdout
    assert "shard 00001: tar or index missing" in proc.stderr + proc.stdout
    assert tars(out) == before and len(index_rows(out)) == 8
    assert run_cli("verify", out).returncode == 0


def test_empty_input_folder_fails_and_ray_start_is_announced(photos_dir, tmp_path):
    """#13 case 18: an empty folder is an error (exit 2); the build says Ray is starting."""
    (tmp_path / "empty").mkdir()
    proc = run_cli("build", tmp_path / "empty", "-o", tmp_path / "ds", *FAST)
    assert proc.returncode == 2 and "no images found" in proc.stderr
    proc = run_cli("build", photos_dir, "-o", tmp_path / "ds2", "--resolution", "64",
                   "--max-shards", "1", "--shard-size", "4")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "starting Ray" in proc.stderr and "stopped after 1 shard (" in proc.stderr
    assert len(list((tmp_path / "ds2" / "stats").glob("*.json"))) == 1


def test_output_inside_the_input_is_not_read_back(photo_paths, tmp_path):
    """#13 case 3: annotate into inp/maps three times, then build inp: maps are not inputs."""
    folder = copy_photos(photo_paths[:2], tmp_path / "inp")
    for _ in range(3):
        proc = run_cli("annotate", folder, "-o", folder / "maps", "-r", "64", "-q")
        assert proc.returncode == 0, proc.stderr
    assert not (folder / "maps" / "maps").exists()
    assert len(list((folder / "maps").glob("*.png"))) == 2
    proc = run_cli("build", folder, "-o", folder / "ds", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert sorted(Path(r["source"]).name for r in index_rows(folder / "ds")) == sorted(
        p.name for p in photo_paths[:2]
    )
    again = run_cli("build", folder, "-o", folder / "ds", *FAST)
    assert again.returncode == 0 and len(index_rows(folder / "ds")) == 2


def test_unreadable_tars_are_recorded_and_the_build_goes_on(dataset, tmp_path):
    """#13 case 9: a truncated tar and a non-tar named .tar fail as inputs, with their reason."""
    src, _ = dataset
    good = (src / "shards" / "00000.tar").read_bytes()
    (tmp_path / "truncated.tar").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.tar").write_bytes(b"not a tar\n" * 100)
    out = tmp_path / "ds"
    proc = run_cli("build", src / "shards" / "00001.tar", tmp_path / "truncated.tar",
                   tmp_path / "text.tar", "-o", out, "-a", "lines", *FAST)  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # failed inputs: exit 1, the rest is built
    rows = index_rows(out)
    failed = {Path(r["source"]).name: r["error"] for r in rows if r["status"] == "failed"}
    assert failed["truncated.tar"].startswith("input: ") and "text.tar" in failed
    assert "not a readable tar" in failed["text.tar"]
    assert sum(r["status"] == "ok" for r in rows) >= 4
    assert run_cli("verify", out).returncode == 0


def test_manifest_records_the_automatic_batch_size(dataset):
    out, _ = dataset
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["batch_size"] == 8  # auto: classical annotators only (canny, lsd)
