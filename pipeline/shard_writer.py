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
import tempfile
from typing import Any

from pipeline.encode import encode_json
from pipeline.layout import encode_index
from pipeline.storage import Storage

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
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(rel)}.", suffix=".tmp")
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
    """One Parquet row per input sample (failures included), in the fixed index schema."""
    storage.write_bytes(rel, encode_index(rows))


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
