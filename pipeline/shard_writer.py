"""Write one shard: ``shards/NNNNN.tar`` (WebDataset), ``index/NNNNN.parquet``, then ``stats/NNNNN.json``.

Tar members have a fixed mtime, owner and mode and each sample's files are adjacent,
so the same input gives byte-identical tars. The stats file is written last: its
presence means the shard is complete.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from typing import Any

from pipeline.atomic import temp_file
from pipeline.encode import encode_json
from pipeline.storage import Storage

SHARDS, INDEX, STATS = "shards", "index", "stats"
FIXED_MTIME = 0  # members carry no build time, so rebuilds are byte-identical


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one file with fixed metadata."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = FIXED_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class HashingWriter:
    """A write-only file that hashes what passes through, so the tar is not read back."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size


def write_tar(
    storage: Storage, rel: str, samples: list[list[tuple[str, bytes]]]
) -> tuple[str, int]:
    """Write samples (each a list of (member name, bytes)) as a tar; return (sha256, size)."""
    folder = os.path.dirname(storage.path(rel)) if storage.local else None
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd, tmp = temp_file(folder, os.path.basename(rel))
    try:
        with os.fdopen(fd, "wb") as raw:
            hashed = HashingWriter(raw)
            with tarfile.open(fileobj=hashed, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for members in samples:
                    for name, data in members:
                        add_member(tar, name, data)
            raw.flush()
            os.fsync(raw.fileno())
        storage.put_file(tmp, rel)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return hashed.digest.hexdigest(), hashed.size


def write_index(storage: Storage, rel: str, rows: list[dict[str, Any]]) -> None:
    """One Parquet row per input sample (failures included)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = sorted({k for row in rows for k in row}, key=_column_order)
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
    sink = pa.BufferOutputStream()  # pyarrow's own buffer (Python file objects: see pyproject)
    pq.write_table(table, sink)
    storage.write_bytes(rel, sink.getvalue().to_pybytes())


def _column_order(name: str) -> tuple[int, str]:
    first = ["key", "source", "status", "error", "caption", "width", "height",
             "original_width", "original_height"]  # fmt: skip
    return (first.index(name), "") if name in first else (len(first), name)


def read_index(data: bytes) -> list[dict[str, Any]]:
    """Rows of an index Parquet file.

    Single-threaded on purpose: pyarrow's reader thread pool can abort the interpreter at
    exit ("terminate called without an active exception") on small machines, and index
    files are small.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data), use_threads=False).to_pylist()


def write_stats(storage: Storage, rel: str, stats: dict[str, Any]) -> None:
    """The shard's counts and timings; written last, it marks the shard complete."""
    storage.write_bytes(rel, encode_json(stats) + b"\n")


def aggregate(rows: list[dict[str, Any]], stat_keys: list[str]) -> dict[str, dict[str, float]]:
    """count, sum and number of zero values of each per-sample stat over the ok rows."""
    out = {}
    for key in stat_keys:
        values = [r[key] for r in rows if r["status"] == "ok" and r.get(key) is not None]
        out[key] = {
            "count": len(values),
            "sum": float(sum(values)),
            "zeros": sum(1 for v in values if v == 0),
        }
    return out
