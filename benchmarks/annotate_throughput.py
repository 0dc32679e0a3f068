"""Images per second of ``hintset annotate --annotators canny`` with 1 and 2 workers.

Beside it, the floor: a plain in-process loop (cv2.imread, short-side resize,
cv2.Canny, cv2.imwrite of the PNG with OpenCV's defaults) over the same files. The repo's
test photos are hard-linked N times into a temporary folder. Wall time of the command
includes interpreter start-up and worker spawn; "steady" is the images/s the report
measures from plan to finish. Every 50th map of hintset is checked pixel-identical to the
loop's. ``--runs 5`` repeats plain loop and commands, printing each run's ratios and the
median; ``--ceiling`` adds the plain loop split over 2 processes (what the cores give at
the moment, the real limit for 2 workers). Run:
``python benchmarks/annotate_throughput.py [--images 1500] [--runs 5] [--workers 2] [--ceiling]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import PHOTOS, run_hintset  # noqa: E402


def make_inputs(folder: Path, count: int) -> list[Path]:
    """``count`` hard links to the test photos (distinct paths, no extra disk)."""
    photos = sorted(PHOTOS.glob("*.jpg"))
    paths = []
    for i in range(count):
        target = folder / f"{i:05d}.jpg"
        os.link(photos[i % len(photos)], target)
        paths.append(target)
    return paths


def plain_loop(paths: list[Path], out: Path, resolution: int) -> float:
    """Seconds for imread -> resize -> Canny -> imwrite PNG in one process (the floor)."""
    cv2.setNumThreads(1)
    out.mkdir(parents=True)
    start = time.perf_counter()
    for path in paths:
        bgr = cv2.imread(str(path))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        scale = resolution / min(h, w)
        size = (round(w * scale), round(h * scale))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        edges = cv2.Canny(rgb, 100, 200)
        cv2.imwrite(str(out / f"{path.stem}.canny.png"), edges)
    return time.perf_counter() - start


def same_maps(plain: Path, out: Path) -> None:
    """Every 50th of hintset's maps equals the plain loop's, pixel for pixel."""
    for path in sorted(plain.glob("*.png"))[::50]:
        want = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        got = cv2.imread(str(out / path.name), cv2.IMREAD_UNCHANGED)
        assert got is not None and got.shape == want.shape and (got == want).all(), path.name


def hintset_annotate(folder: Path, out: Path, workers: int, resolution: int) -> tuple[float, float]:
    """(wall seconds of the whole command, steady images/s from its report)."""
    wall = run_hintset("annotate", str(folder), "-o", str(out), "-a", "canny",
                       "-r", str(resolution), "-w", str(workers), "-q")  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["done"] == len(list(folder.glob("*.jpg")))
    return wall, report["timings"]["images_per_second"]


def two_loops(paths: list[Path], out: Path, resolution: int) -> float:
    """Seconds for the plain loop over half the files in each of two processes (the ceiling)."""
    import multiprocessing as mp

    halves = [(paths[: len(paths) // 2], out / "a"), (paths[len(paths) // 2 :], out / "b")]
    with mp.get_context("fork").Pool(2) as pool:
        start = time.perf_counter()
        pool.starmap(plain_loop, [(part, folder, resolution) for part, folder in halves])
        return time.perf_counter() - start


def one_run(folder: Path, paths: list[Path], tmp: Path, workers: list[int], resolution: int,
            ceiling: bool = False) -> list[tuple[str, float, float]]:  # fmt: skip
    """(name, img/s wall, img/s steady) for the plain loop and each worker count."""
    plain_out = tmp / "plain"
    plain = len(paths) / plain_loop(paths, plain_out, resolution)
    rows = [("plain loop (cv2, 1 process)", plain, plain)]
    if ceiling:
        both = len(paths) / two_loops(paths, tmp / "two", resolution)
        rows.append(("plain loop, 2 processes", both, both))
    for count in workers:
        out = tmp / f"out{count}"
        wall, steady = hintset_annotate(folder, out, count, resolution)
        same_maps(plain_out, out)
        rows.append((f"hintset annotate -w {count}", len(paths) / wall, steady))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1500, help="number of inputs (>= 500)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--runs", type=int, default=1, help="repetitions (each its own plain loop)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, comma separated")
    parser.add_argument("--ceiling", action="store_true",
                        help="also the plain loop in 2 processes (what 2 cores give right now)")  # fmt: skip
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        paths = make_inputs(folder, args.images)
        for number in range(args.runs):
            run_dir = Path(tmp) / f"run{number}"
            run_dir.mkdir()
            runs.append(one_run(folder, paths, run_dir, workers, args.resolution, args.ceiling))
    print(f"{args.images} images, canny, short side {args.resolution}, {os.cpu_count()} cores\n")
    print(f"| {'run':<30} | {'img/s (wall)':>12} | {'img/s (steady)':>14} | {'x plain':>7} |")
    print(f"|{'-' * 32}|{'-' * 14}:|{'-' * 16}:|{'-' * 9}:|")
    for rows in runs:
        plain = rows[0][1]
        for name, wall_rate, steady in rows:
            print(
                f"| {name:<30} | {wall_rate:>12.1f} | {steady:>14.1f} | {wall_rate / plain:>7.2f} |"
            )
    print()
    names = [name for name, _, _ in runs[0]]
    for count in workers:
        index = names.index(f"hintset annotate -w {count}")
        ratios = [rows[index][1] / rows[0][1] for rows in runs]
        print(f"{count} worker(s) vs plain loop (wall), per run: "
              f"{', '.join(f'{r:.2f}x' for r in ratios)}; median {statistics.median(ratios):.2f}x")  # fmt: skip
    if args.ceiling:
        ratios = [rows[1][1] / rows[0][1] for rows in runs]
        print(f"plain loop in 2 processes vs 1, per run: {', '.join(f'{r:.2f}x' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f}x")  # fmt: skip
        for count in workers:
            index = names.index(f"hintset annotate -w {count}")
            share = [rows[index][1] / rows[1][1] for rows in runs]
            print(f"{count} worker(s) vs plain loop in 2 processes, per run: "
                  f"{', '.join(f'{r:.2f}' for r in share)}; median {statistics.median(share):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
