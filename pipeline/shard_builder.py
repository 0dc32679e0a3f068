"""Build one shard end to end inside a worker: read -> decode/annotate/encode -> write.

This is the unit of work and of retry. It holds no state between shards except the
:class:`~pipeline.worker.Worker` (annotators loaded once).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from pipeline.encode import encode_jpeg, encode_json
from pipeline.plan import Shard
from pipeline.shard_writer import (
    INDEX,
    SHARDS,
    STATS,
    aggregate,
    write_index,
    write_stats,
    write_tar,
)
from pipeline.storage import Storage
from pipeline.worker import Result, Worker

IMAGE_EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def original_extension(data: bytes) -> str:
    """WebDataset extension for original bytes (jpg, png or webp; other formats become png)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return ""


def sample_members(key: str, source_caption: str | None, meta: dict, image: tuple[str, bytes],
                   result: Result) -> list[tuple[str, bytes]]:  # fmt: skip
    """The tar members of one sample, in a fixed order: image, caption, metadata, maps."""
    ext, data = image
    members = [(f"{key}.{ext}", data), (f"{key}.txt", (source_caption or "").encode()),
               (f"{key}.json", encode_json(meta))]  # fmt: skip
    members += [(f"{key}.{suffix}", blob) for suffix, blob in result.files.items()]
    return members


def build_shard(
    worker: Worker,
    storage: Storage,
    shard: Shard,
    *,
    batch_size: int = 8,
    keep_original: bool = False,
    jpeg_quality: int = 95,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Process every sample of ``shard`` and write its tar, index and (last) stats; return stats."""
    start = time.perf_counter()
    tar_samples: list[list[tuple[str, bytes]]] = []
    rows: list[dict[str, Any]] = []
    stages: dict[str, float] = {}
    stat_keys: set[str] = set()
    for first in range(0, len(shard.samples), batch_size):
        batch = shard.samples[first : first + batch_size]
        payloads, read_errors = [], {}
        for key, source in batch:
            try:
                payloads.append((key, source.read()))
            except OSError as err:
                read_errors[key] = f"read: {err.strerror or err}"
                payloads.append((key, b""))
        results = worker.process_batch(payloads)
        for (key, source), (_, data), result in zip(batch, payloads, results, strict=True):
            if key in read_errors:
                result.fail("read", read_errors[key].removeprefix("read: "))
            row = {"key": key, "source": source.id, "status": result.status,
                   "error": result.error or None, "caption": source.caption}  # fmt: skip
            if result.status == "ok":
                image = _stored_image(data, result, keep_original, jpeg_quality)
                if image is None:
                    result.fail("encode", "original bytes are not JPEG/PNG/WebP")
                    row.update(status="failed", error=result.error)
                else:
                    height, width = result.image.shape[:2]
                    row.update(width=width, height=height, original_width=result.original_size[0],
                               original_height=result.original_size[1], **result.stats)  # fmt: skip
                    meta = {k: v for k, v in row.items() if k not in ("status", "error")}
                    if source.meta:
                        meta["source_meta"] = _json_or_text(source.meta)
                    tar_samples.append(sample_members(key, source.caption, meta, image, result))
                    stat_keys.update(result.stats)
                    for stage, seconds in result.timings.items():
                        stages[stage] = stages.get(stage, 0.0) + seconds
            rows.append(row)
            result.image = None  # free pixels early; only encoded bytes are kept
        if on_progress:
            on_progress(len(batch))
    tar_sha256, tar_bytes = write_tar(storage, f"{SHARDS}/{shard.name}.tar", tar_samples)
    write_index(storage, f"{INDEX}/{shard.name}.parquet", rows)
    ok = sum(r["status"] == "ok" for r in rows)
    stats = {
        "shard": shard.id,
        "samples": len(rows),
        "ok": ok,
        "failed": len(rows) - ok,
        "no_caption": sum(1 for r in rows if not r.get("caption")),
        "tar_sha256": tar_sha256,
        "tar_bytes": tar_bytes,
        "stats": aggregate(rows, sorted(stat_keys)),
        "seconds": round(time.perf_counter() - start, 3),
        "stage_seconds": {k: round(v, 3) for k, v in sorted(stages.items())},
        "failures": {r["key"]: r["error"] for r in rows if r["status"] != "ok"},
    }
    write_stats(storage, f"{STATS}/{shard.name}.json", stats)
    return stats


def _stored_image(data: bytes, result: Result, keep_original: bool, quality: int):
    if not keep_original:
        return "jpg", encode_jpeg(result.image, quality)
    ext = original_extension(data)
    return (ext, data) if ext else None


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def shard_done(storage: Storage, shard: Shard) -> bool:
    """A shard is complete when its stats file exists (it is written last)."""
    return storage.exists(f"{STATS}/{shard.name}.json")


def shard_files(shard: Shard) -> list[str]:
    """Relative paths of a shard's outputs."""
    return [f"{SHARDS}/{shard.name}.tar", f"{INDEX}/{shard.name}.parquet",
            f"{STATS}/{shard.name}.json"]  # fmt: skip
