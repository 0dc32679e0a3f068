"""One build at a time per output: ``OUT/.hintset.lock`` names the holder (host, pid, heartbeat).

A second build is refused with one line. A lock is stale, and taken over, when its
process is gone (same host: the pid no longer runs) or its heartbeat is older than
``STALE_SECONDS`` (the holder refreshes it every ``HEARTBEAT_SECONDS``; for a holder
on another host, e.g. a build writing to object storage, this is the only rule).
Local folders create the lock with O_EXCL; object stores write it and read it back.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from pipeline.layout import LOCK
from pipeline.storage import Storage

HEARTBEAT_SECONDS = 20.0
STALE_SECONDS = 120.0


class LockHeld(RuntimeError):
    """Another live build writes this output (one-line message)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale(holder: dict, now: float | None = None) -> bool:
    """True when the holder of a lock is gone: dead pid on this host, or an old heartbeat."""
    now = time.time() if now is None else now
    silent = now - float(holder.get("heartbeat", 0)) > STALE_SECONDS  # also covers a reused pid
    if holder.get("host") == socket.gethostname():
        return silent or not _alive(int(holder.get("pid", 0)))
    return silent


class BuildLock:
    """Hold the output's lock while a build runs: ``with BuildLock(storage): ...``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                           "heartbeat": time.time()}).encode()  # fmt: skip

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.storage.read_bytes(LOCK))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # half-written or foreign: treated as stale below

    def acquire(self) -> None:
        """Take the lock, or raise LockHeld naming the live holder."""
        self.storage.makedirs("")
        for _ in range(3):
            if self._create():
                break
            holder = self._holder()
            if holder is None:
                continue  # released meanwhile: try again
            if holder and not stale(holder):
                since = time.strftime("%H:%M:%S", time.localtime(holder.get("heartbeat", 0)))
                raise LockHeld(f"{self.storage.root} is being built by pid {holder.get('pid')} "
                               f"on {holder.get('host')} (heartbeat {since}); wait for it or "
                               f"stop it first")  # fmt: skip
            self.storage.remove(LOCK)  # stale: take it over
        else:
            raise LockHeld(f"{self.storage.root}: could not take the build lock")
        self._thread = threading.Thread(target=self._beat, daemon=True, name="hintset-lock")
        self._thread.start()

    def _create(self) -> bool:
        if self.storage.local:
            try:
                fd = os.open(self.storage.path(LOCK), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(self._record())
            return True
        if self.storage.exists(LOCK):
            return False
        self.storage.write_bytes(LOCK, self._record())
        time.sleep(0.2)  # a racing writer's put lands in this window; the last one wins
        holder = self._holder()
        return bool(holder) and holder.get("token") == self.token

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            holder = self._holder()
            if holder and holder.get("token") == self.token:
                self.storage.write_bytes(LOCK, self._record())

    def release(self) -> None:
        """Drop the lock if it is still ours."""
        self._stop.set()
        holder = self._holder()
        if holder and holder.get("token") == self.token:
            self.storage.remove(LOCK)

    def __enter__(self) -> BuildLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
