"""``manifest.json``: the build's config, annotators (with weights sha256), shards and totals."""

from __future__ import annotations

import json
from typing import Any

from pipeline.storage import Storage

MANIFEST = "manifest.json"
#: config fields that must match for a rerun to resume into the same folder
COMPATIBLE = ("annotators", "resolution", "min_size", "keep_original", "jpeg_quality", "filters",
              "caption")  # fmt: skip


def read_manifest(storage: Storage) -> dict[str, Any] | None:
    """The manifest, or None if the folder has none yet."""
    if not storage.exists(MANIFEST):
        return None
    return json.loads(storage.read_bytes(MANIFEST))


def write_manifest(storage: Storage, manifest: dict[str, Any]) -> None:
    storage.write_bytes(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")


def incompatibility(old: dict[str, Any], config: dict[str, Any]) -> str:
    """Why ``config`` cannot resume a build made with ``old`` config ('' if it can)."""
    for key in COMPATIBLE:
        if old.get(key) != config.get(key):
            return f"{key} was {old.get(key)!r}, now {config.get(key)!r}"
    return ""


def totals(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Dataset totals from the shards' stats files."""
    merged: dict[str, dict[str, float]] = {}
    for shard in stats:
        for key, agg in shard.get("stats", {}).items():
            into = merged.setdefault(key, {"count": 0, "sum": 0.0, "zeros": 0})
            for field in into:
                into[field] += agg[field]
    return {
        "shards": len(stats),
        "samples": sum(s["samples"] for s in stats),
        "ok": sum(s["ok"] for s in stats),
        "failed": sum(s["failed"] for s in stats),
        "filtered": sum(s.get("filtered", 0) for s in stats),
        "upscaled": sum(s.get("upscaled", 0) for s in stats),
        "no_caption": sum(s["no_caption"] for s in stats),
        "captions_generated": sum(s.get("captions_generated", 0) for s in stats),
        "tar_bytes": sum(s["tar_bytes"] for s in stats),
        "stats": {
            k: {**v, "mean": v["sum"] / v["count"] if v["count"] else 0.0}
            for k, v in sorted(merged.items())
        },  # fmt: skip
    }
