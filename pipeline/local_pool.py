"""The local distributor: jobs on a pool of worker processes, one pipeline per process.

``spawn``, not ``fork``: learned annotators hold thread pools (torch, OpenMP) that fork
breaks. With one process, jobs run in this process (no start-up cost).
"""

from __future__ import annotations

import multiprocessing as mp
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


def run_local(jobs: Iterable[Any], setup: WorkerSetup, processes: int,
              on_result: Callable[[Any], None]) -> None:  # fmt: skip
    """Run ``jobs`` on ``processes`` worker processes, calling ``on_result`` as each finishes."""
    global _PIPELINE
    if processes <= 1:
        init_process(setup)
        try:
            for job in jobs:
                on_result(run_in_process(job))
        finally:
            if _PIPELINE is not None:
                _PIPELINE.close()
            _PIPELINE = None
        return
    context = mp.get_context("spawn")
    with context.Pool(processes, initializer=init_process, initargs=(setup,)) as pool:
        for result in pool.imap_unordered(run_in_process, jobs):
            on_result(result)
