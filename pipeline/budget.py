"""A time budget per sample (``--sample-timeout``), so one image cannot stall a worker.

The model step runs on the worker's main thread. There, :func:`time_limit` arms a real-time
timer (SIGALRM) whose handler raises :class:`SampleTimeout` into the running annotator at
its next Python bytecode: a Python loop (pose grouping) or a sleep stops at once, one long
native call (a convolution) stops when it returns. The worker then fails the sample (for a
batch: retries its images one by one, each with its own budget), never the shard. Elsewhere
(no SIGALRM, not the main thread) nothing is interrupted, and the worker still fails a sample
whose annotators together took longer than the budget, checked between annotators.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: default budget per sample, in seconds: generous (a big image through several CPU networks)
DEFAULT_SECONDS = 600.0


class SampleTimeout(Exception):
    """A sample's annotators ran past its time budget (one-line message)."""


def exceeded(budget: float) -> SampleTimeout:
    return SampleTimeout(f"over the {budget:g} s per-sample time budget (--sample-timeout)")


def can_interrupt() -> bool:
    """True where :func:`time_limit` can interrupt: the main thread, on a system with SIGALRM."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: float, budget: float) -> Iterator[None]:
    """Raise SampleTimeout (naming ``budget``) in this block after ``seconds``; no limit when
    ``seconds`` is 0 or this thread cannot be interrupted (see :func:`can_interrupt`)."""
    if seconds <= 0 or not can_interrupt():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise exceeded(budget)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
