"""Lists (Parquet/CSV/JSONL) read as streams from real stores: local files and real HTTP
servers on 127.0.0.1, one answering range requests and Python's own, which does not.

Issue #21 points 7 (lists over HTTP), 8 (no path column), 9 (text UTF-8 cannot hold),
10 (``--max-shards`` counts failures) and 12 (bad JSONL lines fail alone; Parquet memory
follows the shard size).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import lists
from pipeline.layout import read_index
from pipeline.lists import list_ranges, read_rows
from pipeline.units import Unit
from tests.conftest import ROOT, run_cli
from tests.test_cloud import QuietHandler

FAST = ("-a", "canny", "--resolution", "64", "--workers", "1", "-q")


class RangeHandler(QuietHandler):
    """Python's file server plus ``Range: bytes=a-b`` (206), as object stores and most web
    servers answer; every request's method and Range header are logged on the server."""

    def send_head(self):
        self.server.log.append((self.command, self.headers.get("Range")))
        spec = self.headers.get("Range", "")
        if not spec.startswith("bytes="):
            return super().send_head()
        data = Path(self.translate_path(self.path)).read_bytes()
        first, _, last = spec.removeprefix("bytes=").partition("-")
        start, end = int(first), min(int(last or len(data) - 1), len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end + 1 - start))
        self.end_headers()
        return io.BytesIO(data[start : end + 1])


