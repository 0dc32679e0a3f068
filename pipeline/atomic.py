"""Atomic file writes: write a temporary file beside the target, fsync, then rename.

Temporary files are named ``.<target name>.hintset-XXXXXXXX.tmp`` so a later run
removes only its own leftovers, never a user's ``*.tmp``. Finished files get the
mode a plain ``open(path, "w")`` would give (0666 minus the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import os
import re
import tempfile
from functools import cache
from pathlib import Path

TMP_MARK, TMP_SUFFIX = ".hintset-", ".tmp"
#: what :func:`temp_file` names look like (mkstemp adds 8 characters of [a-z0-9_])
TMP_NAME = re.compile(r"^\..+\.hintset-[a-z0-9_]{8}\.tmp$")


@cache
def file_mode() -> int:
    """The mode a normal file write gets: 0o666 without the process umask bits."""
    try:  # Linux: read the umask without changing it (os.umask is not thread-safe)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temp_file(folder: str | os.PathLike | None, name: str) -> tuple[int, str]:
    """Open a new hintset temporary file for ``name`` in ``folder``: (fd, path), normal file mode."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}{TMP_MARK}", suffix=TMP_SUFFIX)
    os.fchmod(fd, file_mode())
    return fd, tmp


def atomic_write(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, path.name)
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


def is_temp_name(name: str) -> bool:
    """True for names :func:`temp_file` makes (and only those)."""
    return bool(TMP_NAME.match(name))


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete hintset temporary files left by a killed run below ``folder``; return how many."""
    count = 0
    for tmp in Path(folder).rglob(f".*{TMP_MARK}*{TMP_SUFFIX}"):
        if is_temp_name(tmp.name) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            count += 1
    return count
