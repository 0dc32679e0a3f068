"""Build one shard end to end inside a worker: unit -> SampleRefs -> read -> decode/annotate/encode -> write.

This is the unit of work and of retry. It holds no state between shards except the
:class:`~pipeline.worker.Worker` (annotators loaded once). Serial; the pipelined
worker replaces the inside of :func:`build_shard`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from itertools import islice
from typing import Any

from pipeline import layout
from pipeline.encode import encode_jpeg, encode_json
from pipeline.reader import read_sample
from pipeline.shard_writer import aggregate, write_index, write_stats, write_tar
from pipeline.storage import Storage
from pipeline.units import Unit, iter_unit
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
    name = layout.member_name
    members = [(name(key, ext), data), (name(key, "txt"), (source_caption or "").encode()),
               (name(key, "json"), encode_json(meta))]  # fmt: skip
    members += [(name(key, suffix), blob) for suffix, blob in result.files.items()]
    return members


def build_shard(
    worker: Worker,
    storage: Storage,
    unit: Unit,
    *,
    batch_size: int = 8,
    keep_original: bool = False,
    jpeg_quality: int = 95,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Process every sample of ``unit`` and write its tar, index and (last) stats; return stats."""
    start = time.perf_counter()
    tar_samples: list[list[tuple[str, bytes]]] = []
    rows: list[dict[str, Any]] = []
    stages: dict[str, float] = {}
    stat_keys: set[str] = set()
    refs = iter_unit(unit)
    while batch := list(islice(refs, batch_size)):
        payloads, read_errors, captions = [], {}, {}
        for ref in batch:
            data, caption = b"", ref.caption
            if ref.error:
                read_errors[ref.key] = ref.error
            else:
                try:
                    data, caption = read_sample(ref)
                except OSError as err:
                    read_errors[ref.key] = f"read: {' '.join(str(err.strerror or err).split())}"
            payloads.append((ref.key, data))
            captions[ref.key] = caption
        results = worker.process_batch(payloads)
        for ref, (key, data), result in zip(batch, payloads, results, strict=True):
            if key in read_errors:
                stage, _, reason = read_errors[key].partition(": ")
                result.fail(stage, reason)
            caption = captions[key]
            row = {"key": key, "source": ref.source, "status": result.status,
                   "error": result.error or None, "caption": caption}  # fmt: skip
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
                    if ref.meta:
                        meta["source_meta"] = _json_or_text(ref.meta)
                    tar_samples.append(sample_members(key, caption, meta, image, result))
                    stat_keys.update(result.stats)
                    for stage, seconds in result.timings.items():
                        stages[stage] = stages.get(stage, 0.0) + seconds
            rows.append(row)
            result.image = None  # free pixels early; only encoded bytes are kept
        if on_progress:
            on_progress(len(batch))
    tar_sha256, tar_bytes = write_tar(storage, layout.tar_path(unit.id), tar_samples)
    write_index(storage, layout.index_path(unit.id), rows)
    ok = sum(r["status"] == "ok" for r in rows)
    stats = {
        "shard": unit.id,
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
    write_stats(storage, layout.stats_path(unit.id), stats)
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


def done_shards(storage: Storage) -> tuple[set[int], set[int]]:
    """(complete shard ids, ids whose stats exist but whose tar or index is gone).

    Three listings, whatever the number of shards: a stats file marks a shard complete
    only while its tar and index are there too.
    """
    names = {d: {layout.shard_id(n) for n in storage.list(d)} for d in (layout.SHARDS, layout.INDEX, layout.STATS)}  # fmt: skip
    stats = names[layout.STATS] - {None}
    complete = stats & names[layout.SHARDS] & names[layout.INDEX]
    return complete, stats - complete
