"""Parquet/CSV/JSONL lists of images: their columns, their line ranges, their rows, streamed.

The driver scans a list once to plan row ranges (:func:`list_ranges`); a worker reads only
its range (:func:`read_rows`): CSV/JSONL from a byte offset, Parquet batch by batch from
the row groups that overlap it, so memory follows the shard size, not the file. Any store
works: local, object stores and HTTP (ranged requests when the server answers them, else
a stream read from the start; Parquet without ranges is fetched whole up to a limit). A
row that does not parse fails alone, with its line number.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from itertools import accumulate
from typing import IO, Protocol

from pipeline.reader import open_url, split_url


class Unit(Protocol):
    """What this module reads of a :class:`pipeline.units.Unit` (which imports this module):
    the list file and its row range [start, stop), for CSV/JSONL its byte range too."""

    url: str
    start: int
    stop: int
    offset: int
    end: int


PATH_COLUMNS = ("file", "path", "image", "filename", "file_name", "url")
CAPTION_COLUMNS = ("caption", "text", "prompt")
#: a Parquet list on an HTTP server without range requests is fetched whole up to this size
WHOLE_FETCH_LIMIT = 256 << 20
#: Parquet rows decoded at a time (at most; fewer for small shards), whatever the row groups
MAX_BATCH_ROWS = 65536
_CHUNK = 1 << 20
_HTTP_BLOCK = 4 << 20


def list_columns(names: list[str], url: str) -> tuple[str, str | None]:
    """(path column, caption column or None) of a list; ValueError naming the file if no path."""
    path_col = next((c for c in PATH_COLUMNS if c in names), None)
    if path_col is None:
        raise ValueError(f"{url}: needs one of the columns {list(PATH_COLUMNS)}; has {sorted(names)}")  # fmt: skip
    return path_col, next((c for c in CAPTION_COLUMNS if c in names), None)


def is_parquet(url: str) -> bool:
    return url.lower().endswith(".parquet")


def is_csv(url: str) -> bool:
    return url.lower().endswith(".csv")


# -- opening: ranged where the store allows it, streamed otherwise -------------------------
def open_list(url: str, seekable: bool = False) -> IO[bytes]:
    """A binary file for reading list ``url``: seekable (ranged requests) where the store can.

    An HTTP server that ignores ``Range`` gives a stream read from the start; with
    ``seekable=True`` (Parquet) the file is then fetched whole if at most
    :data:`WHOLE_FETCH_LIMIT` bytes, else ValueError in one line.
    """
    if not url.startswith(("http://", "https://")):
        return open_url(url, seekable=seekable)
    fs, path = split_url(url)
    handle = fs.open(path, "rb", block_size=_HTTP_BLOCK)
    if _answers_ranges(handle):
        return handle
    handle.close()
    if not seekable:
        return open_url(url)
    import io

    with open_url(url) as stream:
        data = stream.read(WHOLE_FETCH_LIMIT + 1)
        while len(data) <= WHOLE_FETCH_LIMIT and (more := stream.read(WHOLE_FETCH_LIMIT + 1 - len(data))):  # fmt: skip
            data += more
    if len(data) > WHOLE_FETCH_LIMIT:
        raise ValueError(f"{url}: the server does not answer HTTP range requests, which a Parquet "
                         f"list over {WHOLE_FETCH_LIMIT >> 20} MiB needs; serve it from one that "
                         "does, or give a local copy or a CSV/JSONL list")  # fmt: skip
    return io.BytesIO(data)


def _answers_ranges(handle) -> bool:
    """True if ``handle`` (fsspec HTTP file) can read from any offset: the server honours Range."""
    size = getattr(handle, "size", None)
    if not size:
        return False  # a stream: no size announced, or the server refuses ranges outright
    try:
        handle.seek(size - 1)
        handle.read(1)
        handle.seek(0)
    except ValueError:  # fsspec: "The HTTP server doesn't appear to support range requests"
        return False
    return True


class Lines:
    """The lines of a binary file read in chunks (no seeking needed, so HTTP streams work;
    :meth:`skip_to` seeks when the file can). ``readline`` and ``skip_to`` first, then
    iterate (lines or blocks of lines) to the end or stop; ``pos``: bytes handed out."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.buffer, self.start = handle, b"", 0  # buffer[start:]: not handed out
        self.pos = 0  # bytes handed out so far

    def readline(self) -> bytes:
        end = self.buffer.find(b"\n", self.start) + 1
        while not end:
            data = self.handle.read(_CHUNK)
            if not data:
                end = len(self.buffer)
                break
            seen = len(self.buffer) - self.start
            self.buffer, self.start = self.buffer[self.start :] + data, 0
            end = self.buffer.find(b"\n", seen) + 1
        line, self.start = self.buffer[self.start : end], end
        self.pos += len(line)
        return line

    def blocks(self) -> Iterator[bytes]:
        """The rest of the file a chunk of whole lines at a time (the last may lack its newline)."""
        rest = self.buffer[self.start :]
        self.buffer, self.start = b"", 0
        while True:
            data = self.handle.read(_CHUNK)
            block, rest = rest + data, b""
            if data:
                cut = block.rfind(b"\n") + 1
                block, rest = block[:cut], block[cut:]
            if block:
                self.pos += len(block)
                yield block
            if not data:
                return

    def __iter__(self) -> Iterator[bytes]:
        """The remaining lines, each with its newline (``pos``: the byte after the block)."""
        for block in self.blocks():
            lines = block.split(b"\n")
            last = lines.pop()
            yield from (line + b"\n" for line in lines)
            if last:
                yield last

    def skip_to(self, offset: int) -> None:
        """Go forward to byte ``offset``: seek if the file can, else read past the bytes."""
        if offset <= self.pos:
            return
        try:
            self.handle.seek(offset)
        except (OSError, ValueError):  # a stream (fsspec: "Cannot seek streaming HTTP file")
            pass
        else:
            self.buffer, self.start, self.pos = b"", 0, offset
            return
        drop = min(offset - self.pos, len(self.buffer) - self.start)
        self.start, self.pos = self.start + drop, self.pos + drop
        while self.pos < offset and (data := self.handle.read(min(_CHUNK, offset - self.pos))):
            self.pos += len(data)


