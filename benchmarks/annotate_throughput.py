"""Images per second of ``hintset annotate --annotators canny`` with 1 and 2 workers.

Beside it, the floor: a plain in-process loop (cv2.imread, short-side resize,
cv2.Canny, PNG encode) over the same files. The repo's test photos are hard-linked N
times into a temporary folder. Wall time of the command includes interpreter
start-up and worker spawn; "steady" is the images/s the report measures from plan
to finish. Run: ``python benchmarks/annotate_throughput.py [--images 2000]``.
"""

from __future__ import annotations

import argparse
import json
import os
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


def plain_loop(paths: list[Path], resolution: int) -> float:
    """Seconds for decode -> resize -> Canny -> PNG encode in one process (the floor)."""
    cv2.setNumThreads(1)
    start = time.perf_counter()
    for path in paths:
        bgr = cv2.imread(str(path))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        scale = resolution / min(h, w)
        size = (round(w * scale), round(h * scale))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        edges = cv2.Canny(rgb, 100, 200)
        cv2.imencode(".png", edges)
    return time.perf_counter() - start


def hintset_annotate(folder: Path, out: Path, workers: int, resolution: int) -> tuple[float, float]:
    """(wall seconds of the whole command, steady images/s from its report)."""
    wall = run_hintset("annotate", str(folder), "-o", str(out), "-a", "canny",
                       "-r", str(resolution), "-w", str(workers), "-q")  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["done"] == len(list(folder.glob("*.jpg")))
    return wall, report["timings"]["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="number of inputs (>= 500)")
    parser.add_argument("--resolution", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        paths = make_inputs(folder, args.images)
        plain = args.images / plain_loop(paths, args.resolution)
        rows = [("plain loop (cv2, 1 process)", plain, plain, 1.0)]
        for workers in (1, 2):
            wall, steady = hintset_annotate(folder, Path(tmp) / f"out{workers}", workers,
                                            args.resolution)  # fmt: skip
            rows.append((f"hintset annotate -w {workers}", args.images / wall, steady, 0.0))
    print(f"{args.images} images, canny, short side {args.resolution}, {os.cpu_count()} cores\n")
    print(f"| {'run':<30} | {'img/s (wall)':>12} | {'img/s (steady)':>14} | {'x plain':>7} |")
    print(f"|{'-' * 32}|{'-' * 14}:|{'-' * 16}:|{'-' * 9}:|")
    for name, wall_rate, steady, _ in rows:
        print(f"| {name:<30} | {wall_rate:>12.1f} | {steady:>14.1f} | {wall_rate / plain:>7.2f} |")
    one = rows[1][1]
    print(f"\nper-image overhead of 1 worker vs plain loop: {100 * (plain / one - 1):.0f}%")
    print(f"2 workers vs plain loop (wall): {rows[2][1] / plain:.2f}x")


if __name__ == "__main__":
    main()
