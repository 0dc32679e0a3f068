"""The dataset format in one place: folder names, member names, the index schema, tar samples.

Writers, ``verify``, ``preview``, ``inspect`` and the trainer all read and write
datasets through these names, so the format is defined once. Standard library and
pyarrow only: ``training`` imports this module and nothing else from ``pipeline``.

```
OUT/manifest.json  OUT/shards/00000.tar  OUT/index/00000.parquet  OUT/stats/00000.json
OUT/plan/00000.parquet (units of work)   OUT/.hintset.lock (while a build runs)
```
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from typing import IO, Any

MANIFEST = "manifest.json"
SHARDS, INDEX, STATS, PLAN = "shards", "index", "stats", "plan"
LOCK = ".hintset.lock"
#: every name hintset writes at the top of a build output
OUTPUT_NAMES = (MANIFEST, SHARDS, INDEX, STATS, PLAN, LOCK)
#: extensions a sample's image may have in a tar (first found wins), in preference order
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
#: a tar member larger than this is refused (a header can claim any size)
MAX_MEMBER_BYTES = 512 * 1024 * 1024
#: index columns besides ``stats`` (a JSON object of per-map numbers, e.g. canny_density)
CORE_COLUMNS = ("key", "source", "status", "error", "caption", "width", "height",
                "original_width", "original_height", "upscaled", "caption_source")  # fmt: skip


def shard_name(shard_id: int) -> str:
    """``00042`` for shard 42."""
    return f"{shard_id:05d}"


def tar_path(shard_id: int) -> str:
    return f"{SHARDS}/{shard_name(shard_id)}.tar"


def index_path(shard_id: int) -> str:
    return f"{INDEX}/{shard_name(shard_id)}.parquet"


def stats_path(shard_id: int) -> str:
    return f"{STATS}/{shard_name(shard_id)}.json"


def shard_id(file_name: str) -> int | None:
    """42 for ``00042.tar`` / ``00042.parquet`` / ``00042.json``; None for other names."""
    stem = file_name.split(".", 1)[0]
    return int(stem) if stem.isdigit() and "." in file_name else None


def member_name(key: str, suffix: str) -> str:
    """``{key}.{suffix}``: keys have no dots, so webdataset splits the name at the key."""
    return f"{key}.{suffix}"


def split_member(name: str) -> tuple[str, str]:
    """(key, suffix) of a tar member: the key is the path up to the first dot of its base name."""
    folder, _, base = name.rpartition("/")
    key, _, suffix = base.partition(".")
    return (f"{folder}/{key}" if folder else key), suffix


def index_schema():
    """THE index schema: every shard's index has exactly these columns and types."""
    import pyarrow as pa

    text = [(c, pa.string()) for c in CORE_COLUMNS[:5]]
    sizes = [(c, pa.int64()) for c in CORE_COLUMNS[5:9]]
    flags = [(c, pa.bool_()) for c in CORE_COLUMNS[9:10]]  # upscaled: enlarged to --resolution
    # caption_source: "input", "generated:<model id>" or "" (indexes before it lack the column)
    later = [(c, pa.string()) for c in CORE_COLUMNS[10:]]
    return pa.schema(text + sizes + flags + later + [("stats", pa.string())])


def index_table(rows: list[dict[str, Any]]):
    """A pyarrow table in the index schema; keys outside the core columns go into ``stats``."""
    import pyarrow as pa

    columns: dict[str, list] = {c: [] for c in (*CORE_COLUMNS, "stats")}
    for row in rows:
        for c in CORE_COLUMNS:
            columns[c].append(row.get(c))
        extra = {k: v for k, v in row.items() if k not in CORE_COLUMNS and k != "stats"}
        extra.update(row.get("stats") or {})
        columns["stats"].append(json.dumps(extra, sort_keys=True) if extra else None)
    return pa.Table.from_pydict(columns, schema=index_schema())


def encode_index(rows: list[dict[str, Any]]) -> bytes:
    """Parquet bytes of the index of one shard (one row per input sample, failures included)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()  # pyarrow's own buffer (Python file objects: see pyproject)
    pq.write_table(index_table(rows), sink)
    return sink.getvalue().to_pybytes()


def read_index(data: bytes) -> list[dict[str, Any]]:
    """Rows of an index Parquet file (``stats`` left as JSON text).

    Single-threaded on purpose: pyarrow's reader thread pool can abort the interpreter at
    exit ("terminate called without an active exception") on small machines.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data), use_threads=False).to_pylist()


def row_stats(row: dict[str, Any]) -> dict[str, float]:
    """The per-map numbers of an index row."""
    return json.loads(row["stats"]) if row.get("stats") else {}


def sample_image(sample: dict[str, bytes]) -> tuple[str, bytes] | None:
    """(extension, bytes) of a sample's image member (jpg, jpeg, png or webp), or None."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return ext, sample[ext]
    return None


class TarSampleError(ValueError):
    """A tar could not be read to its end (truncated, not a tar, absurd member size)."""


def iter_tar_samples(
    fileobj: IO[bytes], max_member: int = MAX_MEMBER_BYTES
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) per sample, streaming the tar once from start to end.

    Members of one sample are adjacent (webdataset's grouping). Raises
    :class:`TarSampleError` with a one-line reason where the tar stops being readable;
    samples before that point have been yielded.
    """
    key, group = None, {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                if info.size > max_member:
                    raise TarSampleError(f"member {info.name} claims {info.size} bytes "
                                         f"(limit {max_member})")  # fmt: skip
                name_key, suffix = split_member(info.name)
                if os.path.basename(info.name).startswith("."):
                    continue
                if name_key != key:
                    if key is not None:
                        yield key, group
                    key, group = name_key, {}
                handle = tar.extractfile(info)
                data = handle.read() if handle else b""
                if len(data) != info.size:
                    raise TarSampleError(f"member {info.name} is truncated")
                group[suffix.lower()] = data
    except tarfile.TarError as err:
        raise TarSampleError(f"not a readable tar: {' '.join(str(err).split())}") from None
    except EOFError as err:
        raise TarSampleError(f"tar ends early: {err}") from None
    if key is not None:
        yield key, group


def is_output_folder(names: set[str]) -> bool:
    """True for a folder (given the names in it) that holds a hintset build output."""
    return MANIFEST in names and bool(names & {SHARDS, STATS, PLAN, LOCK})
