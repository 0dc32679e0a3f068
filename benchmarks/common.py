"""Shared by the benchmark scripts: run a hintset command as a user would, and time it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the 20 real COCO photos kept in the repo for tests and benchmarks
PHOTOS = Path(os.environ.get("HINTSET_PHOTOS", ROOT / "tests" / "data" / "photos"))


def run_hintset(*args: str) -> float:
    """Run ``hintset ARGS`` from this checkout in a fresh interpreter; return wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", *args], check=True, env=env)
    return time.perf_counter() - start