@contextlib.contextmanager
def serve(folder: Path, handler=QuietHandler):
    """An HTTP server for ``folder`` on 127.0.0.1; yields (base URL, logged Range headers)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))  # fmt: skip
    server.log = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.log
    finally:
        server.shutdown()
        server.server_close()


def write_lists(folder: Path, rows: list[dict]) -> list[str]:
    """The same rows as a CSV, a JSONL and a Parquet list in ``folder``; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0])
    (folder / "l.csv").write_text("".join(",".join(map(str, line)) + "\n"
                                          for line in [fields, *(r.values() for r in rows)]))  # fmt: skip
    (folder / "l.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), folder / "l.parquet", row_group_size=2)
    return ["l.csv", "l.jsonl", "l.parquet"]


def units_of(url: str, size: int) -> list[Unit]:
    return [Unit(i, "list", url=url, ns="l", start=a, stop=b, offset=o, end=e)
            for i, (a, b, o, e) in enumerate(list_ranges(url, size))]  # fmt: skip


def index_rows(out: Path) -> list[dict]:
    return [r for p in sorted((out / "index").glob("*.parquet")) for r in read_index(p.read_bytes())]  # fmt: skip


def test_lists_build_over_http_in_every_format(tmp_path, photo_paths):
    """#21.7: CSV, multi-row JSONL and Parquet lists over a plain HTTP server (no ranges):
    'Cannot seek streaming HTTP file' before; now every row is built, two rows a shard."""
    www = tmp_path / "www"
    rows = [{"file": f"photos/{p.name}", "caption": f"c {p.stem}"} for p in photo_paths[:3]]
    names = write_lists(www, rows)
    (www / "photos").mkdir()
    for path in photo_paths[:3]:
        (www / "photos" / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "ds"
    with serve(www) as (base, _):
        proc = run_cli("build", *(f"{base}/{n}" for n in names), "-o", out, "--shard-size", "2", *FAST)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    built = index_rows(out)
    assert len(built) == 9 and all(r["status"] == "ok" for r in built)
    assert sorted(r["caption"] for r in built) == sorted(r["caption"] for r in rows * 3)
    assert len(list((out / "shards").glob("*.tar"))) == 6


@pytest.mark.parametrize("name", ["l.csv", "l.jsonl"])
def test_text_list_units_read_their_bytes_with_range_requests(tmp_path, name):
    """#21.7: where the server answers ranges, a unit asks for its own bytes, not the file's."""
    rows = [{"file": f"img/{i}.jpg", "caption": f"c{i}"} for i in range(10)]
    write_lists(tmp_path, rows)
    for handler in (RangeHandler, QuietHandler):  # with ranges, then streamed from the start
        with serve(tmp_path, handler) as (base, log):
            units = units_of(f"{base}/{name}", 3)
            del log[:]
            got = [v for u in units[1:3] for _, v in read_rows(u)]
        assert got == rows[3:9]
        if handler is RangeHandler and name == "l.jsonl":  # (a CSV's header read takes the
            # first block, the whole of this small file)
            assert any(r.startswith(f"bytes={units[1].offset}-") for _, r in log if r)


def test_parquet_over_http_uses_ranges_or_a_capped_whole_fetch(tmp_path, monkeypatch):
    """#21.7: Parquet needs ranges; without them it is fetched whole up to a limit, and a
    bigger list is refused in one line (never a traceback)."""
    rows = [{"file": f"img/{i}.jpg", "caption": f"c{i}"} for i in range(10)]
    write_lists(tmp_path, rows)
    with serve(tmp_path, RangeHandler) as (base, log):
        units = units_of(f"{base}/l.parquet", 4)
        assert [v for _, v in read_rows(units[1])] == rows[4:8]
        assert all(r for method, r in log if method == "GET")  # only range requests
    with serve(tmp_path) as (base, _):
        units = units_of(f"{base}/l.parquet", 4)
        assert [v for _, v in read_rows(units[2])] == rows[8:]
        monkeypatch.setattr(lists, "WHOLE_FETCH_LIMIT", 100)
        with pytest.raises(ValueError, match="does not answer HTTP range requests"):
            units_of(f"{base}/l.parquet", 4)


@pytest.mark.parametrize("name", ["l.csv", "l.jsonl", "l.parquet"])
def test_list_without_a_path_column_is_refused_when_planning(tmp_path, name):
    """#21.8: the columns found are named while planning, for every format."""
    write_lists(tmp_path, [{"foo": "a.jpg", "caption": "x"}] * 2)
    with pytest.raises(ValueError, match=r"l\.\w+: needs one of the columns .*; has \['caption', 'foo'\]"):  # fmt: skip
        list(list_ranges(str(tmp_path / name), 10))


def test_list_without_a_path_column_exits_2_before_any_work(tmp_path):
    """#21.8: was retried 4 times as a RayTaskError; now exit 2, one line, OUT unchanged."""
    (tmp_path / "nocol.jsonl").write_text(json.dumps({"foo": "a.jpg", "caption": "x"}) + "\n")
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty"):
        proc = run_cli("build", tmp_path / "nocol.jsonl", "-o", out, *FAST)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert (
            len(lines) == 1 and "nocol.jsonl" in lines[0] and "has ['caption', 'foo']" in lines[0]
        )
        assert "starting Ray" not in proc.stderr
    assert not (tmp_path / "new").exists() and not list((tmp_path / "empty").iterdir())


def test_bad_rows_fail_alone_with_their_line_number(tmp_path):
    """#21.12: a bad JSONL line failed its whole chunk; now only its row, named by line."""
    lines = [json.dumps({"file": "a.jpg", "caption": "ok 0"}), "", "{oops",
             json.dumps(["not", "an", "object"]), json.dumps({"file": "b.jpg"}),
             b'{"file": "c\xff.jpg"}'.decode("latin-1"), json.dumps({"file": "d.jpg"}),
             "[" * 100_000]  # fmt: skip
    (tmp_path / "l.jsonl").write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    units = units_of(str(tmp_path / "l.jsonl"), 2)
    got = dict(row for unit in units for row in read_rows(unit))
    assert sorted(got) == list(range(7))  # seven rows: the blank line is none
    assert got[0] == {"file": "a.jpg", "caption": "ok 0"} and got[3] == {"file": "b.jpg"}
    assert got[1].endswith("l.jsonl line 3 is not JSON (Expecting property name enclosed in double quotes at column 2)")  # fmt: skip
    assert got[2].endswith("line 4 is not a JSON object")
    assert "line 6 is not UTF-8 text" in got[4] and got[5] == {"file": "d.jpg"}
    assert got[6].endswith("line 8 is JSON nested too deeply")


def test_parquet_unit_in_a_big_row_group_decodes_only_batches(tmp_path):
    """#21.12: a unit in the middle of a 200k-row group: the right rows, and Arrow's peak
    allocation stays far below the group (the whole group was decoded before: 44 MB)."""
    path = tmp_path / "big.parquet"
    n = 200_000
    table = pa.table({"path": [f"img/{i:06d}.jpg" for i in range(n)],
                      "caption": [f"{i} " + "a photo " * 12 for i in range(n)]})  # fmt: skip
    pq.write_table(table, path, row_group_size=n)
    code = (
        "import sys, pyarrow as pa\n"
        "from pipeline.units import Unit, iter_unit\n"
        "refs = list(iter_unit(Unit(0, 'list', url=sys.argv[1], ns='m', start=150_000, stop=150_010)))\n"
        "print(json.dumps([[r.rel for r in refs], pa.default_memory_pool().max_memory()]))\n"
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", "import json\n" + code, str(path)], env=env,
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    rels, peak = json.loads(out)
    assert rels == [f"img/{i:06d}.jpg" for i in range(150_000, 150_010)]
    assert peak < 15e6, f"peak Arrow allocation {peak / 1e6:.1f} MB"


def non_utf8_tar(path: Path, photo: bytes) -> None:
    """A tar whose first member name is not UTF-8 (read back with surrogates), then a good one."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for key in ("bad\xff", "good"):
            for ext, data in (("jpg", photo), ("txt", b"a caption")):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_text_utf8_cannot_hold_fails_its_sample_and_max_shards_counts(tmp_path, photo_paths):
    """#21.9: a lone surrogate caption aborted the build, no row, manifest 'building'; a
    non-UTF-8 tar member name the same. #21.10: --max-shards with failures exited 0 and
    inspect said failed 0. #21.12: a bad line failed its whole chunk."""
    photo = photo_paths[0]
    (tmp_path / photo.name).write_bytes(photo.read_bytes())
    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"file": photo.name, "caption": "fine"}) + "\n"
        + json.dumps({"file": photo.name, "caption": "a\ud800b"}) + "\n"
        + "{oops\n" + json.dumps({"file": photo.name, "caption": "fine too"}) + "\n")  # fmt: skip
    non_utf8_tar(tmp_path / "names.tar", photo.read_bytes())
    out = tmp_path / "ds"
    args = ("build", tmp_path / "rows.jsonl", tmp_path / "names.tar", "-o", out, "--shard-size", "4", *FAST)  # fmt: skip
    first = run_cli(*args, "--max-shards", "1")
    assert first.returncode == 1, first.stderr  # as a full build: a sample failed
    assert "2 ok, 2 failed" in first.stderr and "stopped after 1 shards" in first.stderr
    shown = run_cli("inspect", out, "--json", check=True)
    info = json.loads(shown.stdout)
    assert info["status"] == "building"
    assert (info["totals"]["ok"], info["totals"]["failed"], info["totals"]["shards"]) == (2, 2, 1)
    rest = run_cli(*args)
    assert rest.returncode == 1, rest.stderr
    rows = {r["key"]: r for r in index_rows(out)}
    assert [rows[f"rows__{i:09d}"]["status"] for i in range(4)] == ["ok", "failed", "failed", "ok"]
    assert "caption is not valid UTF-8 text" in rows["rows__000000001"]["error"]
    assert rows["rows__000000001"]["caption"] == "a\\ud800b"  # stored escaped, never lost
    assert "line 3 is not JSON" in rows["rows__000000002"]["error"]
    tar_rows = {k: r for k, r in rows.items() if k.startswith("names__")}
    assert sorted(r["status"] for r in tar_rows.values()) == ["failed", "ok"]
    assert any("source is not valid UTF-8" in (r["error"] or "") for r in tar_rows.values())
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert run_cli("verify", out).returncode == 0


@pytest.mark.parametrize("chunk", [5, 64, 1 << 20])
def test_ranges_and_rows_agree_with_a_line_by_line_reading(tmp_path, monkeypatch, chunk):
    """Planning scans a chunk at a time: blank and white-space lines are not rows, a last
    line may lack its newline, chunks may end anywhere; rows come back in ranges of 3."""
    monkeypatch.setattr(lists, "_CHUNK", chunk)
    rows = [{"file": f"{i}.jpg"} for i in range(11)]
    text = "\n".join(json.dumps(r) for r in rows[:4]) + "\n\n \t\n\r\n"
    text += "\n".join(json.dumps(r) for r in rows[4:]) + "\n\n" + "  "
    path = tmp_path / "l.jsonl"
    path.write_text(text.rstrip(" ").rstrip("\n"))  # no newline after the last row
    units = units_of(str(path), 3)
    assert [(u.start, u.stop) for u in units] == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert [v for u in units for _, v in read_rows(u)] == rows
    assert units[-1].end == path.stat().st_size
