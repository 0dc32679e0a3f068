"""``--filter 'STAT OP NUMBER'``: parsing, the worker, and real builds on real photos."""

from __future__ import annotations

import json
import math
import shutil
import tarfile
from pathlib import Path

import pytest

from pipeline.filters import Rule, parse_filters, parse_rule, rejection, resolve, rule_of
from pipeline.layout import read_index, row_stats, split_member
from pipeline.worker import AnnotatorSpec, Worker
from tests.conftest import run_cli

SMALL = ("-r", "64", "--shard-size", "4", "--workers", "1", "-q")


# -- parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "stat", "op", "value", "normal", "annotator"),
    [
        ("pose_people >= 1", "pose_people", ">=", 1.0, "pose_people >= 1", ""),
        ("pose_people>=1", "pose_people", ">=", 1.0, "pose_people >= 1", ""),
        ("  canny_density>0.01 ", "canny_density", ">", 0.01, "canny_density > 0.01", ""),
        ("depth_mean<=.5", "depth_mean", "<=", 0.5, "depth_mean <= .5", ""),
        ("seg_person < 1e-3", "seg_person", "<", 0.001, "seg_person < 1e-3", ""),
        ("faces == 0", "faces", "==", 0.0, "faces == 0", ""),
        ("tile_factor != -2", "tile_factor", "!=", -2.0, "tile_factor != -2", ""),
        ("canny.canny_density > 0", "canny_density", ">", 0.0, "canny.canny_density > 0", "canny"),
    ],
)
def test_good_rules_parse_into_plain_data(text, stat, op, value, normal, annotator):
    rule = parse_rule(text)
    assert (rule.stat, rule.op, rule.value, rule.text, rule.annotator) == (
        stat, op, value, normal, annotator
    )  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["pose_people = 1", "pose_people => 1", "pose_people >== 1", "pose_people >=", ">= 1",
     "pose people >= 1", "pose_people >= one", "pose_people >= nan", "a.b.c > 1",
     "pose_people >= 1 2", "", "9lives > 1"],
)  # fmt: skip
def test_bad_rules_are_one_line_errors(text):
    with pytest.raises(ValueError, match=r"^bad --filter .*expected STAT OP NUMBER") as err:
        parse_rule(text)
    assert "\n" not in str(err.value) and ">= > <= < == !=" in str(err.value)


def test_rules_resolve_to_the_annotator_that_emits_the_stat():
    declared = {"canny": ("canny_density",), "lines": ("lines_segments", "lines_density")}
    rules = resolve([parse_rule("lines_segments >= 3"), parse_rule("canny_density>0")], declared)
    assert [r.annotator for r in rules] == ["lines", "canny"]
    with pytest.raises(ValueError) as err:
        resolve([parse_rule("pose_peple >= 1")], declared)
    assert str(err.value) == (
        "--filter 'pose_peple >= 1': unknown stat 'pose_peple'; the chosen annotators emit "
        "canny: canny_density; lines: lines_segments, lines_density"
    )
    with pytest.raises(ValueError, match="names annotator 'pose', which is not in --annotators"):
        resolve([parse_rule("pose.pose_people >= 1")], declared)
    with pytest.raises(ValueError, match="unknown stat 'canny_density'"):
        resolve([parse_rule("lines.canny_density > 0")], declared)  # emitted, not by lines


def test_a_stat_two_annotators_emit_must_be_qualified():
    declared = {"a": ("x_mean",), "b": ("x_mean", "y")}
    with pytest.raises(ValueError, match=r"'x_mean' is emitted by a and b; write a\.x_mean"):
        resolve([parse_rule("x_mean > 0")], declared)
    (rule,) = resolve([parse_rule("b.x_mean > 0")], declared)
    assert rule.annotator == "b" and rule.stat == "x_mean"


def test_parse_filters_knows_what_the_chosen_parameters_compute():
    assert parse_filters([], [AnnotatorSpec("canny")]) == []
    with pytest.raises(ValueError, match="unknown stat 'canny_low'.*canny: canny_density$"):
        parse_filters(["canny_low > 60"], [AnnotatorSpec("canny")])
    (rule,) = parse_filters(
        ["canny_low > 60"], [AnnotatorSpec("canny", {"random_thresholds": "1"})]
    )
    assert rule == Rule("canny_low", ">", 60.0, "canny_low > 60", "canny")


def test_rejection_names_the_first_failing_rule_with_the_value():
    rules = resolve([parse_rule("pose_people >= 1"), parse_rule("pose_keypoints > 5")],
                    {"pose": ("pose_people", "pose_keypoints")})  # fmt: skip
    assert rejection(rules, "pose", {"pose_people": 2.0, "pose_keypoints": 9.0}) == ""
    assert rejection(rules, "canny", {}) == ""  # rules of other annotators are not checked here
    assert rejection(rules, "pose", {"pose_people": 0.0, "pose_keypoints": 0.0}) == (
        "filtered: pose_people >= 1 (was 0)"
    )
    assert rejection(rules, "pose", {"pose_people": 1.0, "pose_keypoints": 3.0}) == (
        "filtered: pose_keypoints > 5 (was 3)"
    )
    assert rejection(rules, "pose", {"pose_keypoints": 9.0}) == (
        "filtered: pose_people >= 1 (was missing)"
    )
    assert not rules[0].passes({"pose_people": math.nan})
    assert rule_of("filtered: pose_people >= 1 (was 0)") == "pose_people >= 1"
    assert rule_of("filtered: 60x45 is smaller than --min-size 64") == "smaller than --min-size 64"


