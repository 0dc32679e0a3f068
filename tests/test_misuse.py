"""Misuse and bad input must never lose or misstate a user's data (issue #13 cases 1, 2, 8,
10, 11, 14, 16, 17, 18): each test runs what a user ran, through the real CLI where it can."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import time
from pathlib import Path

import pytest
from PIL import Image

from annotators import create
from pipeline.atomic import atomic_write, remove_stale_temps, temp_file
from pipeline.decode import DecodeError, decode
from pipeline.layout import read_index
from pipeline.ownership import NotHintsetOutput, remove_owned
from pipeline.storage import Storage
from pipeline.worker import AnnotatorSpec, Worker
from tests.conftest import run_cli
from tests.corpus import exif_rotated_jpeg

FAST = ("-r", "128", "--shard-size", "1", "-w", "1", "-q")
UMASK = 0o027  # distinctive: outputs must be 0640, not mkstemp's 0600


def set_umask() -> None:
    os.umask(UMASK)


def one_error_line(stderr: str) -> str:
    """The single 'error: ...' line (and no traceback) a refused command prints."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, photo_paths) -> Path:
    """Three photos built into three shards under umask 027."""
    root = tmp_path_factory.mktemp("misuse")
    photos = root / "photos"
    photos.mkdir()
    for path in photo_paths[:3]:
        shutil.copy(path, photos / path.name)
    out = root / "ds"
    proc = run_cli("build", photos, "-o", out, *FAST, preexec_fn=set_umask)
    assert proc.returncode == 0, proc.stderr
    return out


# -- 1: --overwrite removes only what hintset wrote ----------------------------------------
def test_overwrite_refuses_a_folder_hintset_did_not_make(tmp_path, photo_paths):
    victim = tmp_path / "victim"
    victim.mkdir()
    shutil.copy(photo_paths[0], victim / "a.jpg")
    (victim / "thesis.docx").write_text("x")
    proc = run_cli("build", victim, "-o", victim, "--overwrite", *FAST, timeout=120)
    assert proc.returncode == 2
    assert "not a hintset output" in one_error_line(proc.stderr)
    assert sorted(p.name for p in victim.iterdir()) == ["a.jpg", "thesis.docx"]


def test_remove_owned_deletes_only_what_the_plan_records(tmp_path):
    root = tmp_path / "ds"
    for rel in ("shards/00000.tar", "index/00000.parquet", "stats/00000.json", "plan/00000.jsonl"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "config": {},
                                                    "shards": [{"name": "00000"}]}))  # fmt: skip
    (root / "a.jpg").write_bytes(b"photo")
    (root / ".notes.tmp").write_text("mine")
    fd, leftover = temp_file(root, "manifest.json")
    os.close(fd)
    remove_owned(Storage(root))
    assert sorted(p.name for p in root.iterdir()) == [".notes.tmp", "a.jpg", "plan"]
    assert not Path(leftover).exists()


def test_remove_owned_refuses_a_foreign_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text('{"name": "my web app"}')
    with pytest.raises(NotHintsetOutput, match="not a hintset output"):
        remove_owned(Storage(tmp_path))
    assert (tmp_path / "manifest.json").exists()


def test_overwrite_refuses_inputs_inside_the_dataset(dataset):
    proc = run_cli("build", dataset / "shards" / "00000.tar", "-o", dataset, "--overwrite", "-q")
    assert proc.returncode == 2
    assert "lies in what --overwrite would delete" in one_error_line(proc.stderr)
    assert (dataset / "shards" / "00000.tar").exists()


def test_build_into_the_input_folder_is_refused_and_keeps_the_inputs(tmp_path, photo_paths):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photo_paths[0], folder / "a.jpg")
    (folder / "thesis.docx").write_text("x")
    for extra in ((), ("--overwrite",)):  # issue 21.14: a folder of other files is no output
        proc = run_cli("build", folder, "-o", folder, *FAST, *extra)
        assert proc.returncode == 2 and "not a hintset output" in one_error_line(proc.stderr)
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "thesis.docx"]


def test_annotate_never_overwrites_an_input(tmp_path, photo_paths):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photo_paths[0], folder / "dog.jpg")
    (folder / "dog.canny.png").write_text("my own edge map")
    proc = run_cli("annotate", folder, "-o", folder, "--overwrite", "-w", "1", "-q")
    assert proc.returncode == 1
    assert "is an input file" in proc.stderr
    assert (folder / "dog.canny.png").read_text() == "my own edge map"


