"""Planning cost against input size: time to the first finished shard and the driver's peak RSS.

Builds (``--max-shards 1``, shard size 1000, canny at 64 px, one worker) over Parquet
lists of N image paths (all pointing at a few real photos) and over 1,000 input tars.
Flat numbers across N show the driver's cost grows with input files, not samples.

    python -m benchmarks.plan_scale --rows 100000 1000000 10000000 --tars 1000
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.common import PHOTOS, ROOT


def write_list(path: Path, rows: int, names: list[str]) -> None:
    """A Parquet list of ``rows`` relative image paths, written in 1M-row groups (memory flat)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = pa.array(names)
    schema = pa.schema([("path", pa.string()), ("caption", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, rows, 1_000_000):
            count = min(1_000_000, rows - first)
            paths = pool.take(pa.array(np.arange(first, first + count) % len(names)))
            captions = pa.array(["a photo"] * count)
            writer.write_table(pa.table({"path": paths, "caption": captions}, schema=schema))


def write_tars(folder: Path, count: int, photos: list[Path]) -> None:
    """``count`` small WebDataset tars (img2dataset layout), 2 samples each."""
    folder.mkdir()
    for t in range(count):
        with tarfile.open(folder / f"{t:05d}.tar", "w") as tar:
            for i, photo in enumerate(photos[:2]):
                for ext, data in (("jpg", photo.read_bytes()), ("txt", b"a photo")):
                    info = tarfile.TarInfo(f"{t:05d}{i:04d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a running process, in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def first_shard(inputs: list[str], out: Path) -> tuple[float, float, float]:
    """(seconds to the first stats file, driver peak RSS MB, total seconds) of a 1-shard build."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pipeline", "build", *inputs, "-o", str(out), "-a", "canny",
           "--resolution", "64", "--shard-size", "1000", "--workers", "1", "--max-shards", "1",
           "-q"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    first, peak = 0.0, 0.0
    while proc.poll() is None:
        peak = max(peak, peak_rss_mb(proc.pid))
        if not first and any((out / "stats").glob("*.json")):
            first = time.perf_counter() - start
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"build failed ({proc.returncode}): {' '.join(cmd)}")
    return first or time.perf_counter() - start, peak, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--tars", type=int, default=1000)
    args = parser.parse_args()
    photos = sorted(PHOTOS.glob("*.jpg"))[:3]
    print("input                      | first shard done (s) | driver peak RSS (MB) | total (s)")
    print("---------------------------|----------------------|---------------------|----------")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        for photo in photos:
            shutil.copy(photo, tmp / "photos" / photo.name)
        names = [f"photos/{p.name}" for p in photos]
        for rows in args.rows:
            write_list(tmp / f"list{rows}.parquet", rows, names)
            first, peak, total = first_shard([str(tmp / f"list{rows}.parquet")], tmp / f"ds{rows}")
            print(f"Parquet list, {rows:>10,} rows | {first:20.1f} | {peak:19.0f} | {total:8.1f}",
                  flush=True)  # fmt: skip
            (tmp / f"list{rows}.parquet").unlink()
            shutil.rmtree(tmp / f"ds{rows}")
        if args.tars:
            write_tars(tmp / "tars", args.tars, photos)
            first, peak, total = first_shard([str(tmp / "tars" / "*.tar")], tmp / "dstars")
            print(f"{args.tars:,} input tars{'':>12} | {first:20.1f} | {peak:19.0f} | {total:8.1f}")


if __name__ == "__main__":
    main()
