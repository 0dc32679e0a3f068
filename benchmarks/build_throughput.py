"""Samples per second of ``hintset build`` (canny + lines) with 1 and 2 workers, beside annotate.

Workers have one CPU each (the default), so 2 workers vs 1 is the scaling on two cores;
``build -w 1 --cpus-per-worker 2`` shows one worker overlapping its CPU work on both.

Each command runs on two input sizes (default 1000 and 3000 samples). Wall time is
``start-up + samples x per-sample cost``, so the difference between the two runs gives the
per-sample cost (tar, Parquet and JPEG writing included) without the fixed start-up
(interpreter, Ray, actors, shutdown), which is reported on its own. Also the peak memory
of each build worker at 500 and 2000 samples (it must not grow with the dataset). Inputs
are the test photos (tests/data/photos) hard-linked N times. Each command runs ``--repeats`` times and the
fastest run counts (as ``timeit`` does): on a shared machine noise only ever adds time.
Run: ``python benchmarks/build_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.annotate_throughput import make_inputs  # noqa: E402
from benchmarks.common import run_hintset  # noqa: E402

ANNOTATORS = "canny,lines"


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


def subset(folder: Path, count: int, name: str) -> Path:
    """A folder with the first ``count`` inputs of ``folder`` (hard links)."""
    sub = folder.parent / name
    sub.mkdir()
    for i, path in enumerate(sorted(folder.glob("*.jpg"))[:count]):
        os.link(path, sub / f"{i:05d}.jpg")
    return sub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(1000, 3000), metavar=("N1", "N2"))
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per command; the fastest counts"
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=("annotate", "build"),
        choices=("annotate", "build"),
        help="commands to time (build alone for the 1 vs 2 worker scaling)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the worker memory runs")
    args = parser.parse_args()
    small, large = args.sizes
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        make_inputs(folder, large)
        inputs = {small: subset(folder, small, "small"), large: folder}
        runs_to_time = [(kind, workers, 1) for kind in args.kinds for workers in (1, 2)]
        runs_to_time += [("build", 1, 2)] if "build" in args.kinds else []
        for kind, workers, cpus in runs_to_time:
            wall, inside = {}, []
            for n, src in inputs.items():
                extra = ["--shard-size", str(args.shard_size)] if kind == "build" else []
                extra += ["--cpus-per-worker", str(cpus)] if cpus > 1 else []
                runs = []
                for repeat in range(args.repeats):
                    out = Path(tmp) / f"{kind}{workers}-{n}-{repeat}"
                    runs.append(run_hintset(kind, str(src), "-o", str(out), "-a", ANNOTATORS,
                                            "-w", str(workers), *extra, "-q"))  # fmt: skip
                    if n == large:
                        inside.append(worker_ms_per_sample(out, kind))
                    shutil.rmtree(out)
                wall[n] = min(runs)
            inside = min(inside)
            per = (wall[large] - wall[small]) / (large - small)
            rows[(kind, workers, cpus)] = {"rate": large / wall[large], "per_ms": 1000 * per,
                                           "startup": wall[large] - per * large,
                                           "inside_ms": inside}  # fmt: skip
        memory = {} if args.no_memory else {
            count: peak_worker_memory(subset(folder, count, f"mem{count}"),
                                      Path(tmp) / f"memout{count}", 100)
            for count in (500, 2000)}  # fmt: skip
    print(f"{small} and {large} samples, {ANNOTATORS}, short side 512, shards of "
          f"{args.shard_size}, fastest of {args.repeats} runs, {os.cpu_count()} cores\n")  # fmt: skip
    print(f"| run | samples/s (wall, {large}) | ms per sample (wall, marginal) | start-up s | "
          "ms per sample in a worker |\n| --- | ---: | ---: | ---: | ---: |")  # fmt: skip
    for (kind, workers, cpus), r in rows.items():
        name = f"{kind} -w {workers}" + (f" --cpus-per-worker {cpus}" if cpus > 1 else "")
        print(f"| {name} | {r['rate']:.1f} | {r['per_ms']:.1f} | "
              f"{r['startup']:.1f} | {r['inside_ms']:.1f} |")  # fmt: skip
    for kind in args.kinds:
        one, two = rows[(kind, 1, 1)], rows[(kind, 2, 1)]
        print(f"\n{kind} 2 workers / 1 worker: {two['rate'] / one['rate']:.2f}x wall at {large} "
              f"samples, {one['per_ms'] / two['per_ms']:.2f}x per sample")  # fmt: skip
    for w in (1, 2) if len(args.kinds) == 2 else ():
        a, b = rows[("annotate", w, 1)], rows[("build", w, 1)]
        print(f"build vs annotate, {w} worker(s): {100 * (b['per_ms'] / a['per_ms'] - 1):+.1f}% "
              f"per sample (wall, marginal); {100 * (a['rate'] / b['rate'] - 1):+.1f}% wall at "
              f"{large} samples with start-up; {100 * (b['inside_ms'] / a['inside_ms'] - 1):+.1f}% "
              "inside workers")  # fmt: skip
    if not memory:
        return
    print(
        f"peak RSS per build worker: {memory[500]:.0f} MB at 500 samples, "
        f"{memory[2000]:.0f} MB at 2000 samples ({100 * (memory[2000] / memory[500] - 1):+.1f}%)"
    )


if __name__ == "__main__":
    main()
