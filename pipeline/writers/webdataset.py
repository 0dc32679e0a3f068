"""One WebDataset shard of ``hintset build``: ``shards/N.tar``, ``index/N.parquet``, then ``stats/N.json``.

The tar is streamed to a temporary file as samples arrive and hashed while written
(never read back). Members have a fixed mtime, owner and mode and each sample's files
are adjacent, so the same input gives byte-identical tars. The stats file is written
last: its presence means the shard is complete.

webdataset's own ``TarWriter`` is not used: it passes no format to ``tarfile`` (so
PAX headers instead of the GNU ones of existing shards) and sorts each sample's members
by extension, so its tars would differ from shards already built, and a resumed build
would mix two layouts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from typing import TYPE_CHECKING, Any

from pipeline import layout
from pipeline.atomic import temp_file
from pipeline.encode import check_texts, encode_jpeg, encode_json, encode_text, storable
from pipeline.storage import Storage

if TYPE_CHECKING:
    from pipeline.writers import Sample

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


def original_extension(data: bytes) -> str:
    """WebDataset extension for original bytes (jpg, png or webp; '' for other formats)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return ""


class ShardWriter:
    """Writes one shard; ``close`` returns its stats (what ``stats/N.json`` holds)."""

    def __init__(self, storage: Storage, shard_id: int, *, keep_original: bool = False,
                 jpeg_quality: int = 95) -> None:  # fmt: skip
        self.storage, self.shard_id, self.name = storage, shard_id, f"{shard_id:05d}"
        self.keep_original, self.jpeg_quality = keep_original, jpeg_quality
        self.rows: list[dict[str, Any]] = []
        self.stages: dict[str, float] = {}
        self.stat_keys: set[str] = set()
        self.start = time.perf_counter()
        folder = os.path.dirname(storage.path(self.tar_rel)) if storage.local else None
        if folder:
            os.makedirs(folder, exist_ok=True)
        fd, self.tmp = temp_file(folder, f"{self.name}.tar")
        self.raw = os.fdopen(fd, "wb")
        self.hashed = HashingWriter(self.raw)
        self.tar = tarfile.open(fileobj=self.hashed, mode="w", format=tarfile.GNU_FORMAT)

    @property
    def tar_rel(self) -> str:
        return layout.tar_path(self.shard_id)

    def encode(self, sample: Sample) -> None:
        """The stored image (JPEG of the resized image, or the original bytes) and metadata."""
        result = sample.result
        # text UTF-8 cannot hold (a lone surrogate) fails the sample here, not the shard later
        check_texts({"caption": sample.caption, "source": sample.ref.source, "path": sample.ref.rel,
                     "metadata": sample.ref.meta, "caption source": sample.caption_source})  # fmt: skip
        if self.keep_original:
            ext = original_extension(sample.data)
            if not ext:
                raise ValueError("original bytes are not JPEG/PNG/WebP")
            sample.stored[ext] = sample.data
        else:
            sample.stored["jpg"] = encode_jpeg(result.image, self.jpeg_quality)
        meta = {k: v for k, v in self.row(sample).items() if k not in ("status", "error")}
        if not sample.caption_source.startswith("generated:"):  # only generated ones are noted
            meta.pop("caption_source")
        if sample.ref.meta:
            meta["source_meta"] = _json_or_text(sample.ref.meta)
        sample.stored["txt"] = encode_text(sample.caption or "", "caption")
        sample.stored["json"] = encode_json(meta)

    def row(self, sample: Sample) -> dict[str, Any]:
        """The sample's index row (every input has one, failures included)."""
        result = sample.result
        row = {"key": sample.ref.key, "source": sample.ref.source, "status": result.status,
               "error": result.error or None, "caption": sample.caption,
               "caption_source": sample.caption_source}  # fmt: skip
        if result.status == "filtered":  # stats: those computed before a --filter rule rejected it
            row.update(original_width=result.original_size[0],
                       original_height=result.original_size[1], **result.stats)  # fmt: skip
        if result.status == "ok":
            row.update(width=result.size[0], height=result.size[1],
                       original_width=result.original_size[0],
                       original_height=result.original_size[1], upscaled=result.upscaled,
                       **result.stats)  # fmt: skip
        return {k: storable(v) for k, v in row.items()}

    def write(self, sample: Sample) -> None:
        """Append the sample's members to the tar (if ok) and its row to the index."""
        result = sample.result
        self.rows.append(self.row(sample))
        if result.status != "ok":
            return
        key, stored = sample.ref.key, sample.stored
        image_ext = next(ext for ext in stored if ext not in ("txt", "json"))
        members = [(image_ext, stored[image_ext]), ("txt", stored["txt"]),
                   ("json", stored["json"]), *result.files.items()]  # fmt: skip
        for suffix, data in members:
            add_member(self.tar, layout.member_name(key, suffix), data)
        self.stat_keys.update(result.stats)
        for stage, seconds in result.timings.items():
            self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def close(self) -> dict[str, Any]:
        """Finish the tar, write the index, then the stats (last); return the stats."""
        self.tar.close()
        self.raw.flush()
        os.fsync(self.raw.fileno())
        self.raw.close()
        self.storage.put_file(self.tmp, self.tar_rel)
        rows = self.rows
        self.storage.write_bytes(layout.index_path(self.shard_id), layout.encode_index(rows))
        count = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "filtered")}
        stats = {
            "shard": self.shard_id,
            "samples": len(rows),
            **count,
            "upscaled": sum(bool(r.get("upscaled")) for r in rows),
            "no_caption": sum(1 for r in rows if not r.get("caption")),
            "captions_generated": sum(r["caption_source"].startswith("generated:") for r in rows),
            "tar_sha256": self.hashed.digest.hexdigest(),
            "tar_bytes": self.hashed.size,
            "stats": aggregate(rows, sorted(self.stat_keys)),
            "seconds": round(time.perf_counter() - self.start, 3),
            "stage_seconds": {k: round(v, 3) for k, v in sorted(self.stages.items())},
            "failures": {r["key"]: r["error"] for r in rows if r["status"] == "failed"},
        }
        self.storage.write_bytes(layout.stats_path(self.shard_id), encode_json(stats) + b"\n")
        return stats

    def abort(self) -> None:
        """Remove the temporary tar of an unfinished shard."""
        try:
            self.tar.close()
            self.raw.close()
        except Exception:  # noqa: BLE001 - the file is removed next anyway
            pass
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


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


def done_shards(storage: Storage) -> tuple[set[int], set[int]]:
    """(complete shard ids, ids whose stats exist but whose tar or index is gone).

    Three listings, whatever the number of shards: a stats file marks a shard complete
    only while its tar and index are there too.
    """
    names = {d: {layout.shard_id(n) for n in storage.list(d)}
             for d in (layout.SHARDS, layout.INDEX, layout.STATS)}  # fmt: skip
    stats = names[layout.STATS] - {None}
    complete = stats & names[layout.SHARDS] & names[layout.INDEX]
    return complete, stats - complete


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
