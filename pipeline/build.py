"""``hintset build``: plan -> Ray workers build shards -> manifest. Resumable and incremental.

Rerunning the same command skips shards that are complete (stats, tar and index all
there); inputs added later are planned into new shards; ``retry_failed`` rebuilds shards
with failed samples (the others stay byte-identical); ``overwrite`` removes what hintset
wrote and starts again. One build at a time holds the output's lock.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pipeline import layout
from pipeline.atomic import remove_stale_temps
from pipeline.budget import DEFAULT_SECONDS
from pipeline.caption import CaptionSpec
from pipeline.dataset_card import CARD, write_dataset_card
from pipeline.engine import WorkerSetup, resolve_batch_size
from pipeline.filters import parse_filters
from pipeline.lock import BuildLock
from pipeline.manifest import incompatibility, read_manifest, totals, write_manifest
from pipeline.ownership import check_output, remove_owned
from pipeline.plan import plan_units, write_plan
from pipeline.ray_runner import START_TIMEOUT, BuildFailed, RunOptions, connect, run_shards
from pipeline.sources import absolute
from pipeline.storage import Storage
from pipeline.trust import Limits
from pipeline.worker import AnnotatorSpec
from pipeline.writers.webdataset import done_shards

FORMAT_VERSION = 1


def default_gpus(specs: list[AnnotatorSpec], captions: bool = False) -> float:
    """1 GPU per worker when an annotator (or the captioner) wants one and the cluster has
    GPUs, else 0 (CPU)."""
    import ray

    from annotators import create

    if not ray.cluster_resources().get("GPU", 0):
        return 0.0
    return 1.0 if captions or any(create(s.name, **s.params).wants_gpu for s in specs) else 0.0


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
    batch_size: int | None = None,
    overwrite: bool = False,
    imports: tuple[str, ...] = (),
    on_plan: Callable[[int, int, int], None] | None = None,
    on_samples: Callable[[int], None] | None = None,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    max_shards: int = 0,
    filters: tuple[str, ...] | list[str] = (),
    caption: CaptionSpec | None = None,
    start_timeout: float = START_TIMEOUT,
    sample_timeout: float = DEFAULT_SECONDS,
    limits: Limits | None = None,
    preset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build (or resume) the dataset in ``out``; return the final manifest.

    Holds the output's lock while it runs (a second build into ``out`` raises LockHeld).
    ``max_shards`` > 0 stops after building that many shards (status stays "building").
    ``filters`` are ``--filter`` rules (``'pose_people >= 1'``), checked before anything
    else (ValueError); samples they reject get status ``filtered``.
    ``caption`` fills missing (or all) captions with an image-to-text model.
    ``start_timeout``: seconds to wait for Ray to place the workers (then build on those that
    started; BuildFailed if none did). ``sample_timeout``: seconds the annotators may take
    per sample (0: no limit); a sample over it fails alone.
    ``limits``: what list rows may name and the caps on reading inputs (:mod:`pipeline.trust`).
    ``batch_size``: images per annotator call (None: automatic for the workers' device, see
    :func:`~pipeline.engine.resolve_batch_size`); the manifest config records the size used.
    ``preset``: the --preset record (annotators, union slot ids), stored in the manifest config.
    """
    rules = parse_filters(filters, specs)
    storage = Storage(out)
    check_output(storage)  # a folder of other files is refused before anything is written
    created = storage.local and not os.path.exists(storage.base)
    try:
        with BuildLock(storage):
            return _build(storage, inputs, out, specs, captions=captions, shard_size=shard_size,
                          resolution=resolution, min_size=min_size, keep_original=keep_original,
                          workers=workers, address=address, cpus_per_worker=cpus_per_worker,
                          gpus_per_worker=gpus_per_worker, retry_failed=retry_failed,
                          max_retries=max_retries, batch_size=batch_size, overwrite=overwrite,
                          imports=imports, on_plan=on_plan, on_samples=on_samples,
                          on_shard=on_shard, on_message=on_message or (lambda _: None),
                          max_shards=max_shards, rules=rules, caption=caption,
                          start_timeout=start_timeout, sample_timeout=sample_timeout,
                          limits=limits or Limits(), preset=preset)  # fmt: skip
    finally:
        if created and os.path.isdir(storage.base) and not os.listdir(storage.base):
            os.rmdir(storage.base)  # stopped before writing anything: no empty folder left


