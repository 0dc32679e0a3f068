"""What every worker process or actor runs: one pipeline (annotators loaded once) and units of work.

A job is a unit of work plus where it goes: :class:`FilesJob` (a chunk of listed
paths -> the annotate folder) or :class:`ShardJob` (a planned unit -> one WebDataset
shard). Both run through the same :class:`~pipeline.stages.Pipeline`; the
distributors (:mod:`pipeline.local_pool`, :mod:`pipeline.ray_runner`) only move jobs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.budget import DEFAULT_SECONDS
from pipeline.caption import CaptionSpec
from pipeline.filters import Rule
from pipeline.sample_ref import SampleRef
from pipeline.stages import Pipeline
from pipeline.trust import Limits, configure
from pipeline.units import Unit, iter_unit
from pipeline.worker import AnnotatorSpec, Worker


@dataclass(frozen=True)
class WorkerSetup:
    """How each worker builds its pipeline; plain data sent to every process or actor."""

    specs: list[AnnotatorSpec]
    resolution: int = 512
    min_size: int = 0
    filters: tuple[Rule, ...] = ()  # resolved --filter rules
    cpus: int = 1  # threads that decode, resize, encode beside the model (1, no GPU: none)
    io_threads: int = 16  # reads in flight
    batch_size: int = 8
    imports: tuple[str, ...] = ()
    serial: bool = False  # the one-thread design (for comparisons and debugging)
    caption: CaptionSpec | None = None  # --caption: fill missing (or all) captions
    sample_timeout: float = DEFAULT_SECONDS  # annotators' seconds per sample (0: no limit)
    limits: Limits = Limits()  # what inputs may name and the caps on reading them


def resolve_batch_size(batch_size: int | None, specs: list[AnnotatorSpec],
                       gpu: bool | None = None) -> int:  # fmt: skip
    """``--batch-size``: the number given, or automatic (None or 0) for the annotators on a
    GPU (``gpu``; None: whether this machine's CUDA GPU would run them) or on CPU:
    :func:`annotators.learned.auto_batch_size`."""
    if batch_size:
        return batch_size
    from annotators import create
    from annotators.learned import auto_batch_size, local_gpu

    annotators = [create(spec.name, **spec.params) for spec in specs]
    return auto_batch_size(annotators, local_gpu(annotators) if gpu is None else gpu)


def make_pipeline(setup: WorkerSetup) -> Pipeline:
    """Import plugin modules, load the annotators once and start the stage threads."""
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the stage threads, not inside OpenCV
    configure(setup.limits)
    for module in setup.imports:
        importlib.import_module(module)
    worker = Worker(setup.specs, resolution=setup.resolution, min_size=setup.min_size,
                    filters=setup.filters, caption=setup.caption,
                    sample_timeout=setup.sample_timeout)  # fmt: skip
    # One CPU and no GPU: no second core to overlap with, so decode and encode run on the
    # model thread (reads still run ahead). The worker then uses the one CPU Ray reserved
    # for it, and N such workers on N cores scale N-fold instead of contending.
    threads = setup.cpus if setup.cpus > 1 or worker.on_gpu else 0
    return Pipeline(worker, cpu_threads=threads, io_threads=setup.io_threads,
                    batch_size=setup.batch_size, serial=setup.serial)  # fmt: skip


@dataclass(frozen=True)
class FilesJob:
    """``hintset annotate``: a chunk of listed images into the mirrored output folder."""

    refs: list[SampleRef]
    out: str
    save_image: bool = False
    caption: bool = False  # --caption: write <stem>.caption.txt

    def samples(self) -> Iterator[SampleRef]:
        return iter(self.refs)

    def writer(self) -> Any:
        from pipeline.writers.files import FilesWriter

        return FilesWriter(self.out, self.save_image, self.caption)

    def setup_failed(self, error: str) -> list[dict[str, Any]]:
        """Every input failed because the worker could not start (e.g. missing weights)."""
        from pipeline.writers.files import record

        return [record(ref.source, "failed", f"setup: {error}") for ref in self.refs]


@dataclass(frozen=True)
class ShardJob:
    """``hintset build``: one planned unit into shard ``unit.id`` (``shards/``, ``index/``, ``stats/``)."""

    unit: Unit
    root: str
    keep_original: bool = False
    jpeg_quality: int = 95

    def samples(self) -> Iterator[SampleRef]:
        return iter_unit(self.unit)

    def writer(self) -> Any:
        from pipeline.storage import Storage
        from pipeline.writers.webdataset import ShardWriter

        return ShardWriter(Storage(self.root), self.unit.id, keep_original=self.keep_original,
                           jpeg_quality=self.jpeg_quality)  # fmt: skip


def run_job(pipeline: Pipeline, job: Any, on_sample: Any = None) -> Any:
    """Run one job's samples through ``pipeline`` into the job's writer; its summary."""
    return pipeline.run(job.samples(), job.writer(), on_sample)
