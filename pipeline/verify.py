"""Check a dataset: every tar reads and every member decodes; tars, index, stats and manifest agree."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any

from pipeline.decode import DecodeError, decode_image
from pipeline.encode import decode_png
from pipeline.layout import INDEX, index_path, read_index, split_member, stats_path, tar_path
from pipeline.manifest import read_manifest
from pipeline.plan import read_plan
from pipeline.storage import Storage


def check_member(name: str, data: bytes) -> str:
    """'' if a tar member decodes according to its extension, else the reason."""
    ext = name.split(".", 1)[1] if "." in name else ""
    try:
        if ext in ("jpg", "jpeg", "webp") or (ext == "png" and name.count(".") == 1):
            decode_image(data)
        elif ext.endswith("png"):
            decode_png(data)
        elif ext.endswith("json"):
            json.loads(data)
        elif ext == "txt":
            data.decode("utf-8")
        else:
            return f"unexpected member type .{ext}"
    except (DecodeError, ValueError, UnicodeDecodeError) as err:
        return f"does not decode: {err}"
    return ""


def verify(root: str) -> list[str]:
    """Problems found (empty list: the dataset is complete and consistent)."""
    storage = Storage(root)
    manifest = read_manifest(storage)
    if manifest is None:
        return [f"{root}: no manifest.json (not a hintset dataset, or the build never started)"]
    problems: list[str] = []
    if manifest.get("status") != "complete":
        problems.append(f"manifest status is {manifest.get('status')!r}, not 'complete'")
    listed = {s["name"]: s for s in manifest.get("shards", [])}
    for unit in read_plan(storage):
        name = unit.name
        if not storage.exists(stats_path(unit.id)):
            problems.append(f"shard {name}: no stats file (incomplete)")
            continue
        try:
            stats = json.loads(storage.read_bytes(stats_path(unit.id)))
            tar_bytes = storage.read_bytes(tar_path(unit.id))
            index = read_index(storage.read_bytes(index_path(unit.id)))
        except (OSError, ValueError) as err:
            problems.append(f"shard {name}: unreadable: {' '.join(str(err).split())[:200]}")
            continue
        sha = hashlib.sha256(tar_bytes).hexdigest()
        if name not in listed:
            problems.append(f"shard {name}: missing from manifest")
        elif listed[name]["tar_sha256"] != sha:
            problems.append(f"shard {name}: tar sha256 differs from the manifest")
        if stats["tar_sha256"] != sha:
            problems.append(f"shard {name}: tar sha256 differs from its stats")
        keys = _check_tar(name, tar_bytes, problems)
        ok_keys = [r["key"] for r in index if r["status"] == "ok"]
        if unit.kind == "files" and sorted(r["key"] for r in index) != sorted(unit.keys):
            problems.append(f"shard {name}: index rows do not match the planned inputs")
        if unit.kind == "list" and len(index) != unit.size:
            problems.append(f"shard {name}: index has {len(index)} rows, the plan {unit.size}")
        if keys != ok_keys:
            problems.append(
                f"shard {name}: tar holds {len(keys)} samples, index says {len(ok_keys)} ok"
            )
        if stats["ok"] != len(ok_keys) or stats["samples"] != len(index):
            problems.append(f"shard {name}: stats counts differ from the index")
    return problems


def _check_tar(name: str, data: bytes, problems: list[str]) -> list[str]:
    """Sample keys in tar order; records unreadable members and non-adjacent samples."""
    keys: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for info in tar:
                blob = tar.extractfile(info).read()
                key = split_member(info.name)[0]
                if not keys or keys[-1] != key:
                    if key in keys:
                        problems.append(f"shard {name}: files of {key} are not adjacent")
                    keys.append(key)
                if reason := check_member(info.name, blob):
                    problems.append(f"shard {name}: {info.name} {reason}")
    except tarfile.TarError as err:
        problems.append(f"shard {name}: tar unreadable: {err}")
    return keys


def summary(root: str) -> dict[str, Any]:
    """Totals, failures grouped by reason and per-annotator stats, for ``hintset inspect``."""
    storage = Storage(root)
    manifest = read_manifest(storage) or {}
    reasons: dict[str, int] = {}
    for name in storage.list(INDEX):
        for row in read_index(storage.read_bytes(f"{INDEX}/{name}")):
            if row["status"] != "ok":
                reasons[_reason(row["error"] or "")] = (
                    reasons.get(_reason(row["error"] or ""), 0) + 1
                )
    return {"status": manifest.get("status"), "totals": manifest.get("totals", {}),
            "failures_by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "annotators": manifest.get("annotators", [])}  # fmt: skip


def _reason(error: str) -> str:
    """Group errors by their kind: the text up to the first detail (digits, quotes, paths)."""
    stage, _, detail = error.partition(": ")
    head = detail.split("(")[0].split(":")[0].strip()
    return f"{stage}: {head}" if head else stage
