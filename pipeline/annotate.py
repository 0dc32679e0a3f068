"""``hintset annotate``: condition maps for files and folders of photos, mirrored into an output tree.

The same engine as ``hintset build``: sources (the listed images) -> units (chunks of
them) -> the pipelined worker in a local process pool -> the files writer. The parent
keeps ``made_by.jsonl`` (which settings made each output) and writes ``report.json``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from annotators import create
from pipeline.atomic import atomic_write, remove_stale_temps
from pipeline.budget import DEFAULT_SECONDS
from pipeline.caption import CaptionSpec
from pipeline.encode import encode_json
from pipeline.engine import FilesJob, WorkerSetup, resolve_batch_size
from pipeline.filters import count_rules, parse_filters
from pipeline.local_pool import LocalPool
from pipeline.sample_ref import SampleRef
from pipeline.worker import AnnotatorSpec
from pipeline.writers.files import MadeBy, output_bases, output_groups, record, settings_id

REPORT_NAME = "report.json"
#: most and fewest inputs per unit of work (see :func:`units`)
MAX_UNIT, MIN_UNIT = 256, 16


class SettingsConflict(ValueError):
    """Outputs in the folder were made with other settings (one-line message)."""


def list_refs(inputs: list[str], exclude: list[str] = ()) -> list[SampleRef]:
    """One SampleRef per input image (none below ``exclude``), keyed by its output base (``sub/dog``)."""
    from pipeline.sources import find_images

    files = find_images(inputs, exclude=exclude)
    bases = output_bases([rel for _, rel in files])
    return [SampleRef(key=base, source=str(path), rel=rel.as_posix(), url=str(path))
            for (path, rel), base in zip(files, bases, strict=True)]  # fmt: skip


def units(refs: list[SampleRef], processes: int, batch_size: int) -> Iterator[list[SampleRef]]:
    """Chunks of whole batches that shrink as the work runs out (guided scheduling).

    Each chunk holds about a quarter of what is left per process (at most MAX_UNIT, at
    least MIN_UNIT), so early chunks are large (little hand-off per sample) and the last
    ones small: the processes finish within a few samples of each other instead of one
    working alone through a large last chunk.
    """
    first = 0
    while first < len(refs):
        size = min(MAX_UNIT, math.ceil((len(refs) - first) / (4 * processes)))
        size = max(MIN_UNIT, batch_size, size)
        size = math.ceil(size / batch_size) * batch_size
        yield refs[first : first + size]
        first += size


def spare_inputs(refs: list[SampleRef], out: Path,
                 suffixes: list[str]) -> tuple[list[SampleRef], list[dict[str, Any]]]:  # fmt: skip
    """Split off inputs whose output would overwrite one of the inputs (failed records for them).

    Only an output that exists can be an input, so a fresh output folder costs one ``stat``
    per output and resolves no paths.
    """
    inputs: set[str] = set()  # the resolved input paths, once an output exists
    kept, failed = [], []
    for ref in refs:
        outputs = (out / f"{ref.key}.{suffix}" for suffix in suffixes)
        existing = [output for output in outputs if os.path.exists(output)]
        if existing and not inputs:
            inputs = {os.path.realpath(r.source) for r in refs}
        clash = next((o for o in existing if os.path.realpath(o) in inputs), None)
        if clash:
            failed.append(record(ref.source, "failed", f"write: {clash} is an input file; "
                                 "hintset never overwrites inputs (use another -o folder)"))  # fmt: skip
        else:
            kept.append(ref)
    return kept, failed


def run_annotate(
    inputs: list[str],
    out: str | os.PathLike,
    specs: list[AnnotatorSpec],
    *,
    resolution: int = 512,
    workers: int = 0,
    cpus_per_worker: int = 1,
    batch_size: int | None = None,
    overwrite: bool = False,
    save_image: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    filters: list[str] | tuple[str, ...] = (),
    caption: CaptionSpec | None = None,
    sample_timeout: float = DEFAULT_SECONDS,
) -> dict[str, Any]:
    """Annotate every image below ``inputs`` into ``out``; return (and write) the report.

    ``batch_size``: images per annotator call (None: automatic, see
    :func:`~pipeline.engine.resolve_batch_size`; the report records the size used).
    With ``caption``, each image also gets ``<stem>.caption.txt`` from that model.
    ``sample_timeout``: seconds the annotators may take per image (0: no limit).

    Raises SettingsConflict when existing outputs were made with other settings and
    ``overwrite`` is off (a rerun never keeps maps under another run's settings), and
    ValueError for a bad ``--filter`` rule (inputs it rejects get no outputs).
    """
    rules = parse_filters(filters, specs)
    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    refs = list_refs(inputs, exclude=[str(out)])
    groups = output_groups(specs, resolution, save_image, [rule.text for rule in rules], caption)
    refs, records = spare_inputs(
        refs, out, [s for _, suffixes in groups.values() for s in suffixes]
    )
    ids = {group: settings_id(settings) for group, (settings, _) in groups.items()}
    made = MadeBy(out)
    todo = refs
    if not overwrite:
        states = [made.state(ref.key, out, groups, ids) for ref in refs]
        conflicts = [group for state, group in states if state == "conflict"]
        if conflicts:
            group = conflicts[0]
            raise SettingsConflict(
                f"{out} holds {group} outputs of {conflicts.count(group)} input(s) made with "
                f"other settings ({made.describe_change(group, groups[group][0])}); use "
                "--overwrite to redo them, or another output folder"
            )
        todo = [ref for ref, (state, _) in zip(refs, states, strict=True) if state != "done"]

    def collect(unit_records: list[dict[str, Any]]) -> None:
        for rec in unit_records:
            if rec["status"] == "ok":  # count only outputs that really exist
                base = rec.pop("output")
                missing = [f"{base}.{suffix}" for _, suffixes in groups.values()
                           for suffix in suffixes if not (out / f"{base}.{suffix}").exists()]  # fmt: skip
                if missing:
                    rec.update(status="failed", error=f"write: {missing[0]} missing after writing")
                else:
                    made.record(base, ids)
            records.append(rec)
            if on_record:
                on_record(rec)

    processes = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    batch_size = resolve_batch_size(batch_size, specs)
    setup = WorkerSetup(specs, resolution=resolution, cpus=cpus_per_worker, batch_size=batch_size,
                        filters=tuple(rules), caption=caption,
                        sample_timeout=sample_timeout)  # fmt: skip
    # the workers start before the progress bar (a forked worker must not inherit its thread)
    with LocalPool(setup, processes) as pool:
        if on_plan:
            on_plan(len(refs), len(todo))
        for rec in records:
            if on_record:
                on_record(rec)
        jobs = (FilesJob(unit, str(out), save_image, caption is not None)
                for unit in units(todo, processes, batch_size))  # fmt: skip
        made.start(groups, ids)
        try:
            pool.run(jobs, collect)
        finally:
            made.finish()
    redone = {ref.key for ref in todo}
    records += [record(ref.source, "skipped") for ref in refs if ref.key not in redone]
    report = build_report(inputs, out, specs, resolution, processes, records, time.time() - started)
    report["batch_size"] = batch_size
    if caption:
        report["caption"] = caption.config()
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
            "filtered": sum(r["status"] == "filtered" for r in records),
        },
        "filtered_by_rule": count_rules(r["error"] for r in records if r["status"] == "filtered"),
        "failures": [
            {"source": r["source"], "error": r["error"]} for r in records if r["status"] == "failed"
        ],
        "timings": {
            "wall_seconds": round(wall, 3),
            "images_per_second": round(len(done) / wall, 2) if wall > 0 else 0.0,
            "mean_ms": {k: round(1000 * sum(v) / len(v), 2) for k, v in sorted(stages.items())},
        },
    }