# -- the worker ------------------------------------------------------------------------------
def worker_stats(paths: list[Path]) -> dict[str, dict[str, float]]:
    """canny and lines stats of each photo at short side 64, as a build computes them."""
    worker = Worker([AnnotatorSpec("canny"), AnnotatorSpec("lines")], resolution=64)
    results = worker.process_batch([(p.name, p.read_bytes()) for p in paths])
    assert all(r.status == "ok" for r in results)
    return {r.key: r.stats for r in results}


def test_worker_skips_later_annotators_and_keeps_failures_failed(photo_paths):
    import tests.plugins  # noqa: F401 - registers test_raises

    paths = photo_paths[:6]
    stats = worker_stats(paths)
    cut = sorted(s["canny_density"] for s in stats.values())[2]
    specs = [AnnotatorSpec("canny"), AnnotatorSpec("lines")]
    worker = Worker(specs, resolution=64, filters=parse_filters([f"canny_density > {cut}"], specs))
    items = [(p.name, p.read_bytes()) for p in paths] + [("broken", b"not an image")]
    results = {r.key: r for r in worker.process_batch(items)}
    assert results["broken"].status == "failed"
    for name, s in stats.items():
        result = results[name]
        if s["canny_density"] > cut:
            assert result.status == "ok" and result.stats == s
            assert set(result.files) == {"canny.png", "lines.png"}
        else:
            assert result.status == "filtered" and not result.files and result.image is None
            assert result.error == f"filtered: canny_density > {cut} (was {s['canny_density']:.6g})"
            assert result.stats == {"canny_density": s["canny_density"]}  # lines never ran
            assert "lines" not in result.timings
    # an annotator that fails a sample leaves it failed, whatever the rules of later ones say
    specs = [AnnotatorSpec("test_raises", {"threshold": "0"}), AnnotatorSpec("canny")]
    worker = Worker(specs, resolution=64, filters=parse_filters(["canny_density >= 0"], specs))
    result = worker.process(paths[0].name, paths[0].read_bytes())
    assert result.status == "failed" and result.error.startswith("annotator test_raises:")


# -- real builds -------------------------------------------------------------------------------
def rows_by_name(out: Path) -> dict[str, dict]:
    rows = [
        r for f in sorted((out / "index").glob("*.parquet")) for r in read_index(f.read_bytes())
    ]
    return {Path(r["source"]).name: r for r in rows}


def tar_keys(out: Path) -> set[str]:
    keys = set()
    for path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            keys |= {split_member(m.name)[0] for m in tar.getmembers()}
    return keys


@pytest.fixture(scope="module")
def filtered(photo_paths, tmp_path_factory):
    """Six photos built with two rules (on two annotators) that keep some and drop some."""
    paths = photo_paths[:6]
    folder = tmp_path_factory.mktemp("in") / "photos"
    folder.mkdir()
    for path in paths:
        shutil.copy(path, folder / path.name)
    stats = worker_stats(paths)
    densities = sorted(s["canny_density"] for s in stats.values())
    cut = f"{(densities[1] + densities[2]) / 2:.6f}"  # drops the two sparsest
    assert densities[1] < float(cut) < densities[2]
    kept = [s for s in stats.values() if s["canny_density"] > float(cut)]
    fewest = min(s["lines_segments"] for s in kept)
    assert any(s["lines_segments"] > fewest for s in kept), "the photos no longer split"
    rules = [f"canny_density > {cut}", f"lines_segments >= {fewest + 1:g}"]
    args = [
        "build",
        folder,
        "-a",
        "canny,lines",
        "--filter",
        rules[0],
        "--filter",
        rules[1],
        *SMALL,
    ]
    out = tmp_path_factory.mktemp("ds") / "ds"
    proc = run_cli(*args, "-o", out)
    assert proc.returncode == 0, proc.stderr  # filtered is not failed
    return {"out": out, "args": args, "rules": rules, "stats": stats, "proc": proc}


def expected(stats: dict[str, float], rules: list[str]) -> tuple[str, str]:
    """(status, error) the rules give a sample with these stats."""
    for text in rules:
        rule = parse_rule(text)
        if not rule.passes(stats):
            return "filtered", rule.reason(stats)
    return "ok", None