# -- planning: the driver's one pass over a list --------------------------------------------
def list_ranges(url: str, size: int) -> Iterator[tuple[int, int, int, int]]:
    """(start row, stop row, start byte, end byte) chunks of a list file, ``size`` rows each.

    Checks the columns first (ValueError naming the file and the columns it has). Parquet:
    from the footer only. CSV/JSONL: one streaming pass over the bytes counting lines
    (rows holding quoted newlines are not supported); only the header or first row is parsed.
    """
    if is_parquet(url):
        import pyarrow.parquet as pq

        with open_list(url, seekable=True) as handle:
            meta = pq.ParquetFile(handle).metadata
            list_columns(meta.schema.to_arrow_schema().names, url)
            rows = meta.num_rows
        for start in range(0, rows, size):
            yield start, min(rows, start + size), 0, -1
        return
    with open_url(url) as handle:
        lines = Lines(handle)
        if is_csv(url):
            list_columns(_csv_fields(lines.readline()), url)
        start, first_byte, count, checked = 0, lines.pos, 0, is_csv(url)
        for block in lines.blocks():  # a chunk at a time: no Python loop over its lines
            ends, rows = _row_ends(block, lines.pos - len(block))
            if not checked:
                checked = any(_check_json_columns(row, url) for row in rows[:100])
            step = size - (count - start) - 1  # index in ``ends`` of the row closing this range
            while step < len(ends):
                yield start, start + size, first_byte, ends[step]
                start, first_byte, step = start + size, ends[step], step + size
            count += len(ends)
        if count > start:
            yield start, count, first_byte, lines.pos


def _row_ends(block: bytes, position: int) -> tuple[list[int], list[bytes]]:
    """(byte position after each row, the rows) of a block of whole lines starting at
    ``position``; blank lines are not rows."""
    rows = block.split(b"\n")
    if not rows[-1]:
        rows.pop()  # the block ends with a newline
    ends = list(accumulate([len(r) + 1 for r in rows], initial=position))[1:]
    ends[-1] = min(ends[-1], position + len(block))  # a last line without its newline
    if not all(map(bytes.strip, rows)):  # blank lines (rare): keep the others
        keep = [i for i, row in enumerate(rows) if row.strip()]
        ends, rows = [ends[i] for i in keep], [rows[i] for i in keep]
    return ends, rows


def _check_json_columns(line: bytes, url: str) -> bool:
    """Check the columns of a JSONL list on its first row that parses (True once checked)."""
    try:
        values = json.loads(line)
    except ValueError:
        return False  # a bad line fails its own row; check the next one
    if not isinstance(values, dict):
        return False
    list_columns(list(values), url)
    return True


