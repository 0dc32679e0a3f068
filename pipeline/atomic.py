"""Atomic file writes: write a temporary file beside the target, fsync, then rename.

Temporary files are named ``.<target name>.hintset-XXXXXXXX.tmp`` so a later run
removes only its own leftovers, never a user's ``*.tmp``. Finished files get the
mode a plain ``open(path, "w")`` would give (0666 minus the umask), not the 0600 of mkstemp
or of libraries that write through their own temporary file (safetensors' ``save_file``).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

TMP_MARK, TMP_SUFFIX = ".hintset-", ".tmp"
#: what :func:`temp_file` names look like (mkstemp adds 8 characters of [a-z0-9_])
TMP_NAME = re.compile(r"^\..+\.hintset-[a-z0-9_]{8}\.tmp$")


def file_mode() -> int:
    """The mode a normal file write gets: 0o666 without the process umask bits (read each time:
    the umask can change while a process runs)."""
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

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_save(path, write, fsync=fsync)


def atomic_save(
    path: str | os.PathLike, write: Callable[[str], None], *, fsync: bool = True
) -> None:
    """Let ``write(temp path)`` (e.g. safetensors' ``save_file``) make ``path`` atomically; the
    result gets the normal file mode whatever mode the writer gave it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, path.name)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def normal_modes(folder: str | os.PathLike) -> None:
    """Give every file below ``folder`` the normal file mode: for folders a library wrote
    (diffusers' ``save_pretrained`` writes its safetensors 0600) before they are published."""
    mode = file_mode()
    for item in Path(folder).rglob("*"):
        if item.is_file() and not item.is_symlink():
            os.chmod(item, mode)


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
