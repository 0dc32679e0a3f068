"""``hintset annotate``: condition maps for a folder of photos, mirrored into an output tree.

Plan (find files, skip finished ones) -> distribute batches to worker processes
(each holds one :class:`~pipeline.worker.Worker`) -> each worker writes its
maps atomically -> the parent gathers one record per input into ``report.json``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotators import create
from pipeline.atomic import atomic_write, remove_stale_temps
from pipeline.encode import encode_jpeg, encode_json
from pipeline.worker import AnnotatorSpec, Worker

REPORT_NAME = "report.json"


@dataclass(frozen=True)
class Task:
    """One input file and the stem its outputs get (``OUT/<rel dir>/<stem>``)."""

    source: str
    out_base: str


def output_suffixes(specs: list[AnnotatorSpec]) -> list[str]:
    """Suffixes each finished input has, e.g. ``canny.png``, ``pose.json`` (no model loading)."""
    suffixes = []
    for spec in specs:
        annotator = create(spec.name, **spec.params)
        suffixes += [f"{s}.png" for s in annotator.outputs]
        suffixes += [f"{s}.json" for s in annotator.data_outputs]
    return suffixes


def plan(files: list[tuple[Path, Path]], out: Path) -> list[Task]:
    """Map each input to its output stem; inputs sharing a stem keep their extension in it."""
    bases: dict[Path, list[Path]] = {}
    for path, rel in files:
        bases.setdefault(rel.with_suffix(""), []).append(path)
    tasks = []
    for path, rel in files:
        base = rel.with_suffix("")
        if len(bases[base]) > 1:
            base = rel.with_name(rel.name.replace(".", "_"))
        tasks.append(Task(str(path), str(out / base)))
    return tasks


def is_done(task: Task, suffixes: list[str]) -> bool:
    """True when every output of ``task`` exists (writes are atomic, so existing means complete)."""
    return all(os.path.exists(f"{task.out_base}.{s}") for s in suffixes)


def spare_inputs(tasks: list[Task], suffixes: list[str]) -> tuple[list[Task], list[dict[str, Any]]]:
    """Split off tasks whose output would overwrite one of the inputs (failed records for them)."""
    inputs = {os.path.realpath(t.source) for t in tasks}
    kept, failed = [], []
    for task in tasks:
        clash = next((f"{task.out_base}.{s}" for s in suffixes
                      if os.path.realpath(f"{task.out_base}.{s}") in inputs), None)  # fmt: skip
        if clash:
            failed.append(record(task, "failed", f"write: {clash} is an input file; "
                                 "hintset never overwrites inputs (use another -o folder)"))  # fmt: skip
        else:
            kept.append(task)
    return kept, failed


# -- worker process side -----------------------------------------------------
_WORKER: Worker | None = None
_WORKER_ERROR = ""
_SAVE_IMAGE = False


def init_worker(specs: list[AnnotatorSpec], resolution: int, save_image: bool) -> None:
    """Pool initializer: build the annotators once per process (errors are kept, not raised)."""
    global _WORKER, _WORKER_ERROR, _SAVE_IMAGE
    import cv2

    cv2.setNumThreads(1)  # one process per core; no oversubscription
    _SAVE_IMAGE = save_image
    try:
        _WORKER = Worker(specs, resolution=resolution)
    except Exception as err:  # noqa: BLE001 - reported per task as a one-line failure
        _WORKER_ERROR = " ".join(str(err).split()) or type(err).__name__


def run_batch(batch: list[Task]) -> list[dict[str, Any]]:
    """Process a batch of inputs in this worker and write their outputs; one record each."""
    if _WORKER is None:
        return [record(t, "failed", f"setup: {_WORKER_ERROR}") for t in batch]
    items, read_errors = [], {}
    for task in batch:
        try:
            items.append((task, Path(task.source).read_bytes()))
        except OSError as err:
            read_errors[task] = f"read: {err.strerror or err}"
    results = _WORKER.process_batch([(Path(t.source).stem, data) for t, data in items])
    records = [record(t, "failed", e) for t, e in read_errors.items()]
    for (task, _), result in zip(items, results, strict=True):
        if result.status != "ok":
            records.append(record(task, "failed", result.error))
            continue
        start = time.perf_counter()
        try:
            for suffix, data in result.files.items():
                atomic_write(f"{task.out_base}.{suffix}", data, fsync=False)
            if _SAVE_IMAGE:
                atomic_write(f"{task.out_base}.image.jpg", encode_jpeg(result.image), fsync=False)
        except OSError as err:
            records.append(record(task, "failed", f"write: {err}"))
            continue
        result.timings["write"] = time.perf_counter() - start
        height, width = result.image.shape[:2]
        records.append(
            record(task, "ok", timings=result.timings, stats=result.stats, size=[width, height])
        )
    return records


def record(task: Task, status: str, error: str = "", **extra: Any) -> dict[str, Any]:
    """One line of the report for one input."""
    return {"source": task.source, "status": status, "error": error, **extra}


# -- parent side ---------------------------------------------------------------
def batches(tasks: list[Task], size: int) -> Iterator[list[Task]]:
    """Consecutive batches of ``size`` tasks."""
    for start in range(0, len(tasks), size):
        yield tasks[start : start + size]


def distribute(
    tasks: list[Task],
    init_args: tuple,
    workers: int,
    batch_size: int,
    on_record: Callable[[dict[str, Any]], None],
) -> None:
    """Run batches in ``workers`` processes (in this process when 1), calling ``on_record``."""
    chunks = list(batches(tasks, batch_size))
    if workers <= 1:
        init_worker(*init_args)
        for chunk in chunks:
            for rec in run_batch(chunk):
                on_record(rec)
        return
    # spawn, not fork: learned annotators hold thread pools (torch, OpenMP) that fork breaks
    with mp.get_context("spawn").Pool(workers, initializer=init_worker, initargs=init_args) as pool:
        for recs in pool.imap_unordered(run_batch, chunks):
            for rec in recs:
                on_record(rec)


def run_annotate(
    inputs: list[str],
    out: str | os.PathLike,
    specs: list[AnnotatorSpec],
    *,
    resolution: int = 512,
    workers: int = 0,
    batch_size: int = 8,
    overwrite: bool = False,
    save_image: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Annotate every image below ``inputs`` into ``out``; return (and write) the report."""
    from pipeline.sources import find_images

    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    workers = workers or os.cpu_count() or 1
    suffixes = output_suffixes(specs)
    tasks = plan(find_images(inputs), out)
    tasks, records = spare_inputs(tasks, suffixes + ["image.jpg"] * save_image)
    todo = tasks if overwrite else [t for t in tasks if not is_done(t, suffixes)]
    if on_plan:
        on_plan(len(tasks), len(todo))

    for rec in records:
        if on_record:
            on_record(rec)

    def collect(rec: dict[str, Any]) -> None:
        records.append(rec)
        if on_record:
            on_record(rec)

    workers = max(1, min(workers, len(todo)))
    distribute(todo, (specs, resolution, save_image), workers, batch_size, collect)
    todo_sources = {t.source for t in todo}
    records += [record(t, "skipped") for t in tasks if t.source not in todo_sources]
    report = build_report(inputs, out, specs, resolution, workers, records, time.time() - started)
    atomic_write(out / REPORT_NAME, encode_json(report) + b"\n")
    return report


