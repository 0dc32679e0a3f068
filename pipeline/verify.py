"""Check a dataset: every tar reads and every member decodes; tars, index, stats and manifest agree."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from collections.abc import Callable
from typing import Any

from pipeline.decode import DecodeError, decode_image
from pipeline.encode import decode_png
from pipeline.filters import count_rules
from pipeline.layout import INDEX, index_path, read_index, split_member, stats_path, tar_path
from pipeline.manifest import read_manifest
from pipeline.plan import read_plan
from pipeline.storage import Storage
from pipeline.units import Unit


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
    """Problems found (empty list: the dataset is complete and consistent).

    Every shard is checked even when the manifest or other shards are damaged; a file
    that is missing or does not parse is one problem of its shard, never a traceback.
    """
    storage = Storage(root)
    problems: list[str] = []
    try:
        manifest = read_manifest(storage)
    except (OSError, ValueError) as err:
        problems.append(f"manifest.json unreadable: {_one_line(err)}")
        manifest = {}
    if manifest is None:
        return [f"{root}: no manifest.json (not a hintset dataset, or the build never started)"]
    if manifest and manifest.get("status") != "complete":
        problems.append(f"manifest status is {manifest.get('status')!r}, not 'complete'")
    listed = {s["name"]: s for s in manifest.get("shards", [])} if manifest else None
    try:
        shards = read_plan(storage)
    except Exception as err:  # noqa: BLE001 - a damaged plan is one problem
        return [*problems, f"plan unreadable: {_one_line(err)}"]
    for unit in shards:
        try:
            _check_shard(storage, unit, listed, problems)
        except Exception as err:  # noqa: BLE001 - anything unforeseen stays this shard's problem
            problems.append(f"shard {unit.name}: {_one_line(err)}")
    return problems


def _check_shard(
    storage: Storage, unit: Unit, listed: dict[str, Any] | None, problems: list[str]
) -> None:
    """Append the problems of one shard: missing or unreadable files, checksums, counts."""
    name = unit.name
    if not storage.exists(stats_path(unit.id)):
        problems.append(f"shard {name}: no stats file (incomplete)")
        return
    stats = _read(storage, stats_path(unit.id), name, problems, json.loads)
    tar_bytes = _read(storage, tar_path(unit.id), name, problems)
    index = _read(storage, index_path(unit.id), name, problems, read_index)
    if tar_bytes is not None:
        sha = hashlib.sha256(tar_bytes).hexdigest()
        if listed is not None and name not in listed:
            problems.append(f"shard {name}: missing from manifest")
        elif listed is not None and listed[name].get("tar_sha256") != sha:
            problems.append(f"shard {name}: tar sha256 differs from the manifest")
        if stats is not None and stats.get("tar_sha256") != sha:
            problems.append(f"shard {name}: tar sha256 differs from its stats")
        keys = _check_tar(name, tar_bytes, problems)
    if index is None:
        return
    ok_keys = [r["key"] for r in index if r["status"] == "ok"]
    if unit.kind == "files" and sorted(r["key"] for r in index) != sorted(unit.keys):
        problems.append(f"shard {name}: index rows do not match the planned inputs")
    if unit.kind == "list" and len(index) != unit.size:
        problems.append(f"shard {name}: index has {len(index)} rows, the plan {unit.size}")
    if tar_bytes is not None and keys != ok_keys:
        problems.append(
            f"shard {name}: tar holds {len(keys)} samples, index says {len(ok_keys)} ok"
        )
    if stats is not None and (
        stats.get("ok") != len(ok_keys) or stats.get("samples") != len(index)
    ):
        problems.append(f"shard {name}: stats counts differ from the index")


def _read(
    storage: Storage,
    rel: str,
    shard: str,
    problems: list[str],
    parse: Callable[[bytes], Any] | None = None,
) -> Any:
    """The bytes (or parsed content) of ``rel``; None and one problem if missing or unreadable."""
    try:
        data = storage.read_bytes(rel)
    except FileNotFoundError:
        problems.append(f"shard {shard}: {rel} is missing")
        return None
    except OSError as err:
        problems.append(f"shard {shard}: {rel} unreadable: {_one_line(err)}")
        return None
    if parse is None:
        return data
    try:
        return parse(data)
    except Exception as err:  # noqa: BLE001 - truncated JSON/Parquet: a problem, not a crash
        problems.append(f"shard {shard}: {rel} does not parse: {_one_line(err)}")
        return None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


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
    reasons: Counter[str] = Counter()
    filtered: list[str] = []  # reasons of filtered samples: the rule (or --min-size)
    for name in storage.list(INDEX):
        for row in read_index(storage.read_bytes(f"{INDEX}/{name}")):
            if row["status"] == "failed":
                reasons[_reason(row["error"] or "")] += 1
            elif row["status"] == "filtered":
                filtered.append(row["error"])
    return {"status": manifest.get("status"), "totals": manifest.get("totals", {}),
            "failures_by_reason": dict(reasons.most_common()),
            "filtered_by_rule": count_rules(filtered),
            "annotators": manifest.get("annotators", [])}  # fmt: skip


def _reason(error: str) -> str:
    """Group errors by their kind: the text up to the first detail (digits, quotes, paths)."""
    stage, _, detail = error.partition(": ")
    head = detail.split("(")[0].split(":")[0].strip()
    return f"{stage}: {head}" if head else stage