# -- 2: only hintset's own temporary files are cleaned up ------------------------------------
def test_stale_temp_cleanup_spares_other_tmp_files(tmp_path, photo_paths):
    home = tmp_path / "home"
    (home / "project" / ".cache").mkdir(parents=True)
    shutil.copy(photo_paths[0], home / "a.jpg")
    (home / ".notes.tmp").write_text("notes")
    (home / "project" / ".cache" / ".download.tmp").write_text("half a download")
    (home / ".a.canny.png.tmp").write_text("old naming, not ours")
    fd, ours = temp_file(home / "project", "x.png")
    os.close(fd)
    assert remove_stale_temps(home) == 1 and not Path(ours).exists()
    proc = run_cli("annotate", home, "-o", home, "-w", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    assert (home / ".notes.tmp").read_text() == "notes"
    assert (home / "project" / ".cache" / ".download.tmp").exists()
    assert (home / ".a.canny.png.tmp").exists()


# -- 8: a sample whose resized size is huge fails alone -------------------------------------
def test_extreme_aspect_image_fails_alone(tmp_path, photo_paths):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photo_paths[0], folder / "a.jpg")
    Image.new("RGB", (2_000_000, 8)).save(folder / "strip.png")
    assert (folder / "strip.png").stat().st_size < 100_000
    proc = run_cli("annotate", folder, "-o", tmp_path / "out", "-w", "1", "-q", timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"]["done"] == 1 and report["counts"]["failed"] == 1
    assert report["failures"][0]["error"].startswith("resize: resized image too large")


def test_worker_prepare_checks_the_resized_size(photo_paths):
    worker = Worker([AnnotatorSpec("canny")], resolution=100_000)
    result = worker.prepare("a", photo_paths[0].read_bytes())
    assert result.status == "failed" and "over the limit" in result.error


# -- 10: a JPEG too short for its header fails instead of becoming grey --------------------
def patched_jpeg(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its frame header claiming ``width`` x ``height``."""
    buf = bytearray(data)
    pos = 2
    while buf[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack(">H", buf[pos + 2 : pos + 4])[0]
    buf[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
    return bytes(buf)


def test_jpeg_with_patched_header_fails(photo_paths):
    data = patched_jpeg(photo_paths[0].read_bytes(), 12000, 12000)
    with pytest.raises(DecodeError, match="corrupt JPEG data"):
        decode(data, draft_short_side=512)
    result = Worker([AnnotatorSpec("canny")], resolution=512).process("big", data)
    assert result.status == "failed" and result.error.startswith("decode: corrupt JPEG data")


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"subsampling": 0}])
def test_flat_jpegs_still_decode(options):
    """The size check is a lower bound: the most compressible (flat) JPEGs pass it."""
    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000), (255, 255, 255)).save(buf, "JPEG", quality=5, **options)
    assert decode(buf.getvalue()).size == (3000, 2000)


# -- 11: the index records the true decoded size ---------------------------------------------
def test_original_size_is_the_full_upright_size(photo_paths, dataset):
    worker = Worker([AnnotatorSpec("canny")], resolution=128)
    for path in photo_paths[:3]:
        result = worker.prepare(path.stem, path.read_bytes())
        assert result.original_size == Image.open(path).size
        assert min(result.image.shape[:2]) == 128
    rotated = Worker([AnnotatorSpec("canny")], resolution=8).prepare("r", exif_rotated_jpeg())
    assert rotated.original_size == (32, 64)  # stored 64x32, EXIF orientation 6
    rows = [row for f in sorted((dataset / "index").glob("*.parquet"))
            for row in read_index(f.read_bytes())]  # fmt: skip
    sizes = {(r["original_width"], r["original_height"]) for r in rows}
    assert sizes == {Image.open(p).size for p in photo_paths[:3]}


# -- 14: outputs get a normal file's mode --------------------------------------------------
def test_outputs_have_the_mode_a_normal_write_gives(dataset, tmp_path, photo_paths):
    files = [p for p in dataset.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".json", ".tar", ".parquet"}
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o666 & ~UMASK}
    out = tmp_path / "maps"
    proc = run_cli("annotate", photo_paths[0], "-o", out, "-w", "1", "-q", preexec_fn=set_umask)
    assert proc.returncode == 0, proc.stderr
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o640}
    atomic_write(tmp_path / "x.bin", b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "x.bin").stat().st_mode) == 0o666 & ~mask


# -- 16: Ray options fail fast with one line ---------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--address", "127.0.0.1:1"], "cannot reach Ray at 127.0.0.1:1"),
        (["--address", "ray://127.0.0.1:1"], "cannot reach Ray at ray://127.0.0.1:1"),
        (["--address", "head-without-port"], "bad --address"),
        (["--gpus-per-worker", "1"], "asks for more GPUs than this machine has (0)"),
    ],
)
def test_ray_options_fail_within_seconds(tmp_path, photo_paths, args, message):
    start = time.monotonic()
    proc = run_cli("build", photo_paths[0], "-o", tmp_path / "ds", *args, "-q", timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode == 2
    assert message in one_error_line(proc.stderr)


def test_ray_client_extra_is_a_core_dependency():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("ray[client]") for dep in project["dependencies"])


# -- 17: verify reports every damaged shard and goes on ------------------------------------
def test_verify_reports_each_damaged_file_per_shard(dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    parquet = broken / "index" / "00001.parquet"
    parquet.write_bytes(parquet.read_bytes()[:100])
    (broken / "shards" / "00002.tar").unlink()
    (broken / "index" / "00000.parquet").unlink()
    manifest = broken / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:50])
    proc = run_cli("verify", broken)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    problems = [line for line in proc.stderr.splitlines() if line.startswith("PROBLEM")]
    assert any("manifest.json unreadable" in p for p in problems)
    assert any("shard 00000: index/00000.parquet is missing" in p for p in problems)
    assert any("shard 00001: index/00001.parquet does not parse" in p for p in problems)
    assert any("shard 00002: shards/00002.tar is missing" in p for p in problems)
    assert run_cli("verify", dataset).returncode == 0


# -- 18: smaller ones ----------------------------------------------------------------------
def test_preview_creates_folders_and_refuses_other_formats(dataset, tmp_path):
    target = tmp_path / "nodir" / "sub" / "p.png"
    proc = run_cli("preview", dataset, "-o", target, "-n", "2")
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes().startswith(b"\x89PNG")
    page = tmp_path / "new" / "p.html"
    assert run_cli("preview", dataset, "-o", page).returncode == 0
    assert page.read_text().startswith("<!doctype html>")
    proc = run_cli("preview", dataset, "-o", tmp_path / "ds.jpg")
    assert proc.returncode == 2 and "use a .html or .png file name" in proc.stderr
    assert not (tmp_path / "ds.jpg").exists()


def test_annotators_lists_weights_per_backend_default_first(cli):
    lines = {line.split()[0]: line for line in cli("annotators", check=True).stdout.splitlines()
             if line and not line.startswith(" ")}  # fmt: skip
    assert (
        "[lsd (default): no weights needed; hough: no weights needed; mlsd: mlsd" in lines["lines"]
    )
    assert "[mediapipe (default): pose_landmarker_lite.task MISSING, " in lines["pose"]
    assert "; mediapipe-bundled: no weights needed; openpose: body_pose" in lines["pose"]
    assert "[no weights needed]" in lines["canny"]
    rows = {r["name"]: r for r in json.loads(cli("annotators", "--json", check=True).stdout)}
    assert list(rows["lines"]["weights_by_backend"]) == ["lsd", "hough", "mlsd"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-a", "canny,canny"], "--annotators lists canny more than once"),
        (["-a", "lines", "-p", "lines.min_length=-3"], "lines.min_length: -3 is outside"),
        (["-a", "pose", "-p", "pose.min_confidence=7"], "pose.min_confidence: 7.0 is outside"),
        (["-a", "canny", "-p", "canny.blur=nan"], "canny.blur: nan is outside"),
    ],
)
def test_bad_annotator_options_are_refused(tmp_path, photo_paths, args, message):
    proc = run_cli("annotate", photo_paths[0], "-o", tmp_path / "out", *args, "-q")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "out").exists()


def test_every_numeric_param_has_a_range():
    from annotators import list_annotators

    for name in list_annotators():
        annotator = create(name)
        for param in annotator.params:
            if isinstance(param.default, int | float) and not isinstance(param.default, bool):
                with pytest.raises(ValueError, match=f"{name}.{param.name}"):
                    create(name, **{param.name: -1})


def test_cluster_addresses_work_through_the_cli(tmp_path, photo_paths, monkeypatch):
    """A real head with a Ray Client server: both ``host:port`` and ``ray://host:port`` build."""
    import socket

    from ray.cluster_utils import Cluster

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "ray_client_server_port": port}
    )
    try:
        for name, address in (("gcs", cluster.address), ("client", f"ray://127.0.0.1:{port}")):
            out = tmp_path / name
            proc = run_cli("build", photo_paths[0], "-o", out, "--address", address, "-r", "64",
                           "-q", timeout=240)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert run_cli("verify", out).returncode == 0
    finally:
        cluster.shutdown()
