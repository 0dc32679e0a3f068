"""Samples per second of ``hintset build`` (canny + lines) with 1 and 2 workers, beside annotate.

Also the peak memory of each build worker at 500 and 2000 samples (it must not grow
with the dataset). Inputs are the shared photos hard-linked N times. Wall times
include interpreter and Ray start-up. Run: ``python benchmarks/build_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.annotate_throughput import make_inputs  # noqa: E402

ANNOTATORS = "canny,lines"


def timed(args: list[str]) -> float:
    """Wall seconds of one hintset command."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", *args, "-q"], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    return time.perf_counter() - start


def worker_ms_per_sample(out: Path, kind: str) -> float:
    """Time spent inside workers per sample (start-up and scheduling excluded), in ms."""
    if kind == "annotate":
        report = json.loads((out / "report.json").read_text())
        return sum(report["timings"]["mean_ms"].values())
    stats = [json.loads(p.read_text()) for p in (out / "stats").glob("*.json")]
    return 1000 * sum(s["seconds"] for s in stats) / sum(s["samples"] for s in stats)


def peak_worker_memory(folder: Path, out: Path, shard_size: int) -> float:
    """Largest peak RSS (MB) among the build's worker actors."""
    from pipeline.build import run_build
    from pipeline.worker import parse_specs

    peaks: list[float] = []
    run_build([str(folder)], str(out), parse_specs(ANNOTATORS), shard_size=shard_size,
              workers=2, on_shard=lambda s: peaks.append(s["peak_rss_mb"]))  # fmt: skip
    return max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--shard-size", type=int, default=250)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        make_inputs(folder, args.samples)
        for workers in (1, 2):
            seconds = timed(["annotate", str(folder), "-o", f"{tmp}/ann{workers}", "-a",
                             ANNOTATORS, "-w", str(workers)])  # fmt: skip
            per = worker_ms_per_sample(Path(f"{tmp}/ann{workers}"), "annotate")
            rows.append((f"annotate -w {workers}", per, args.samples / seconds))
        for workers in (1, 2):
            seconds = timed(["build", str(folder), "-o", f"{tmp}/build{workers}", "-a", ANNOTATORS,
                             "-w", str(workers), "--shard-size", str(args.shard_size)])  # fmt: skip
            per = worker_ms_per_sample(Path(f"{tmp}/build{workers}"), "build")
            rows.append((f"build -w {workers}", per, args.samples / seconds))
        memory = {}
        for count in (500, 2000):
            sub = Path(tmp) / f"mem{count}"
            sub.mkdir()
            for i, path in enumerate(sorted(folder.glob("*.jpg"))[:count]):
                os.link(path, sub / f"{i:05d}.jpg")
            memory[count] = peak_worker_memory(sub, Path(tmp) / f"memout{count}", 100)
    rate = {name: r for name, _, r in rows}
    print(f"{args.samples} samples, {ANNOTATORS}, short side 512, shards of {args.shard_size}, "
          f"{os.cpu_count()} cores\n")  # fmt: skip
    print("| run | samples/s (wall) | ms per sample in a worker |\n| --- | ---: | ---: |")
    for name, per, r in rows:
        print(f"| {name} | {r:.1f} | {per:.1f} |")
    print(f"\nbuild 2 workers / 1 worker: {rate['build -w 2'] / rate['build -w 1']:.2f}x")
    per = {name: p for name, p, _ in rows}
    for w in (1, 2):
        wall = 100 * (rate[f"annotate -w {w}"] / rate[f"build -w {w}"] - 1)
        inside = 100 * (per[f"build -w {w}"] / per[f"annotate -w {w}"] - 1)
        print(
            f"build vs annotate, {w} worker(s): {wall:+.1f}% wall time per sample "
            f"(start-up included), {inside:+.1f}% time per sample inside workers"
        )
    print(
        f"peak RSS per build worker: {memory[500]:.0f} MB at 500 samples, "
        f"{memory[2000]:.0f} MB at 2000 samples ({100 * (memory[2000] / memory[500] - 1):+.1f}%)"
    )


if __name__ == "__main__":
    main()
