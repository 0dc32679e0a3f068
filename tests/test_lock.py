"""The build lock: refused while its holder lives, taken over when it is stale."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from pipeline.layout import LOCK
from pipeline.lock import STALE_SECONDS, BuildLock, LockHeld, stale
from pipeline.storage import Storage


def test_stale_rules():
    now = time.time()
    here = socket.gethostname()
    assert not stale({"host": here, "pid": os.getpid(), "heartbeat": now}, now)
    assert stale({"host": here, "pid": 2**22 + 7, "heartbeat": now}, now)  # no such pid
    assert not stale({"host": "elsewhere", "pid": 1, "heartbeat": now - 5}, now)
    assert stale({"host": "elsewhere", "pid": 1, "heartbeat": now - STALE_SECONDS - 1}, now)


def test_live_lock_refuses_and_release_frees(tmp_path):
    storage = Storage(tmp_path / "ds")
    with BuildLock(storage):
        holder = json.loads((tmp_path / "ds" / LOCK).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(LockHeld, match="is being built by pid"):
            BuildLock(storage).acquire()
    assert not (tmp_path / "ds" / LOCK).exists()
    with BuildLock(storage):  # free again
        pass


def test_lock_of_a_silent_other_host_is_taken_over(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t",
                                             "heartbeat": time.time() - STALE_SECONDS - 5}))  # fmt: skip
    lock = BuildLock(Storage(tmp_path))
    lock.acquire()
    assert json.loads((tmp_path / LOCK).read_text())["token"] == lock.token
    lock.release()