def _csv_fields(header: bytes) -> list[str]:
    return next(csv.reader([header.decode("utf-8", "replace")]), [])


# -- a worker's rows ---------------------------------------------------------------------
def read_rows(unit: Unit) -> Iterator[tuple[int, dict | str]]:
    """(row, values) for rows ``[unit.start, unit.stop)`` of a list unit, streamed.

    ``values`` is the row's dict, or one line saying why that row cannot be read (a bad
    JSONL line, bytes that are not UTF-8; an unreadable or changed file fails the rows
    from where it stopped). Never raises.
    """
    row = unit.start
    try:
        rows = _parquet_rows(unit) if is_parquet(unit.url) else _text_rows(unit)
        for values in rows:
            yield row, values
            row += 1
            if row == unit.stop:
                return
        raise ValueError(f"{unit.url}: expected {unit.stop - unit.start} rows from row "
                         f"{unit.start}, found {row - unit.start} (file changed since planning?)")  # fmt: skip
    except Exception as err:  # noqa: BLE001 - an unreadable list range fails its rows, not the build
        reason = " ".join(str(err).split()) or type(err).__name__
        for rest in range(min(row, unit.stop), unit.stop):
            yield rest, reason


def _text_rows(unit: Unit) -> Iterator[dict | str]:
    """CSV/JSONL rows of the unit's byte range, one line at a time (a bad line fails alone)."""
    csv_list = is_csv(unit.url)
    before: list[int] = []  # lines before the unit's range, counted at the first bad line

    def where(number: int) -> str:
        if not before:
            before.append(_lines_before(unit.url, unit.offset))
        return f"{unit.url} line {before[0] + number + 1}"

    with open_list(unit.url) as handle:
        lines = Lines(handle)
        fields = _csv_fields(lines.readline()) if csv_list else []
        lines.skip_to(unit.offset)
        position = lines.pos
        for number, line in enumerate(lines):
            if unit.end >= 0 and position >= unit.end:
                break
            position += len(line)
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                yield f"{where(number)} is not UTF-8 text ({err.reason} at byte {err.start})"
                continue
            if csv_list:
                yield next(csv.DictReader([text], fieldnames=fields))
                continue
            try:
                values = json.loads(text)
            except json.JSONDecodeError as err:
                yield f"{where(number)} is not JSON ({err.msg} at column {err.colno})"
                continue
            except RecursionError:
                yield f"{where(number)} is JSON nested too deeply"
                continue
            yield (values if isinstance(values, dict) else f"{where(number)} is not a JSON object")


def _lines_before(url: str, offset: int) -> int:
    """Lines of ``url`` before byte ``offset`` (units know offsets, not line numbers)."""
    count = 0
    with open_url(url) as handle:
        lines = Lines(handle)
        for block in lines.blocks():
            first = lines.pos - len(block)
            count += block.count(b"\n", 0, max(0, offset - first))
            if lines.pos >= offset:
                break
    return count


def _parquet_rows(unit: Unit) -> Iterator[dict]:
    """Rows of the unit decoded in batches of at most the shard size (capped) from the row
    groups that overlap it, path and caption columns only: memory follows the shard size."""
    import pyarrow.parquet as pq

    batch_rows = max(1024, min(unit.stop - unit.start, MAX_BATCH_ROWS))
    with open_list(unit.url, seekable=True) as handle:
        pf = pq.ParquetFile(handle, buffer_size=_CHUNK)
        path_col, text_col = list_columns(pf.schema_arrow.names, unit.url)
        columns = [c for c in (path_col, text_col) if c]
        first = 0
        for group in range(pf.metadata.num_row_groups):
            count = pf.metadata.row_group(group).num_rows
            lo, hi = max(unit.start, first), min(unit.stop, first + count)
            if lo < hi:
                yield from _group_rows(pf, group, columns, batch_rows, lo - first, hi - first)
            first += count
            if first >= unit.stop:
                break


def _group_rows(pf, group: int, columns: list[str], batch_rows: int, lo: int, hi: int) -> Iterator[dict]:  # fmt: skip
    """Rows ``[lo, hi)`` of one row group, decoding ``batch_rows`` at a time."""
    position = 0
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns,
                                 use_threads=False):  # fmt: skip
        a, b = max(lo, position), min(hi, position + batch.num_rows)
        if a < b:
            yield from batch.slice(a - position, b - a).to_pylist()
        position += batch.num_rows
        if position >= hi:
            return