def build_report(
    inputs: list[str],
    out: Path,
    specs: list[AnnotatorSpec],
    resolution: int,
    workers: int,
    records: list[dict[str, Any]],
    wall: float,
) -> dict[str, Any]:
    """Counts, failures with reasons, mean stage timings and annotator identities."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        hintset_version = version("hintset")
    except PackageNotFoundError:
        hintset_version = "unknown"
    records = sorted(records, key=lambda r: r["source"])
    done = [r for r in records if r["status"] == "ok"]
    stages: dict[str, list[float]] = {}
    for rec in done:
        for stage, seconds in rec.get("timings", {}).items():
            stages.setdefault(stage, []).append(seconds)
    return {
        "hintset_version": hintset_version,
        "inputs": [str(i) for i in inputs],
        "output": str(out),
        "resolution": resolution,
        "workers": workers,
        "annotators": [create(s.name, **s.params).info() for s in specs],
        "counts": {
            "total": len(records),
            "done": len(done),
            "skipped": sum(r["status"] == "skipped" for r in records),
            "failed": sum(r["status"] == "failed" for r in records),
        },
        "failures": [
            {"source": r["source"], "error": r["error"]} for r in records if r["status"] == "failed"
        ],
        "timings": {
            "wall_seconds": round(wall, 3),
            "images_per_second": round(len(done) / wall, 2) if wall > 0 else 0.0,
            "mean_ms": {k: round(1000 * sum(v) / len(v), 2) for k, v in sorted(stages.items())},
        },
    }
