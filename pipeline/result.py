"""What the worker makes of one sample (:class:`Result`), shared by the worker, the caption step,
the stages and the writers; a module of its own so none of them imports another for it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from annotators.base import Annotation
from pipeline.decode import DecodeError


@dataclass
class Result:
    """Outcome for one sample: encoded files (suffix -> bytes) or a failure reason."""

    key: str
    status: str = "ok"  # "ok", "failed" or "filtered" (skipped on purpose, e.g. --min-size)
    error: str = ""
    image: np.ndarray | None = None  # the resized RGB image the maps align with
    original_size: tuple[int, int] = (0, 0)  # (width, height) after EXIF rotation
    size: tuple[int, int] = (0, 0)  # (width, height) of ``image``, kept after it is freed
    upscaled: bool = False  # the image was enlarged to reach the resolution
    files: dict[str, bytes] = field(default_factory=dict)  # "canny.png" -> PNG bytes
    annotations: list[Annotation] = field(default_factory=list)  # model output, not yet encoded
    stats: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def fail(self, stage: str, err: BaseException | str) -> Result:
        """Mark failed with a one-line reason prefixed by the stage."""
        text = str(err) if isinstance(err, DecodeError | str) else f"{type(err).__name__}: {err}"
        self.status, self.error = "failed", f"{stage}: {' '.join(text.split())}"
        self.files.clear()
        self.annotations.clear()
        return self

    def filter(self, reason: str) -> Result:
        """Mark skipped on purpose (not an error), with the reason."""
        self.status, self.error, self.image = "filtered", reason, None
        return self
