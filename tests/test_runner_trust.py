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

FAST = ("-r", "64", "--shard-size", "2", "-w", "1", "-q")


def error_line(stderr: str) -> str:
    """The one line a refused command prints (no traceback, no progress bar)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


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