def _build(storage: Storage, inputs: list[str], out: str, specs: list[AnnotatorSpec], *,
           captions, shard_size, resolution, min_size, keep_original, workers, address,
           cpus_per_worker, gpus_per_worker, retry_failed, max_retries, batch_size, overwrite, imports, on_plan, on_samples, on_shard,
           on_message, max_shards, rules, caption, start_timeout, sample_timeout, limits, preset) -> dict[str, Any]:  # fmt: skip
    started = time.time()
    config = {
        "annotators": [{"name": s.name, "params": dict(sorted(s.params.items()))} for s in specs],
        "resolution": resolution,
        "min_size": min_size,
        "keep_original": keep_original,
        "jpeg_quality": 95,
        "shard_size": shard_size,
        "inputs": [absolute(str(i)) for i in inputs],
        "captions": captions,
        "filters": [rule.text for rule in rules],
        "caption": caption.config() if caption else None,
    }
    if preset:  # the checkpoint's recipe and union slot ids, read by the trainer's union mode
        config["preset"] = preset
    old = None if overwrite else read_manifest(storage)
    if old is not None:
        old["config"].setdefault("min_size", 0)  # manifests from before --min-size
        old["config"].setdefault("filters", [])  # and before --filter
    if old is not None and (why := incompatibility(old["config"], config)):
        raise BuildFailed(f"{out} holds a build with other options ({why}); use --overwrite "
                          "or another output folder")  # fmt: skip
    complete, broken = (set(), set()) if overwrite else done_shards(storage)
    # planned in memory first: a bad input stops the build before OUT changes
    shards, new = plan_units(storage, inputs, shard_size, captions=captions, exclude=[str(out)],
                             done=set() if retry_failed else complete, fresh=overwrite)  # fmt: skip
    if overwrite:
        remove_owned(storage, keep=(layout.LOCK,))
    storage.makedirs("")
    if storage.local:
        remove_stale_temps(storage.base)
    manifest = old or {"format_version": FORMAT_VERSION, "status": "building", "config": config}
    manifest["config"]["inputs"] = sorted(set(manifest["config"]["inputs"]) | set(config["inputs"]))
    write_manifest(storage, manifest)
    if new:
        write_plan(storage, new)
    for shard_id in sorted(broken):
        on_message(f"shard {layout.shard_name(shard_id)}: tar or index missing; building it again")
        storage.remove(layout.stats_path(shard_id))
    if retry_failed:
        complete -= failed_shards(storage, complete)
    pending = [s for s in shards if s.id not in complete]
    todo = pending[:max_shards] if max_shards else pending
    if on_plan:
        unknown = any(s.size < 0 for s in todo)  # a tar's sample count is known once it is read
        on_plan(len(shards), len(pending), -1 if unknown else sum(s.size for s in todo))
    annotator_info: list[dict[str, Any]] = manifest.get("annotators", [])
    captioner_info: dict[str, Any] | None = manifest.get("captioner")
    nodes: set[str] = set()

    def ready(info: dict[str, Any]) -> None:
        nonlocal annotator_info, captioner_info
        annotator_info, captioner_info = info["annotators"], info.get("captioner")

    def shard_finished(stats: dict[str, Any]) -> None:
        nodes.add(stats["node"])
        if on_shard:
            on_shard(stats)

    if todo:
        on_message("starting Ray" + (f" (joining {address})" if address else "") + " ...")
        connect(address, num_cpus=None)
        gpus_per_worker = gpus_per_worker or default_gpus(specs, caption is not None)
        batch_size = resolve_batch_size(batch_size, specs, gpu=gpus_per_worker > 0)
        manifest["config"]["batch_size"] = batch_size
        setup = WorkerSetup(specs, resolution=0 if keep_original else resolution,
                            min_size=min_size, filters=tuple(rules), cpus=cpus_per_worker,
                            batch_size=batch_size, imports=tuple(imports),
                            caption=replace(caption, batch_size=batch_size) if caption else None,
                            sample_timeout=sample_timeout,
                            limits=limits)  # fmt: skip
        options = RunOptions(root=str(out), setup=setup, keep_original=keep_original,
                             cpus_per_worker=cpus_per_worker,
                             gpus_per_worker=gpus_per_worker)  # fmt: skip
        run_shards(todo, options, workers=workers, max_retries=max_retries,
                   start_timeout=start_timeout, on_shard=shard_finished, on_samples=on_samples,
                   on_ready=ready, on_message=on_message)  # fmt: skip
    # stopped early on request (--max-shards): not complete, but counts what is built so far
    stopped = len(todo) < len(pending)
    built = complete | {s.id for s in todo}
    paths = [layout.stats_path(s.id) for s in shards if s.id in built or not stopped]
    all_stats = [json.loads(data) for data in storage.read_many(paths)]
    manifest.update(
        status="building" if stopped else "complete",
        annotators=annotator_info,
        **({"captioner": captioner_info} if captioner_info else {}),
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
    if not write_dataset_card(storage, manifest):
        on_message(f"{CARD} is not hintset's: left as it is (no dataset card written)")
    return manifest


def failed_shards(storage: Storage, complete: set[int]) -> set[int]:
    """Complete shards with failed samples, marked incomplete again (stats removed first)."""
    ids = sorted(complete)
    paths = [layout.stats_path(shard_id) for shard_id in ids]
    retry = set()
    for shard_id, rel, data in zip(ids, paths, storage.read_many(paths), strict=True):
        if json.loads(data).get("failed"):
            storage.remove(rel)
            retry.add(shard_id)
    return retry
