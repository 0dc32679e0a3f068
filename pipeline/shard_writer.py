"""Shard folder names and the index file (``index/NNNNN.parquet``): writing and reading it.

The shard itself (tar, index, stats last) is written by :mod:`pipeline.writers.webdataset`.
"""

from __future__ import annotations

from typing import Any

from pipeline.storage import Storage

SHARDS, INDEX, STATS = "shards", "index", "stats"


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
