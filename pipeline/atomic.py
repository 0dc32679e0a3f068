"""Atomic file writes: write a temporary file beside the target, fsync, then rename.

Temporary files are named ``.<target name>.hintset-XXXXXXXX.tmp`` so a later run
removes only its own leftovers, never a user's ``*.tmp``. Finished files get the
mode a plain ``open(path, "w")`` would give (0666 minus the umask): temporary files are
created that way (the kernel applies the umask), and files a library rewrote through its own
temporary file (safetensors' ``save_file`` makes them 0600) are given that mode again.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

TMP_MARK, TMP_SUFFIX = ".hintset-", ".tmp"
#: what :func:`temp_file` names look like (8 random characters; older runs used mkstemp's
#: [a-z0-9_], now hex digits)
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


_CREATE = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def temp_file(folder: str | os.PathLike | None, name: str) -> tuple[int, str]:
    """Open a new hintset temporary file for ``name`` in ``folder``: (fd, absolute path).

    Created with mode 0666 so the kernel applies the umask, as a plain ``open(path, "w")``
    does (no ``chmod`` after the fact, no reading the umask per file).
    """
    folder = os.path.abspath(tempfile.gettempdir() if folder is None else folder)
    for _ in range(100):  # a name taken by another writer: draw again (as mkstemp does)
        tmp = os.path.join(folder, f".{name}{TMP_MARK}{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            return os.open(tmp, _CREATE, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name} in {folder}")


def atomic_write(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half of it.

    The temporary file is written through the descriptor that created it; ``fsync=False``
    (many small files whose run can be redone) keeps the rename, which is what makes it atomic.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    try:
        fd, tmp = temp_file(folder or ".", name)
    except FileNotFoundError:  # the folder does not exist yet
        os.makedirs(folder, exist_ok=True)
        fd, tmp = temp_file(folder, name)
    try:
        with open(fd, "wb", closefd=True) as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
