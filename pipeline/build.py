"""``hintset build``: plan -> Ray workers build shards -> manifest. Resumable and incremental.

Rerunning the same command skips shards whose stats file exists; inputs added later
are planned into new shards; ``retry_failed`` rebuilds shards with failed samples
(the others come out byte-identical); ``overwrite`` starts from an empty folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from pipeline.atomic import remove_stale_temps
from pipeline.engine import WorkerSetup
from pipeline.manifest import incompatibility, read_manifest, totals, write_manifest
from pipeline.plan import Shard, plan
from pipeline.ray_runner import BuildFailed, RunOptions, connect, run_shards
from pipeline.shard_writer import STATS
from pipeline.sources import iter_sources
from pipeline.storage import Storage
from pipeline.worker import AnnotatorSpec
from pipeline.writers.webdataset import shard_done

FORMAT_VERSION = 1


def default_gpus(specs: list[AnnotatorSpec]) -> float:
    """1 GPU per worker when an annotator wants one and the cluster has GPUs, else 0 (CPU)."""
    import ray

    from annotators import create

    if not ray.cluster_resources().get("GPU", 0):
        return 0.0
    return 1.0 if any(create(s.name, **s.params).wants_gpu for s in specs) else 0.0


def run_build(
    inputs: list[str],
    out: str,
    specs: list[AnnotatorSpec],
    *,
    captions: str | None = None,
    shard_size: int = 1000,
    resolution: int = 512,
    min_size: int = 0,
    keep_original: bool = False,
    workers: int = 0,
    address: str | None = None,
    cpus_per_worker: int = 1,
    gpus_per_worker: float = 0.0,
    retry_failed: bool = False,
    max_retries: int = 3,
    batch_size: int = 8,
    overwrite: bool = False,
    imports: tuple[str, ...] = (),
    on_plan: Callable[[int, int, int], None] | None = None,
    on_samples: Callable[[int], None] | None = None,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Build (or resume) the dataset in ``out``; return the final manifest."""
    started = time.time()
    storage = Storage(out)
    if overwrite:
        storage.remove_all()
    config = {
        "annotators": [{"name": s.name, "params": dict(sorted(s.params.items()))} for s in specs],
        "resolution": resolution,
        "min_size": min_size,
        "keep_original": keep_original,
        "jpeg_quality": 95,
        "shard_size": shard_size,
        "inputs": [str(i) for i in inputs],
        "captions": captions,
    }
    old = read_manifest(storage)
    if old is not None:
        old["config"].setdefault("min_size", 0)  # manifests from before --min-size
    if old is not None and (why := incompatibility(old["config"], config)):
        raise BuildFailed(f"{out} holds a build with other options ({why}); use --overwrite "
                          "or another output folder")  # fmt: skip
    storage.makedirs("")
    if storage.local:
        remove_stale_temps(storage.base)
    manifest = old or {"format_version": FORMAT_VERSION, "status": "building", "config": config}
    manifest["config"]["inputs"] = sorted(set(manifest["config"]["inputs"]) | set(config["inputs"]))
    write_manifest(storage, manifest)
    shards = plan(storage, iter_sources(inputs, captions), shard_size)
    todo = [s for s in shards if not shard_done(storage, s.id)]
    if retry_failed:
        todo_ids = {s.id for s in todo}
        todo += failed_shards(storage, [s for s in shards if s.id not in todo_ids])
        todo.sort(key=lambda s: s.id)
    if on_plan:
        on_plan(len(shards), len(todo), sum(len(s.samples) for s in todo))
    annotator_info: list[dict[str, Any]] = manifest.get("annotators", [])
    nodes: set[str] = set()

    def ready(info: dict[str, Any]) -> None:
        nonlocal annotator_info
        annotator_info = info["annotators"]

    def shard_finished(stats: dict[str, Any]) -> None:
        nodes.add(stats["node"])
        if on_shard:
            on_shard(stats)

    if todo:
        connect(address, num_cpus=None)
        gpus_per_worker = gpus_per_worker or default_gpus(specs)
        setup = WorkerSetup(specs, resolution=0 if keep_original else resolution,
                            min_size=min_size, cpus=cpus_per_worker, batch_size=batch_size,
                            imports=tuple(imports))  # fmt: skip
        options = RunOptions(root=str(out), setup=setup, keep_original=keep_original,
                             cpus_per_worker=cpus_per_worker,
                             gpus_per_worker=gpus_per_worker)  # fmt: skip
        run_shards(todo, options, workers=workers, max_retries=max_retries,
                   on_shard=shard_finished, on_samples=on_samples, on_ready=ready)  # fmt: skip
    all_stats = [json.loads(storage.read_bytes(f"{STATS}/{s.name}.json")) for s in shards]
    manifest.update(
        status="complete",
        annotators=annotator_info,
        shards=[
            {
                "name": f"{s['shard']:05d}",
                "samples": s["samples"],
                "ok": s["ok"],
                "failed": s["failed"],
                "filtered": s.get("filtered", 0),
                "tar_sha256": s["tar_sha256"],
                "tar_bytes": s["tar_bytes"],
            }
            for s in all_stats
        ],  # fmt: skip
        totals=totals(all_stats),
        last_run={
            "seconds": round(time.time() - started, 2),
            "shards_built": len(todo),
            "nodes": len(nodes),
        },  # fmt: skip
    )
    write_manifest(storage, manifest)
    return manifest


def failed_shards(storage: Storage, shards: list[Shard]) -> list[Shard]:
    """Complete shards with failed samples, marked incomplete again (stats removed first)."""
    retry = []
    for shard in shards:
        rel = f"{STATS}/{shard.name}.json"
        if json.loads(storage.read_bytes(rel)).get("failed"):
            storage.fs.rm(storage.path(rel))
            retry.append(shard)
    return retry
