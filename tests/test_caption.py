"""``--caption``: missing captions filled by a tiny random BLIP in the published layout, on real Ray."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from annotators.weights import WeightsError
from pipeline.layout import read_index
from tests.conftest import run_cli
from tests.weights import BLIP_FILES, write_blip, write_florence2

BLIP = "Salesforce/blip-image-captioning-base"
OFFLINE = {"HINTSET_OFFLINE": "1"}
#: sidecar captions of the first photos: one real, one blank (counts as missing)
SIDECARS = {0: "a man riding a bike down the street", 1: "   "}


def index_rows(out: Path) -> dict[str, dict]:
    return {r["key"]: r for f in sorted((out / "index").glob("*.parquet"))
            for r in read_index(f.read_bytes())}  # fmt: skip


def tars(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.tar"))}


def members(out: Path) -> dict[str, bytes]:
    """Every tar member of the dataset by name."""
    found = {}
    for data in tars(out).values():
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for info in tar:
                found[info.name] = tar.extractfile(info).read()
    return found


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    write_blip(folder)
    write_florence2(folder)
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, photo_paths) -> Path:
    """Four photos: the first with a sidecar caption, the second with a blank one, two without."""
    folder = tmp_path_factory.mktemp("in") / "photos"
    folder.mkdir()
    for i, path in enumerate(photo_paths[:4]):
        shutil.copy(path, folder / path.name)
        if i in SIDECARS:
            (folder / f"{path.stem}.txt").write_text(SIDECARS[i])
    return folder


def build_args(inputs: Path, out: Path, weights: Path, *extra: str) -> tuple:
    return ("build", inputs, "-o", out, "-a", "canny", "--caption", BLIP, "--weights-dir", weights,
            "-r", "64", "--shard-size", "2", "--workers", "1", "-q", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def filled(inputs, weights, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "filled"
    proc = run_cli(*build_args(inputs, out, weights), env=OFFLINE)
    assert proc.returncode == 0, proc.stderr
    assert "2 without caption" not in proc.stderr and "0 without caption" in proc.stderr
    return out


def test_the_tiny_model_has_the_published_files(weights):
    assert sorted(p.name for p in (weights / BLIP).iterdir()) == sorted(BLIP_FILES)
    florence = weights / "florence-community/Florence-2-base"
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {
        p.name for p in florence.iterdir()
    }


@pytest.mark.parametrize(("name", "task"), [("blip-base", ""), ("florence-2-base", "<CAPTION>")])
def test_captioner_batch_equals_single_and_reloads_identically(weights, photos, photo_paths,
                                                               name, task):  # fmt: skip
    from annotators.caption import MODELS, Captioner
    from pipeline.decode import load_image, resize_short_side

    images = [*photos, *(resize_short_side(load_image(p), 64) for p in photo_paths[7:10])]
    first = Captioner(name, weights_dir=str(weights), max_tokens=12, batch_size=8)
    batch = first.caption(images)
    assert batch == [first.caption([img])[0] for img in images]
    assert all(isinstance(c, str) for c in batch) and len(set(filter(None, batch))) > 1
    again = Captioner(MODELS[name].repo_id, weights_dir=str(weights), max_tokens=12, batch_size=2)
    assert again.caption(images) == batch
    assert again.task == task
    shorter = Captioner(name, weights_dir=str(weights), max_tokens=3).caption(images)
    assert all(b.startswith(s) for s, b in zip(shorter, batch, strict=True))
    assert sum(map(len, shorter)) < sum(map(len, batch))
    info = first.info()
    assert info["model"] == MODELS[name].repo_id and info["file"] == "model.safetensors"
    assert len(info["sha256"]) == 64 and "config.json" in info["files"]


def test_missing_or_incomplete_model_is_one_line(offline_weights, weights, tmp_path):
    from annotators.caption import Captioner

    with pytest.raises(WeightsError) as missing:
        Captioner("blip-large").load()
    text = str(missing.value)
    assert "\n" not in text and "Salesforce/blip-image-captioning-large" in text
    assert "tokenizer_config.json" in text
    partial = tmp_path / "blip"
    shutil.copytree(weights / BLIP, partial)
    (partial / "tokenizer_config.json").unlink()
    with pytest.raises(WeightsError, match="missing tokenizer_config.json"):
        Captioner(str(partial)).load()


def test_missing_captions_are_generated_and_input_ones_kept(filled, inputs, photo_paths):
    rows = index_rows(filled)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows.values())
    by_name = {Path(r["source"]).name: r for r in rows.values()}
    files = members(filled)
    for i, path in enumerate(photo_paths[:4]):
        row = by_name[path.name]
        txt = files[f"{row['key']}.txt"].decode()
        meta = json.loads(files[f"{row['key']}.json"])
        assert txt == row["caption"]
        if i == 0:
            assert row["caption_source"] == "input" and row["caption"] == SIDECARS[0]
            assert "caption_source" not in meta
        else:  # the blank sidecar counts as missing
            assert row["caption_source"] == f"generated:{BLIP}"
            assert meta["caption_source"] == f"generated:{BLIP}" and meta["caption"] == txt
    manifest = json.loads((filled / "manifest.json").read_text())
    assert manifest["config"]["caption"] == {"model": BLIP, "recaption": False, "max_tokens": 40}
    captioner = manifest["captioner"]
    assert captioner["model"] == BLIP and len(captioner["sha256"]) == 64
    assert set(captioner["files"]) == set(BLIP_FILES)
    assert manifest["totals"]["captions_generated"] == 3
    assert manifest["totals"]["no_caption"] == 0


def test_resume_after_a_stopped_build_is_byte_identical(filled, inputs, weights, tmp_path):
    out = tmp_path / "resumed"
    first = run_cli(*build_args(inputs, out, weights, "--max-shards", "1"), env=OFFLINE)
    assert first.returncode == 0, first.stderr
    assert len(list((out / "stats").glob("*.json"))) == 1
    rerun = run_cli(*build_args(inputs, out, weights), env=OFFLINE)
    assert rerun.returncode == 0, rerun.stderr
    assert tars(out) == tars(filled)
    assert index_rows(out) == index_rows(filled)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    again = run_cli(*build_args(inputs, out, weights), env=OFFLINE)
    assert again.returncode == 0 and "3 generated" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == stamps
    assert run_cli("verify", out).returncode == 0


def test_recaption_replaces_every_caption(filled, inputs, weights, tmp_path):
    out = tmp_path / "recaptioned"
    proc = run_cli(*build_args(inputs, out, weights, "--recaption"), env=OFFLINE)
    assert proc.returncode == 0, proc.stderr
    rows, before = index_rows(out), index_rows(filled)
    assert {r["caption_source"] for r in rows.values()} == {f"generated:{BLIP}"}
    assert all(rows[k]["caption"] == before[k]["caption"] for k in rows
               if before[k]["caption_source"] != "input")  # same image, same caption  # fmt: skip
    assert [r["caption"] for r in rows.values()] != [r["caption"] for r in before.values()]


def test_resume_must_agree_on_the_caption_settings(filled, inputs, weights):
    for extra in (("--recaption",), ("--caption-max-tokens", "8")):
        proc = run_cli(*build_args(inputs, filled, weights, *extra), env=OFFLINE)
        assert proc.returncode == 2 and "other options" in proc.stderr and "caption" in proc.stderr
    plain = run_cli("build", inputs, "-o", filled, "-a", "canny", "-r", "64", "--shard-size", "2",
                    "-q")  # fmt: skip
    assert plain.returncode == 2 and "caption was" in plain.stderr


def annotate_args(inputs: Path, out: Path, weights: Path, *extra: str) -> tuple:
    return ("annotate", inputs, "-o", out, "-a", "canny", "--caption", BLIP, "--weights-dir",
            weights, "-r", "64", "--workers", "1", "-q", *extra)  # fmt: skip


def test_annotate_writes_a_caption_per_image(filled, inputs, weights, photo_paths, tmp_path):
    """``annotate --caption``: <stem>.caption.txt beside the maps, the caption build generates."""
    out = tmp_path / "maps"
    proc = run_cli(*annotate_args(inputs, out, weights), env=OFFLINE)
    assert proc.returncode == 0, proc.stderr
    built = {Path(r["source"]).name: r["caption"] for r in index_rows(filled).values()}
    texts = {}
    for i, path in enumerate(photo_paths[:4]):
        assert (out / f"{path.stem}.canny.png").exists()
        texts[i] = (out / f"{path.stem}.caption.txt").read_text()
        if i in SIDECARS and SIDECARS[i].strip():  # annotate captions every image
            assert texts[i] and texts[i] != SIDECARS[i]
        else:  # same resized image, same model: the caption build generated
            assert texts[i] == built[path.name]
    report = json.loads((out / "report.json").read_text())
    assert report["caption"] == {"model": BLIP, "recaption": False, "max_tokens": 40}
    assert report["counts"]["done"] == 4 and report["counts"]["failed"] == 0
    again = run_cli(*annotate_args(inputs, out, weights), env=OFFLINE)
    assert again.returncode == 0 and "0 done, 4 skipped" in again.stderr
    maps = {p.name: p.read_bytes() for p in out.glob("*.canny.png")}
    shorter = run_cli(
        *annotate_args(inputs, out, weights, "--caption-max-tokens", "3"), env=OFFLINE
    )
    assert shorter.returncode == 2 and "holds caption outputs" in shorter.stderr
    assert "max_tokens" in shorter.stderr and len(shorter.stderr.strip().splitlines()) == 1
    redo = run_cli(*annotate_args(inputs, out, weights, "--caption-max-tokens", "3",
                                  "--overwrite"), env=OFFLINE)  # fmt: skip
    assert redo.returncode == 0 and "4 done" in redo.stderr
    short = {i: (out / f"{p.stem}.caption.txt").read_text() for i, p in enumerate(photo_paths[:4])}
    assert all(texts[i].startswith(short[i]) for i in texts)
    assert sum(map(len, short.values())) < sum(map(len, texts.values()))
    assert {p.name: p.read_bytes() for p in out.glob("*.canny.png")} == maps
    plain = run_cli("annotate", inputs, "-o", out, "-a", "canny", "-r", "64", "-q")
    assert plain.returncode == 0 and "0 done, 4 skipped" in plain.stderr


def test_missing_model_fails_before_any_work(inputs, tmp_path):
    out = tmp_path / "ds"
    env = {
        **OFFLINE,
        "HINTSET_WEIGHTS_DIR": str(tmp_path / "none"),
        "HF_HOME": str(tmp_path / "hf"),
    }
    proc = run_cli("build", inputs, "-o", out, "--caption", "blip-base", "-q", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert BLIP in proc.stderr and "tokenizer_config.json" in proc.stderr
    assert not out.exists()
    alone = run_cli("build", inputs, "-o", out, "--recaption", "-q")
    assert alone.returncode == 2 and "--recaption needs --caption" in alone.stderr
    maps = run_cli("annotate", inputs, "-o", out, "--caption", "blip-base", "-q", env=env)
    assert maps.returncode == 2 and maps.stderr.count("error:") == 1
    assert len(maps.stderr.strip().splitlines()) == 1 and BLIP in maps.stderr
    assert not out.exists()


def test_indexes_without_caption_source_still_read(filled, tmp_path):
    """Indexes written before the column existed: verify, inspect and training read them."""
    import pyarrow.parquet as pq

    from training.data import ok_keys

    old = tmp_path / "old"
    shutil.copytree(filled, old)
    for path in (old / "index").glob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["caption_source"]), path)
    assert "caption_source" not in pq.read_schema(next((old / "index").glob("*.parquet"))).names
    assert run_cli("verify", old).returncode == 0
    inspect = run_cli("inspect", old)
    assert inspect.returncode == 0 and "samples 4" in inspect.stdout
    assert ok_keys(str(old)) == set(index_rows(filled))
    mixed = tmp_path / "mixed"
    shutil.copytree(filled, mixed)
    first = sorted((mixed / "index").glob("*.parquet"))[0]
    pq.write_table(pq.read_table(first).drop_columns(["caption_source"]), first)
    import pandas

    frame = pandas.read_parquet(mixed / "index")
    assert len(frame) == 4


def test_weights_command_lists_the_captioning_models(weights, tmp_path):
    env = {**OFFLINE, "HF_HUB_CACHE": str(tmp_path / "cache")}
    proc = run_cli("weights", "--weights-dir", weights, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout) if r["annotator"].startswith("caption")}
    assert rows["blip-base"]["present"] and rows["blip-base"]["repo_id"] == BLIP
    assert len(rows["blip-base"]["sha256"]) == 64
    assert not rows["blip-large"]["present"]
    assert "tokenizer_config.json" in rows["blip-large"]["needs"]


def test_a_sample_whose_captioning_fails_fails_alone(weights, photos, monkeypatch):
    """The batch is retried one by one: only the bad sample fails, with a one-line reason."""
    import numpy as np

    from annotators.caption import Captioner
    from pipeline.caption import CaptionSpec, CaptionStep
    from pipeline.worker import Result

    class FailsOnBlack(Captioner):
        def _caption_batch(self, images):
            if any(not img.any() for img in images):
                raise ValueError("black\nimage")
            return super()._caption_batch(images)

    monkeypatch.setenv("HINTSET_WEIGHTS_DIR", str(weights))
    step = CaptionStep(CaptionSpec("blip-base", max_tokens=8))
    step.captioner = FailsOnBlack("blip-base", max_tokens=8)
    black = np.zeros_like(photos[0])
    images = [photos[0], photos[1], black, photos[1]]
    results = [Result(key=f"k{i}", image=img) for i, img in enumerate(images)]
    filled = step.fill(results, [None, "given", None, "  "])
    expected = step.captioner.caption([photos[0], photos[1]])
    assert filled[0] == (expected[0], f"generated:{BLIP}")
    assert filled[1] == ("given", "input")
    assert results[2].status == "failed" and results[2].error == "caption: ValueError: black image"
    assert filled[2] == (None, "")
    assert filled[3] == (expected[1], f"generated:{BLIP}")
    assert [r.status for r in results] == ["ok", "ok", "failed", "ok"]
