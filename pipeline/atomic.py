"""Atomic file writes: write a temporary file beside the target, fsync, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temporary files left by a killed run below ``folder``; return how many."""
    count = 0
    for tmp in Path(folder).rglob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count
