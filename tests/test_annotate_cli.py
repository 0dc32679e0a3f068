"""``hintset annotate`` / ``hintset annotators`` end to end, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.decode import load_image, resize_short_side
from tests.corpus import BAD, ODD, write_corpus

#: options shared by the first run and the rerun, so the rerun matches it
ARGS = ("--annotators", "canny,lines", "--resolution", "256", "--param", "canny.low=50")


@pytest.fixture(scope="module")
def tree(tmp_path_factory, photo_paths) -> Path:
    """photos/ with real photos at the top, a subfolder of 3 more, and the bad/odd corpus."""
    root = tmp_path_factory.mktemp("in") / "photos"
    (root / "sub").mkdir(parents=True)
    for path in photo_paths[:4]:
        shutil.copy(path, root / path.name)
    for path in photo_paths[4:7]:
        shutil.copy(path, root / "sub" / path.name)
    write_corpus(root / "odd", photo_paths[0])
    (root / "notes.txt").write_text("not an image and not an image extension: ignored")
    return root


@pytest.fixture(scope="module")
def first_run(tree, tmp_path_factory):
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("out")
    proc = run_cli("annotate", tree, "-o", out, *ARGS, "--workers", "2")
    return out, proc


def test_outputs_mirror_the_input_tree(first_run, tree):
    out, proc = first_run
    good = [
        p.relative_to(tree)
        for p in tree.rglob("*")
        if p.suffix == ".jpg" and p.parent.name != "odd"
    ]
    good += [Path("odd") / name for name in ODD]
    for rel in good:
        for annotator in ("canny", "lines"):
            target = out / rel.parent / f"{rel.stem}.{annotator}.png"
            assert target.is_file(), target
    assert not list(out.rglob("notes*"))
    assert not list(out.rglob("*.tmp"))


def test_report_counts_and_reasons(first_run, tree):
    out, proc = first_run
    assert proc.returncode == 1  # some inputs failed
    report = json.loads((out / "report.json").read_text())
    total = 4 + 3 + len(BAD) + len(ODD)
    assert report["counts"] == {
        "total": total,
        "done": total - len(BAD),
        "skipped": 0,
        "failed": len(BAD),
        "filtered": 0,
    }
    failures = {Path(f["source"]).name: f["error"] for f in report["failures"]}
    assert set(failures) == set(BAD)
    for name, fragment in BAD.items():
        assert fragment in failures[name]
    assert [a["name"] for a in report["annotators"]] == ["canny", "lines"]
    assert report["annotators"][0]["params"]["low"] == 50
    assert report["timings"]["images_per_second"] > 0
    assert {"decode", "canny", "lines", "encode", "write"} <= set(report["timings"]["mean_ms"])


def test_each_bad_file_is_one_line_on_stderr(first_run):
    out, proc = first_run
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == len(BAD)
    for name, fragment in BAD.items():
        assert any(name in line and fragment in line for line in failed)
    assert "Traceback" not in proc.stderr


def test_maps_equal_cv2_canny_on_the_resized_image(first_run, tree):
    out, _ = first_run
    source = sorted(tree.glob("*.jpg"))[0]
    resized = resize_short_side(load_image(source), 256)
    written = cv2.imread(str(out / f"{source.stem}.canny.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(written, cv2.Canny(resized, 50, 200))


def test_exif_rotated_input_comes_out_upright(first_run, tree, tmp_path, cli):
    out, _ = first_run
    edges = cv2.imread(str(out / "odd" / "exif_rotated.canny.png"), cv2.IMREAD_UNCHANGED)
    assert edges.shape == (512, 256)  # displayed 32x64 (portrait), short side 256
    proc = cli(
        "annotate",
        tree / "odd" / "exif_rotated.jpg",
        "-o",
        tmp_path,
        "-r",
        "256",
        "--save-image",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    image = cv2.cvtColor(cv2.imread(str(tmp_path / "exif_rotated.image.jpg")), cv2.COLOR_BGR2RGB)
    assert image.shape[:2] == (512, 256)
    top, bottom = image[40, 128].astype(int), image[470, 128].astype(int)
    assert top[0] > 200 and top[2] < 60  # the red half is on top once upright
    assert bottom[2] > 200 and bottom[0] < 60


def test_rerun_skips_then_overwrite_redoes(first_run, tree, cli):
    out, _ = first_run
    marker = sorted(out.glob("*.canny.png"))[0]
    mtime = marker.stat().st_mtime_ns
    proc = cli("annotate", tree, "-o", out, *ARGS, "--workers", "1")
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["skipped"] == 4 + 3 + len(ODD)
    assert report["counts"]["failed"] == len(BAD)  # bad files are tried again and fail again
    assert report["counts"]["done"] == 0
    assert marker.stat().st_mtime_ns == mtime
    assert proc.returncode == 1
    single = sorted(tree.glob("*.jpg"))[0]
    proc = cli("annotate", single, "-o", out, "--annotators", "canny", "--overwrite", "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "report.json").read_text())["counts"]["done"] == 1


def test_all_good_inputs_exit_zero_and_save_image(photo_paths, tmp_path, cli):
    proc = cli(
        "annotate",
        photo_paths[0],
        photo_paths[1],
        "-o",
        tmp_path,
        "-a",
        "canny",
        "--save-image",
        "-r",
        "0",
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    image = cv2.imread(str(tmp_path / f"{photo_paths[0].stem}.image.jpg"))
    edges = cv2.imread(str(tmp_path / f"{photo_paths[0].stem}.canny.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape[:2] == edges.shape == load_image(photo_paths[0]).shape[:2]


def test_same_stem_different_extensions_do_not_collide(photo_paths, tmp_path, cli):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo_paths[0], src / "a.jpg")
    cv2.imwrite(str(src / "a.png"), cv2.imread(str(photo_paths[1])))
    proc = cli("annotate", src, "-o", tmp_path / "out", "-a", "canny", "-q", "-r", "64")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "a_jpg.canny.png",
        "a_png.canny.png",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--annotators", "nope"], "unknown annotator 'nope'"),
        (["--param", "canny.low"], "expected ANNOTATOR.NAME=VALUE"),
        (["--param", "lines.backend=hough"], "not in --annotators"),
        (["--param", "canny.low=abc"], "expected int"),
        (["--param", "canny.colour=red"], "unknown parameter"),
    ],
)
def test_usage_errors_are_one_clear_line(photo_paths, tmp_path, cli, args, message):
    proc = cli("annotate", photo_paths[0], "-o", tmp_path, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_annotators_command_lists_params_and_weights(cli):
    proc = cli("annotators", check=True)
    assert (
        "canny" in proc.stdout and "low=100" in proc.stdout and "no weights needed" in proc.stdout
    )
    rows = json.loads(cli("annotators", "--json", check=True).stdout)
    canny = next(r for r in rows if r["name"] == "canny")
    assert canny["params"]["high"] == 200 and canny["outputs"] == ["canny.png"]


def test_help_explains(cli):
    proc = cli("annotate", "--help", check=True)
    for flag in ("--annotators", "--param", "--resolution", "--workers", "--overwrite"):
        assert flag in proc.stdout


def test_colliding_names_get_distinct_outputs_and_the_report_counts_files(photo_paths, tmp_path,
                                                                          cli):  # fmt: skip
    """#13 case 4: x.jpg, x_jpg.png and x.png all used to write x_jpg.canny.png."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo_paths[0], src / "x.jpg")
    cv2.imwrite(str(src / "x_jpg.png"), cv2.imread(str(photo_paths[1])))
    cv2.imwrite(str(src / "x.png"), cv2.imread(str(photo_paths[2])))
    out = tmp_path / "out"
    proc = cli("annotate", src, "-o", out, "-a", "canny", "-q", "-r", "64")
    assert proc.returncode == 0, proc.stderr
    maps = sorted(out.glob("*.canny.png"))
    report = json.loads((out / "report.json").read_text())
    assert len(maps) == 3 == report["counts"]["done"]
    made = [json.loads(line) for line in (out / "made_by.jsonl").read_text().splitlines()]
    outputs = [m["output"] for m in made if "output" in m]
    assert sorted(f"{o}.canny.png" for o in outputs) == [m.name for m in maps]
    sources = {src / "x.jpg", src / "x_jpg.png", src / "x.png"}
    by_map = {m.name: cv2.imread(str(m), cv2.IMREAD_UNCHANGED) for m in maps}
    assert len({v.tobytes() for v in by_map.values()}) == 3  # three different photos' edges
    assert len(sources) == 3


