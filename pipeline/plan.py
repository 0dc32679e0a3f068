"""Plan a build: give each input a stable key (no dots) and a shard, persisted in ``plan/``.

The plan is written once, shard by shard (``plan/00000.jsonl``). A rerun reads it back,
so finished shards are never reassigned; inputs added later go into new shards.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pipeline.sources import Source
from pipeline.storage import Storage

PLAN_DIR = "plan"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class Shard:
    """A unit of work and retry: an id and its (key, source) pairs."""

    id: int
    samples: list[tuple[str, Source]]

    @property
    def name(self) -> str:
        return f"{self.id:05d}"


def make_key(rel: str) -> str:
    """A WebDataset-safe key from a relative path: letters, digits, ``_`` and ``-`` only."""
    return _UNSAFE.sub("_", rel).strip("_") or "sample"


def unique_key(source: Source, used: set[str]) -> str:
    """``make_key`` of the source, with a short hash of its id appended if already taken."""
    key = make_key(source.rel or source.id)
    if key in used:
        key = f"{key}_{hashlib.sha1(source.id.encode()).hexdigest()[:10]}"
    used.add(key)
    return key


def read_plan(storage: Storage) -> list[Shard]:
    """Shards planned by earlier runs, in id order."""
    shards = []
    for name in storage.list(PLAN_DIR):
        if not name.endswith(".jsonl"):
            continue
        lines = storage.read_bytes(f"{PLAN_DIR}/{name}").decode().splitlines()
        samples = [(row["key"], Source(**row["source"])) for row in map(json.loads, lines)]
        shards.append(Shard(int(name.split(".")[0]), samples))
    return shards


def write_plan(storage: Storage, shard: Shard) -> None:
    lines = [
        json.dumps({"key": k, "source": s.to_dict()}, sort_keys=True) for k, s in shard.samples
    ]
    storage.write_bytes(f"{PLAN_DIR}/{shard.name}.jsonl", ("\n".join(lines) + "\n").encode())


def plan(storage: Storage, sources: Iterable[Source], shard_size: int) -> list[Shard]:
    """All shards: those planned before, then new shards for inputs not planned yet."""
    shards = read_plan(storage)
    known = {source.id for shard in shards for _, source in shard.samples}
    used = {key for shard in shards for key, _ in shard.samples}
    next_id = shards[-1].id + 1 if shards else 0
    for batch in _chunks((s for s in sources if s.id not in known), shard_size):
        shard = Shard(next_id, [(unique_key(s, used), s) for s in batch])
        write_plan(storage, shard)
        shards.append(shard)
        next_id += 1
    return shards


def _chunks(items: Iterable[Source], size: int) -> Iterator[list[Source]]:
    batch: list[Source] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