def test_index_has_status_rule_and_stats(filtered):
    rows = rows_by_name(filtered["out"])
    assert set(rows) == set(filtered["stats"])
    outcome = {name: expected(s, filtered["rules"]) for name, s in filtered["stats"].items()}
    assert {name: (r["status"], r["error"]) for name, r in rows.items()} == outcome
    by_status = [status for status, _ in outcome.values()]
    assert by_status.count("ok") >= 1 and by_status.count("filtered") >= 3
    for name, row in rows.items():
        stats = row_stats(row)
        if outcome[name][1] and outcome[name][1].startswith("filtered: canny"):
            assert set(stats) == {"canny_density"}  # lines was skipped for it
            assert row["width"] is None and row["original_width"] > 0
        else:
            assert stats == pytest.approx(filtered["stats"][name])


def test_dropped_samples_are_not_in_the_tars(filtered):
    rows = rows_by_name(filtered["out"])
    keys = tar_keys(filtered["out"])
    assert keys == {r["key"] for r in rows.values() if r["status"] == "ok"}
    assert not keys & {r["key"] for r in rows.values() if r["status"] == "filtered"}


def test_manifest_stats_and_inspect_count_them_per_rule(filtered, cli):
    out, rules = filtered["out"], filtered["rules"]
    rows = rows_by_name(out).values()
    per_rule = {rule: sum(r["status"] == "filtered" and rule_of(r["error"]) == rule for r in rows)
                for rule in rules}  # fmt: skip
    total = sum(per_rule.values())
    assert all(per_rule.values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["filters"] == rules
    assert manifest["totals"]["filtered"] == total and manifest["totals"]["failed"] == 0
    assert sum(s["filtered"] for s in manifest["shards"]) == total
    shard_stats = [json.loads(p.read_text()) for p in sorted((out / "stats").glob("*.json"))]
    assert sum(s["filtered"] for s in shard_stats) == total
    assert f", {total} filtered," in filtered["proc"].stderr
    text = cli("inspect", out, check=True).stdout
    assert f"filtered {total}  " in text and "filtered by rule:" in text
    for rule, count in per_rule.items():
        assert f"{count:6d}  {rule}\n" in text
    info = json.loads(cli("inspect", out, "--json", check=True).stdout)
    assert info["filtered_by_rule"] == {r: c for r, c in per_rule.items()}
    assert run_cli("verify", out).returncode == 0


def test_rerun_is_byte_identical_and_other_filters_are_refused(filtered, tmp_path):
    out, args = filtered["out"], filtered["args"]
    again = tmp_path / "again"
    assert run_cli(*args, "-o", again).returncode == 0
    for folder in ("shards", "index"):
        for path in sorted((out / folder).iterdir()):
            assert (again / folder / path.name).read_bytes() == path.read_bytes(), path
    resumed = run_cli(*args, "-o", out)
    assert resumed.returncode == 0 and "already complete" in resumed.stdout + resumed.stderr
    other = [a if a != filtered["rules"][1] else "lines_segments >= 0" for a in args]
    refused = run_cli(*other, "-o", out)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and refused.stderr.startswith("error: ")
    assert f"filters was {filtered['rules']!r}" in refused.stderr
    unfiltered = run_cli(*args[:4], *SMALL, "-o", out)  # the same build without --filter
    assert unfiltered.returncode == 2 and "filters was" in unfiltered.stderr


def test_a_typo_in_a_rule_is_a_usage_error_before_any_work(photo_paths, tmp_path):
    out = tmp_path / "ds"
    proc = run_cli("build", photo_paths[0], "-o", out, "-a", "canny,lines",
                   "--filter", "canny_densty > 0.01", *SMALL)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (
        "error: --filter 'canny_densty > 0.01': unknown stat 'canny_densty'; the chosen "
        "annotators emit canny: canny_density; lines: lines_segments, lines_density\n"
    )
    assert not out.exists()  # nothing planned, no Ray started
    proc = run_cli("build", photo_paths[0], "-o", out, "--filter", "canny_density => 0.01", *SMALL)
    assert proc.returncode == 2 and proc.stderr.startswith("error: bad --filter ")
    assert proc.stderr.count("\n") == 1 and not out.exists()


def test_annotate_writes_no_outputs_for_filtered_images(filtered, tmp_path):
    folder = Path(filtered["args"][1])
    rule = filtered["rules"][0]
    out = tmp_path / "maps"
    args = ("annotate", folder, "-o", out, "-a", "canny,lines", "--filter", rule, *SMALL[:2])
    proc = run_cli(*args, "-w", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    dropped = {n for n, s in filtered["stats"].items() if not parse_rule(rule).passes(s)}
    assert report["counts"]["filtered"] == len(dropped) == 2
    assert report["counts"]["done"] == len(filtered["stats"]) - 2
    assert report["filtered_by_rule"] == {rule: 2} and ", 2 filtered " in proc.stderr
    for name in filtered["stats"]:
        made = (out / f"{Path(name).stem}.canny.png").exists()
        assert made == (name not in dropped)
    other = run_cli(*args[:-4], "--filter", "canny_density > 0", *SMALL[:2], "-w", "1", "-q")
    assert other.returncode == 2 and "filters was" in other.stderr