def test_rerun_with_other_settings_is_refused_then_overwrite_redoes(photo_paths, tmp_path, cli):
    """#13 case 5: a rerun with other parameters used to skip and keep the old maps."""
    src = tmp_path / "in"
    src.mkdir()
    for path in photo_paths[:2]:
        shutil.copy(path, src / path.name)
    out = tmp_path / "out"
    first = cli("annotate", src, "-o", out, "-a", "canny", "-r", "64", "-q")
    assert first.returncode == 0, first.stderr
    target = out / f"{photo_paths[0].stem}.canny.png"
    before = target.read_bytes()
    same = cli("annotate", src, "-o", out, "-a", "canny", "-r", "64", "-q")
    assert json.loads((out / "report.json").read_text())["counts"]["skipped"] == 2
    assert same.returncode == 0
    other = ("-a", "canny", "-r", "64", "-p", "canny.low=10", "-p", "canny.high=20", "-q")
    refused = cli("annotate", src, "-o", out, *other)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "made with other settings" in refused.stderr and "--overwrite" in refused.stderr
    assert "'low': 100" in refused.stderr and "'low': 10" in refused.stderr
    assert target.read_bytes() == before
    redo = cli("annotate", src, "-o", out, *other, "--overwrite")
    assert redo.returncode == 0, redo.stderr
    assert json.loads((out / "report.json").read_text())["counts"]["done"] == 2
    resized = resize_short_side(load_image(photo_paths[0], draft_short_side=64), 64)
    written = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(written, cv2.Canny(resized, 10, 20))
    again = cli("annotate", src, "-o", out, *other)  # the record now says low=10: skipped
    assert again.returncode == 0 and "2 skipped" in again.stderr
    resolution = cli("annotate", src, "-o", out, "-a", "canny", "-r", "32", "-p",
                     "canny.low=10", "-p", "canny.high=20", "-q")  # fmt: skip
    assert resolution.returncode == 2 and "resolution was 64, now 32" in resolution.stderr


