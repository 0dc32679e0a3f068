"""Speed of ``hintset evaluate``'s scoring on CPU: images per second re-annotated and scored, per
annotator (the generation part is the GPU's and is not timed here).

Each annotator's maps of real photos are the references; the photos, JPEG re-encoded, are the
"generated" images. Timed: the judge (the dataset's annotator, batch of ``--batch``) plus the
metric, and the metric alone. Learned annotators use random weights at the published sizes
(``tests.weights``), which cost the same as the real ones.

    python benchmarks/evaluate_speed.py                      # all below, 512 px, 8 images
    python benchmarks/evaluate_speed.py --only canny,depth --size 128 --tiny   # smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.learned_speed import photos  # noqa: E402

#: (annotator, params, weight writers it needs)
RUNS = [
    ("canny", {}, []),
    ("lines", {}, []),
    ("hed", {}, ["hed"]),
    ("scribble", {}, ["hed"]),
    ("softedge", {}, ["pidinet"]),
    ("lineart", {}, ["lineart"]),
    ("depth", {"model": "dpt-hybrid"}, ["depth"]),
    ("normal", {"backend": "bae"}, ["bae"]),
    ("seg", {"model": "segformer-b0"}, ["seg"]),
    ("pose", {"backend": "mediapipe"}, []),
]


def time_one(name: str, params: dict, images: list[np.ndarray], batch: int) -> dict:
    """Seconds per image: judge + metric, and metric alone."""
    from evaluation.judge import Judge
    from evaluation.score import score
    from pipeline.decode import decode_image
    from pipeline.encode import encode_jpeg

    manifest = {"config": {"annotators": [{"name": name, "params": params}]}, "annotators": []}
    judge = Judge(manifest, name)
    keys = [f"k{i}" for i in range(len(images))]
    sizes = [img.shape[:2] for img in images]
    refs = judge.annotate(images, keys, sizes)
    generated = [decode_image(encode_jpeg(img)) for img in images]
    judge.annotate(generated[:batch], keys[:batch], sizes[:batch])  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    preds = []
    for i in range(0, len(images), batch):
        preds += judge.annotate(generated[i : i + batch], keys[i : i + batch], sizes[i : i + batch])
    annotate_s = time.perf_counter() - start
    start = time.perf_counter()
    values = [score(name, ref, pred) for ref, pred in zip(refs, preds, strict=True)]
    metric_s = time.perf_counter() - start
    cpu_s = time.process_time() - cpu
    first = next(iter(values[0]), "")
    return {"total": (annotate_s + metric_s) / len(images), "metric": metric_s / len(images),
            "cpu": cpu_s / len(images),
            "example": f"{first} {np.mean([v[first] for v in values]):.3f}" if first else "-"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square image side (default 512)")
    parser.add_argument("--count", type=int, default=8, help="images per annotator")
    parser.add_argument("--batch", type=int, default=8, help="judge batch size")
    parser.add_argument("--only", default="", help="comma-separated annotator names")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (smoke test, not speed)")
    args = parser.parse_args()

    import os

    import torch

    from tests.weights import WRITERS

    only = {n.strip() for n in args.only.split(",") if n.strip()}
    runs = [r for r in RUNS if not only or r[0] in only]
    images = photos(args.size, args.count)
    with tempfile.TemporaryDirectory(prefix="hintset-eval-bench-") as weights:
        os.environ["HINTSET_WEIGHTS_DIR"] = weights
        for network in dict.fromkeys(n for _, _, needs in runs for n in needs):
            kwargs = {"models": ["dpt-hybrid"]} if network == "depth" else {}
            kwargs = {"models": ["segformer-b0"]} if network == "seg" else kwargs
            WRITERS[network](Path(weights), tiny=args.tiny, **kwargs)
        print(f"\nCPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{args.count} photos at {args.size}x{args.size}, JPEG re-encoded as the generated "
              f"images, judge batch {args.batch}, {'TINY' if args.tiny else 'real-size'} "
              "random weights\n")  # fmt: skip
        print("| annotator | params | images/s scored | CPU s/img (all threads) | metric alone "
              "ms/img | metric (own image) |")  # fmt: skip
        print("|---|---|---:|---:|---:|---|")
        for name, params, _ in runs:
            label = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
            try:
                r = time_one(name, params, images, args.batch)
            except Exception as err:  # noqa: BLE001 - report and go on with the others
                print(f"| {name} | {label} | error: {' '.join(str(err).split())[:100]} | | | |")
                continue
            print(f"| {name} | {label} | {1 / r['total']:.2f} | {r['cpu']:.2f} | "
                  f"{1e3 * r['metric']:.1f} | "
                  f"{r['example']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
