"""Writers: where processed samples go. One interface, one module per output format.

- :mod:`pipeline.writers.files`: the mirrored folder of ``hintset annotate``
  (``OUT/<rel dir>/<stem>.<map>.png``); the unit's result is one record per input.
- :mod:`pipeline.writers.webdataset`: one shard of ``hintset build`` (tar, index, then
  stats); the unit's result is the shard's stats.

The pipeline calls ``encode`` on CPU threads (any order, thread-safe, no I/O), ``write``
on one thread in input order, then ``close`` once (or ``abort`` if the unit failed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pipeline.result import Result
    from pipeline.sample_ref import SampleRef


@dataclass
class Sample:
    """One sample on its way through the stages: where it came from, its bytes, its result."""

    ref: SampleRef
    data: bytes = b""
    caption: str | None = None
    caption_source: str = ""  # "input", "generated:<model id>" (--caption) or "" (none)
    result: Result | None = None
    read_seconds: float = 0.0
    stored: dict[str, bytes] = field(default_factory=dict)  # what the writer adds: image, metadata


class Writer(Protocol):
    """What the pipeline needs from an output format."""

    def encode(self, sample: Sample) -> None:
        """Add the format's own encoded files to ``sample.stored`` (e.g. the JPEG image)."""

    def write(self, sample: Sample) -> None:
        """Store one processed sample (ok, failed or filtered), in input order."""

    def close(self) -> Any:
        """Finish the unit; return its summary (records or stats)."""

    def abort(self) -> None:
        """Drop what was written for an unfinished unit (temporary files)."""
