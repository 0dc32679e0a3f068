"""Speed of every learned annotator at its real size: ms per image at 512x512 on CPU, batch 1 vs 8.

Random weights at the published sizes cost the same as the real ones, so no download is
needed: the writers in ``tests.weights.WRITERS`` (all, or those named by ``--networks``) fill
a temporary weights folder, then each registered annotator that needs weights (each of its
``benchmark_variants()``) runs on real photos cropped to 512x512.

    flock /tmp/hintset-heavy.lock python benchmarks/learned_speed.py
    python benchmarks/learned_speed.py --only depth,seg --tiny --size 128   # quick smoke run
    python benchmarks/learned_speed.py --only lineart,lineart_anime,softedge \
        --networks lineart,lineart_anime,pidinet   # write only these networks' weights
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotators import create, get, list_annotators  # noqa: E402
from benchmarks.common import PHOTOS  # noqa: E402
from pipeline.decode import load_image, resize_short_side  # noqa: E402
from tests.weights import WRITERS  # noqa: E402


def learned_variants(only: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """(annotator, params) for each registered annotator with weights, per benchmark variant."""
    runs = []
    for name in list_annotators():
        cls = get(name)
        variants = getattr(cls, "benchmark_variants", None)
        if (only and name not in only) or not (variants or cls.needs_weights()):
            continue
        runs += [(name, dict(v)) for v in (variants() if variants else [{}])]
    return runs


def photos(size: int, count: int) -> list[np.ndarray]:
    """``count`` real photos, short side resized to ``size`` and centre-cropped square."""
    paths = sorted(PHOTOS.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no photos in {PHOTOS} (set HINTSET_PHOTOS)")
    out = []
    for path in (paths * count)[:count]:
        img = resize_short_side(load_image(path), size)
        top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
        out.append(np.ascontiguousarray(img[top : top + size, left : left + size]))
    return out


def _per_image(annotator: Any, images: list[np.ndarray], batch: int, repeat: int) -> float:
    """Best (least disturbed) seconds per image over ``repeat`` passes in batches of ``batch``."""
    annotator.annotate_batch(images[:batch])  # warm-up at this batch shape (oneDNN kernels)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for first in range(0, len(images), batch):
            annotator.annotate_batch(images[first : first + batch])
        best = min(best, (time.perf_counter() - start) / len(images))
    return best


def weights_size(identity: list[dict], weights: Path) -> float:
    """Size in MB of the loaded weights files (found by path, or by name in the weights folder)."""
    total = 0
    for entry in identity:
        path = Path(entry["path"]) if entry.get("path") else weights / str(entry.get("file"))
        if path.is_file():
            total += path.stat().st_size
    return total / 1e6


def time_run(
    name: str, params: dict, images: list[np.ndarray], batch: int, repeat: int, weights: Path
) -> dict:
    """Load once, then time batch 1 and batch ``batch`` over the same images."""
    annotator = create(name, device="cpu", weights_dir=str(weights), **params)
    start = time.perf_counter()
    annotator.load()
    load_s = time.perf_counter() - start
    single = _per_image(annotator, images, 1, repeat)
    batched = _per_image(annotator, images, batch, repeat)
    identity = annotator.weights_identity()
    return {
        "load_s": load_s,
        "single_ms": 1e3 * single,
        "batch_ms": 1e3 * batched,
        "files": ", ".join(str(w.get("file", "?")) for w in identity),
        "mb": weights_size(identity, weights),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square image side (default 512)")
    parser.add_argument("--batch", type=int, default=8, help="batch size compared with 1")
    parser.add_argument("--only", default="", help="comma-separated annotator names")
    parser.add_argument("--repeat", type=int, default=2, help="passes per setting; best kept")
    parser.add_argument(
        "--networks",
        default="",
        help=f"comma-separated weight writers to run (default all: {','.join(WRITERS)})",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny configs (smoke test, not speed)")
    parser.add_argument("--weights-dir", help="reuse/keep random weights here (default: temp)")
    args = parser.parse_args()

    import torch

    only = {n.strip() for n in args.only.split(",") if n.strip()}
    runs = learned_variants(only)
    images = photos(args.size, args.batch)
    with tempfile.TemporaryDirectory(prefix="hintset-bench-") as tmp:
        weights = Path(args.weights_dir or tmp)
        start = time.perf_counter()
        networks = [n.strip() for n in args.networks.split(",") if n.strip()] or list(WRITERS)
        for network in networks:
            WRITERS[network](weights, tiny=args.tiny)
        print(f"random weights written to {weights} in {time.perf_counter() - start:.1f}s")
        print(
            f"\nCPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{args.size}x{args.size} photos ({len(images)}), best of {args.repeat} passes, "
            f"{'TINY configs' if args.tiny else 'real sizes'}\n"
        )
        header = "| annotator | params | weights | MB | load s | batch 1 ms/img | batch {} ms/img |"
        print(header.format(args.batch))
        print("|---|---|---|---:|---:|---:|---:|")
        for name, params in runs:
            label = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
            try:
                r = time_run(name, params, images, args.batch, args.repeat, weights)
            except Exception as err:  # noqa: BLE001 - report and go on with the others
                print(f"| {name} | {label} | error: {' '.join(str(err).split())[:120]} | | | | |")
                continue
            print(
                f"| {name} | {label} | {r['files']} | {r['mb']:.0f} | {r['load_s']:.1f} "
                f"| {r['single_ms']:.0f} | {r['batch_ms']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