def test_units_shrink_so_workers_finish_together():
    """Guided chunks: every input once and in order, large chunks first, and a last chunk of
    at most MIN_UNIT inputs (equal chunks left one worker alone on a 192-input tail)."""
    from pipeline.annotate import MAX_UNIT, MIN_UNIT, units

    refs = list(range(1500))
    chunks = [len(u) for u in units(refs, 2, 8)]
    assert [r for u in units(refs, 2, 8) for r in u] == refs
    assert chunks == sorted(chunks, reverse=True) and chunks[0] <= MAX_UNIT
    assert chunks[-1] <= MIN_UNIT and all(c % 8 == 0 for c in chunks[:-1])
    assert [len(u) for u in units(list(range(5)), 4, 8)] == [5]


def test_local_workers_fork_only_when_safe():
    """Canny workers are forked (no start-up); a learned annotator, a captioner or a second
    thread in this process means spawn (a fork would inherit broken thread pools or locks)."""
    import threading

    from pipeline.caption import CaptionSpec
    from pipeline.engine import WorkerSetup
    from pipeline.local_pool import start_method
    from pipeline.worker import AnnotatorSpec

    canny = WorkerSetup([AnnotatorSpec("canny")])
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert start_method(canny) == "spawn"
    finally:
        stop.set()
        thread.join()
    assert start_method(WorkerSetup([AnnotatorSpec("canny"), AnnotatorSpec("hed")])) == "spawn"
    assert (
        start_method(WorkerSetup([AnnotatorSpec("canny")], caption=CaptionSpec("blip-base")))
        == "spawn"
    )
    code = ("from pipeline.engine import WorkerSetup; from pipeline.local_pool import start_method; "
            "from pipeline.worker import AnnotatorSpec; "
            "print(start_method(WorkerSetup([AnnotatorSpec('canny')])))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "fork", proc.stderr
