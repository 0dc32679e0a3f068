"""Keep native libraries' log lines (MediaPipe, TensorFlow Lite, absl) off the terminal.

MediaPipe 0.10.21 logs through absl's C++ logger and TF Lite's logger straight to file
descriptor 2, partly from its own threads after a call returns; no environment variable
or Python logger silences that, and the lines break progress bars even with ``-q``.
:func:`filter_native_logs` routes descriptor 2 through a pipe whose reader drops exactly
those lines and passes everything else (Python tracebacks included) through unchanged.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading

#: environment variables glog / TensorFlow builds read before they load
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
#: lines dropped: absl/glog records ("W0000 00:00:..."), absl's pre-init notice, TF Lite INFO,
#: and mediapipe 1.x's LiteRT INFO/WARNING records ("INFO: [compiled_model.cc:1022] ...")
NOISE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|WARNING: Logging before InitGoogle\(\)"
    rb"|(?:INFO|WARNING): \[[\w.]+:\d+\] "
    rb"|INFO: Created TensorFlow Lite)"
)

_lock = threading.Lock()
_installed = False


def filter_native_logs() -> None:
    """Set quiet log levels and, once per process, filter noise lines out of descriptor 2."""
    global _installed
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    with _lock:
        if _installed:
            return
        _installed = True
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        reader = threading.Thread(target=_forward, args=(read_end, original), daemon=True)
        reader.start()

    def restore() -> None:  # at exit: give fd 2 back and let the reader drain the pipe
        sys.stderr.flush()
        os.dup2(original, 2)
        reader.join(timeout=2)

    atexit.register(restore)


def _forward(read_end: int, original: int) -> None:
    """Copy lines from the pipe to the real stderr, dropping native log noise."""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
            if kept:
                os.write(original, kept)
        if pending and not NOISE.match(pending):
            os.write(original, pending)
