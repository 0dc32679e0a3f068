"""Sources, units, plan and layout without Ray: real files, real tars, real Parquet."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import layout
from pipeline.ownership import remove_owned
from pipeline.plan import plan, read_plan
from pipeline.reader import read_sample
from pipeline.sources import find_images, load_captions
from pipeline.storage import Storage
from pipeline.units import iter_unit


def make_tar(path: Path, samples: dict[str, dict[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def refs_of(units):
    return [ref for unit in units for ref in iter_unit(unit)]


@pytest.fixture
def photo(photo_paths) -> bytes:
    return photo_paths[0].read_bytes()


def test_parquet_list_is_planned_from_metadata_in_row_ranges(tmp_path, photo_paths):
    rows = [{"path": f"img/{i}.jpg", "caption": f"c{i}"} for i in range(25)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "list.parquet", row_group_size=7)
    units = plan(Storage(tmp_path / "ds"), [str(tmp_path / "list.parquet")], 10)
    assert [(u.kind, u.start, u.stop, u.urls) for u in units] == [
        ("list", 0, 10, ()), ("list", 10, 20, ()), ("list", 20, 25, ())]  # fmt: skip
    refs = list(iter_unit(units[1]))
    assert [r.key for r in refs] == [f"list__{i:09d}" for i in range(10, 20)]
    assert refs[0].url == f"{tmp_path}/img/10.jpg" and refs[0].caption == "c10"
    # a rerun plans nothing new and reads the same units back
    again = plan(Storage(tmp_path / "ds"), [str(tmp_path / "list.parquet")], 10)
    assert again == units and len(list((tmp_path / "ds" / "plan").iterdir())) == 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_lists_are_split_by_byte_ranges(tmp_path, fmt):
    rows = [{"file": f"a/{i}.png", "text": f"t {i}"} for i in range(23)]
    path = tmp_path / f"list.{fmt}"
    if fmt == "csv":
        path.write_text("file,text\n" + "".join(f"{r['file']},{r['text']}\n" for r in rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    units = plan(Storage(tmp_path / "ds"), [str(path)], 5)
    assert [u.stop - u.start for u in units] == [5, 5, 5, 5, 3]
    refs = refs_of(units)
    assert [r.rel for r in refs] == [r["file"] for r in rows]
    assert [r.caption for r in refs] == [r["text"] for r in rows]


def test_folder_keys_are_unique_and_stable_across_cwd(tmp_path, photo):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jpg", "a.png", "a b.jpg", "a_b.jpg", "sub/x.jpg"):
        (folder / name).write_bytes(photo)
    (folder / "sub" / "x.txt").write_text(" sidecar caption \n")
    out = tmp_path / "ds"
    units = plan(Storage(out), [str(folder)], 3)
    keys = [k for u in units for k in u.keys]
    assert len(set(keys)) == 5 and all("." not in k and "__" not in k for k in keys)
    assert "a" in keys and "sub_x" in keys
    refs = {r.key: r for r in refs_of(units)}
    assert read_sample(refs["sub_x"]) == (photo, "sidecar caption")
    # same folder by a relative path from another cwd: nothing new is planned
    cwd = os.getcwd()
    try:
        os.chdir(folder / "sub")
        again = plan(Storage(out), [".."], 3)
    finally:
        os.chdir(cwd)
    assert again == units
    (folder / "new.jpg").write_bytes(photo)
    grown = plan(Storage(out), [str(folder)], 3)
    assert grown[:-1] == units and grown[-1].keys == ("new",)


def test_tar_units_stream_and_namespace_keys(tmp_path, photo):
    make_tar(tmp_path / "00000.tar", {"000000001": {"jpg": photo, "txt": b"cap", "json": b"{}"},
                                      "000000002": {"json": b"{}"}})  # fmt: skip
    (tmp_path / "other").mkdir()
    make_tar(tmp_path / "other" / "00000.tar", {"000000001": {"png": photo}})
    units = plan(Storage(tmp_path / "ds"), [str(tmp_path / "00000.tar"),
                                           str(tmp_path / "other" / "00000.tar")], 10)  # fmt: skip
    assert [u.kind for u in units] == ["tar", "tar"] and units[0].ns != units[1].ns
    refs = refs_of(units)
    assert len(refs) == 2 and len({r.key for r in refs}) == 2
    assert refs[0].key == "00000__000000001" and refs[0].caption == "cap"
    assert refs[0].data == photo and refs[0].source.endswith("00000.tar#000000001")


@pytest.mark.parametrize("damage", ["truncated", "not_a_tar", "huge_member"])
def test_bad_tar_becomes_a_failed_record(tmp_path, photo, damage):
    good = make_tar(tmp_path / "good.tar", {f"k{i}": {"jpg": photo} for i in range(3)})
    data = good.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "not_a_tar":
        data = b"this is not a tar file at all\n" * 40
    else:
        header = bytearray(data[:512])
        header[124:136] = b"%011o\0" % (10 * 1024**3)  # size field: 10 GB
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        data = bytes(header) + data[512:]
    (tmp_path / "bad.tar").write_bytes(data)
    units = plan(Storage(tmp_path / "ds"), [str(tmp_path / "bad.tar")], 10)
    refs = refs_of(units)
    assert refs[-1].error.startswith("input: ") and refs[-1].source.endswith("bad.tar")
    assert len({r.key for r in refs}) == len(refs)
    if damage == "truncated":
        assert 1 <= len(refs) - 1 < 3 and all(r.data == photo for r in refs[:-1])


def test_output_folder_and_hintset_outputs_are_not_inputs(tmp_path, photo):
    folder = tmp_path / "inp"
    (folder / "maps").mkdir(parents=True)
    (folder / "dog.jpg").write_bytes(photo)
    (folder / "maps" / "dog.canny.png").write_bytes(photo)
    (folder / "old_ds" / "stats").mkdir(parents=True)
    (folder / "old_ds" / "manifest.json").write_text("{}")
    (folder / "old_ds" / "x.jpg").write_bytes(photo)
    (folder / "annotated").mkdir()
    (folder / "annotated" / "report.json").write_text('{"hintset_version": "0.1.0"}')
    (folder / "annotated" / "cat.canny.png").write_bytes(photo)
    found = find_images([folder], exclude=[str(folder / "maps")])
    assert [str(rel) for _, rel in found] == ["dog.jpg"]
    units = plan(Storage(folder / "ds"), [str(folder)], 10, exclude=[str(folder / "maps")])
    assert [u.rels for u in units] == [("dog.jpg",)]


def test_symlinked_folder_is_followed_once(tmp_path, photo):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.jpg").write_bytes(photo)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "b.jpg").write_bytes(photo)
    os.symlink(real, folder / "linked")
    os.symlink(folder, folder / "loop")  # a link back up the tree
    found = [str(rel) for _, rel in find_images([folder])]
    assert found == ["b.jpg", "linked/a.jpg"]


def test_paths_with_glob_characters_are_taken_as_written(tmp_path, photo):
    """``photos[1]/`` and ``b[2].jpg`` exist as named: not read as patterns (which match nothing)."""
    from pipeline.sources import expand

    (tmp_path / "ph[1]").mkdir()
    (tmp_path / "ph[1]" / "a.jpg").write_bytes(photo)
    (tmp_path / "b[2].jpg").write_bytes(photo)
    (tmp_path / "c1.jpg").write_bytes(photo)
    assert expand(str(tmp_path / "ph[1]")) == [str(tmp_path / "ph[1]")]
    assert expand(f"file://{tmp_path}/b[2].jpg") == [f"file://{tmp_path}/b[2].jpg"]
    assert expand(str(tmp_path / "c[0-9].jpg")) == [str(tmp_path / "c1.jpg")]  # still a glob
    units = plan(
        Storage(tmp_path / "ds"), [str(tmp_path / "ph[1]"), str(tmp_path / "b[2].jpg")], 10
    )
    assert sorted(read_sample(r)[0] == photo for r in refs_of(units)) == [True, True]
    pasted = str([tmp_path / f"{i}.jpg" for i in range(1000)])  # a Python list as one argument
    with pytest.raises(FileNotFoundError) as missing:
        plan(Storage(tmp_path / "ds2"), [pasted], 10)
    assert str(missing.value).startswith("input not found: [PosixPath(")
    assert len(str(missing.value)) < 250


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        plan(Storage(tmp_path / "ds"), [str(tmp_path / "empty")], 10)


def test_bad_captions_file_names_file_and_line(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"file": "a.jpg", "caption": "ok"}\n{"file": "b.jpg", "caption": \n')
    with pytest.raises(ValueError, match=r"captions.jsonl line 2: not JSON"):
        load_captions(str(path))
    path.write_text('{"name": "a.jpg", "caption": "ok"}\n')
    with pytest.raises(ValueError, match=r"captions.jsonl: needs a file column"):
        load_captions(str(path))


def test_resume_of_lists_reads_no_per_file_plan_data(tmp_path, monkeypatch):
    import pipeline.plan

    rows = [{"path": f"{i}.jpg"} for i in range(30)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "l.parquet")
    storage = Storage(tmp_path / "ds")
    units = plan(storage, [str(tmp_path / "l.parquet")], 10)
    calls = []

    def spy(storage, files=True):
        calls.append(files)
        return read_plan(storage, files)

    monkeypatch.setattr(pipeline.plan, "read_plan", spy)
    assert plan(storage, [str(tmp_path / "l.parquet")], 10, done={0, 1, 2}) == units
    assert calls == [False]


def test_index_schema_is_fixed_and_read_by_pandas_and_datasets(tmp_path):
    import pandas as pd

    (tmp_path / "index").mkdir()
    ok = {"key": "a", "source": "s/a.jpg", "status": "ok", "error": None, "caption": "cap",
          "width": 10, "height": 8, "original_width": 20, "original_height": 16,
          "canny_density": 0.5}  # fmt: skip
    failed = {"key": "b", "source": "s/b.jpg", "status": "failed", "error": "decode: bad"}
    shards = [[ok], [failed], [{**failed, "key": "c", "caption": None}]]
    for i, rows in enumerate(shards):
        (tmp_path / layout.index_path(i)).write_bytes(layout.encode_index(rows))
    schemas = {pq.read_schema(p) for p in (tmp_path / "index").iterdir()}
    assert len(schemas) == 1 and schemas.pop().equals(layout.index_schema())
    frame = pd.read_parquet(tmp_path / "index")
    assert sorted(frame["key"]) == ["a", "b", "c"]
    assert layout.row_stats(frame[frame.key == "a"].iloc[0].to_dict()) == {"canny_density": 0.5}
    import datasets

    files = sorted(str(p) for p in (tmp_path / "index").iterdir())
    table = datasets.load_dataset("parquet", data_files=files, split="train",
                                  cache_dir=str(tmp_path / "cache"))  # fmt: skip
    assert sorted(table["key"]) == ["a", "b", "c"] and None in table["error"]


def test_overwrite_removes_only_what_hintset_wrote(tmp_path):
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps({"format_version": 1}))
    (out / "thesis.docx").write_text("mine")
    remove_owned(Storage(out))
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]
    shutil.rmtree(out)


def test_training_reads_keep_original_png_samples(tmp_path, photo_paths):
    """Training finds the image member through the layout: PNG originals are not skipped."""
    import webdataset as wds
    from PIL import Image

    from training.data import ShardDataset

    (tmp_path / layout.SHARDS).mkdir()
    png, edges = io.BytesIO(), io.BytesIO()
    Image.open(photo_paths[0]).convert("RGB").resize((80, 64)).save(png, "PNG")
    Image.new("L", (80, 64), 255).save(edges, "PNG")
    with wds.TarWriter(str(tmp_path / layout.tar_path(0))) as sink:
        for i in range(2):
            sink.write({"__key__": f"k{i}", "png": png.getvalue(), "txt": b"a photo",
                        "canny.png": edges.getvalue()})  # fmt: skip
    ds = ShardDataset(str(tmp_path), ["canny"], 64, seed=0, shuffle_buffer=1, resampled=False)
    sample = next(iter(ds))
    assert sample["key"] in {"k0", "k1"} and sample["pixel_values"].shape == (3, 64, 64)
    assert ds.skipped["missing_map"] == 0
