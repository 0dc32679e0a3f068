"""The local distributor: jobs on a pool of worker processes, one pipeline per process.

Workers start when the pool is made, so their start-up overlaps the caller's planning.
They are forked when that is safe (this process runs one thread and every annotator is
plain OpenCV/numpy code): a forked worker starts in milliseconds with the imports it
shares. Otherwise ``spawn``: learned annotators hold thread pools (torch, OpenMP) that fork
breaks. With one process, jobs run in this process (no start-up cost).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.engine import WorkerSetup, make_pipeline, run_job

_PIPELINE: Any = None
_SETUP_ERROR = ""


def init_process(setup: WorkerSetup) -> None:
    """Pool initializer: build the pipeline once per process (errors are kept, not raised)."""
    global _PIPELINE, _SETUP_ERROR
    _PIPELINE, _SETUP_ERROR = None, ""
    try:
        _PIPELINE = make_pipeline(setup)
    except Exception as err:  # noqa: BLE001 - reported per job as a one-line failure
        _SETUP_ERROR = " ".join(str(err).split()) or type(err).__name__


def run_in_process(job: Any) -> Any:
    """Run one job with this process's pipeline (or report the setup error for its inputs)."""
    if _PIPELINE is None:
        return job.setup_failed(_SETUP_ERROR)
    return run_job(_PIPELINE, job)


def start_method(setup: WorkerSetup) -> str:
    """``fork`` when a forked worker cannot inherit a broken runtime: this process runs one
    thread, has not imported torch, and every annotator is ``fork_safe`` (no captioner, no
    plugin modules); ``spawn`` otherwise."""
    if ("fork" not in mp.get_all_start_methods() or threading.active_count() > 1
            or "torch" in sys.modules or setup.caption is not None or setup.imports):  # fmt: skip
        return "spawn"
    from annotators import get

    try:
        return "fork" if all(get(spec.name).fork_safe for spec in setup.specs) else "spawn"
    except ValueError:  # an unknown name: the workers report it
        return "spawn"


class LocalPool:
    """Worker processes for jobs, started on creation; one process: jobs run in this one."""

    def __init__(self, setup: WorkerSetup, processes: int) -> None:
        self.setup, self.pool = setup, None
        if processes > 1:
            context = mp.get_context(start_method(setup))
            self.pool = context.Pool(processes, initializer=init_process, initargs=(setup,))

    def run(self, jobs: Iterable[Any], on_result: Callable[[Any], None]) -> None:
        """Run ``jobs``, calling ``on_result`` as each finishes (in this process: in order)."""
        if self.pool is not None:
            for result in self.pool.imap_unordered(run_in_process, jobs):
                on_result(result)
            return
        global _PIPELINE
        init_process(self.setup)
        try:
            for job in jobs:
                on_result(run_in_process(job))
        finally:
            if _PIPELINE is not None:
                _PIPELINE.close()
            _PIPELINE = None

    def close(self) -> None:
        """Stop the worker processes (at once: their results were all collected or are moot)."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_local(jobs: Iterable[Any], setup: WorkerSetup, processes: int,
              on_result: Callable[[Any], None]) -> None:  # fmt: skip
    """Run ``jobs`` on ``processes`` worker processes, calling ``on_result`` as each finishes."""
    with LocalPool(setup, processes) as pool:
        pool.run(jobs, on_result)
