"""Speed of every learned annotator at its real size: ms per image at 512x512 on CPU, batch 1 vs
8, and against controlnet_aux 0.0.10 at hintset's default batch size.

Random weights at the published sizes cost the same as the real ones, so no download is
needed: the writers in ``tests.weights.WRITERS`` (all, or those named by ``--networks``) fill
a temporary weights folder, then each registered annotator that needs weights (each of its
``benchmark_variants()``) runs on real photos cropped to 512x512. The batch-8 column runs
network batches of 8 (``batch_size=8``); the default column is what ``--batch-size`` auto and
the annotator's auto ``batch_size`` give on CPU (1).

``--reference PYTHON`` also times controlnet_aux's detector on the same photos and weights in
that interpreter (a venv with controlnet_aux 0.0.10 and easy-dwpose, built as
``benchmarks/reference_check.py`` describes), with the same torch threads:

    flock /tmp/bench.lock python benchmarks/learned_speed.py --reference /tmp/refvenv/bin/python
    python benchmarks/learned_speed.py --only depth,seg --tiny --size 128   # quick smoke run
    python benchmarks/learned_speed.py --only lineart,lineart_anime,softedge \
        --networks lineart,lineart_anime,pidinet   # write only these networks' weights
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotators import create, get, list_annotators  # noqa: E402
from annotators.learned import auto_batch_size  # noqa: E402
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


def _one_pass(annotator: Any, images: list[np.ndarray], batch: int) -> float:
    """Seconds per image of one pass over ``images`` in calls of ``batch``."""
    start = time.perf_counter()
    for first in range(0, len(images), batch):
        annotator.annotate_batch(images[first : first + batch])
    return (time.perf_counter() - start) / len(images)


def _per_image(annotator: Any, images: list[np.ndarray], batch: int, repeat: int) -> float:
    """Best (least disturbed) seconds per image over ``repeat`` passes in batches of ``batch``."""
    annotator.annotate_batch(images[:batch])  # warm-up at this batch shape (oneDNN kernels)
    return min(_one_pass(annotator, images, batch) for _ in range(repeat))


def weights_size(identity: list[dict], weights: Path) -> float:
    """Size in MB of the loaded weights files (found by path, or by name in the weights folder)."""
    total = 0
    for entry in identity:
        path = Path(entry["path"]) if entry.get("path") else weights / str(entry.get("file"))
        if path.is_file():
            total += path.stat().st_size
    return total / 1e6


def time_run(name: str, params: dict, images: list[np.ndarray], batch: int, repeat: int,
             weights: Path, reference: Any = None) -> dict:  # fmt: skip
    """Load once, then time the default batch size (each pass right after a pass of
    ``reference``, so both see the same machine load) and network batches of ``batch``."""
    annotator = create(name, device="cpu", weights_dir=str(weights), **params)
    start = time.perf_counter()
    annotator.load()
    load_s = time.perf_counter() - start
    default = auto_batch_size([annotator], gpu=False)
    annotator.annotate_batch(images[:default])  # warm-up
    ref_s, default_s = [], []
    for _ in range(repeat):
        if reference is not None:
            ref_s.append(reference(label_of(name, params)))
        default_s.append(_one_pass(annotator, images, default))
    single = min(default_s) if default == 1 else _per_image(annotator, images, 1, repeat)
    batched = create(name, device="cpu", weights_dir=str(weights), batch_size=batch, **params)
    identity = annotator.weights_identity()
    return {
        "load_s": load_s,
        "single_ms": 1e3 * single,
        "batch_ms": 1e3 * _per_image(batched, images, batch, repeat),
        "default": default,
        "default_ms": 1e3 * min(default_s),
        "reference_ms": 1e3 * min(ref_s) if ref_s and None not in ref_s else None,
        "files": ", ".join(str(w.get("file", "?")) for w in identity),
        "mb": weights_size(identity, weights),
    }


def label_of(name: str, params: dict) -> str:
    """How a run is named in the table and between this script and its reference process."""
    return name + "".join(f" {k}={v}" for k, v in params.items())


def reference_detector(name: str, params: dict, weights: Path) -> Any:
    """controlnet_aux's detector for one run, as one-image callable (None: no reference)."""
    from benchmarks import reference_check as ref

    res = {"detect_resolution": 512, "image_resolution": 512, "output_type": "np"}
    folder = str(weights)
    backend = params.get("backend", "")
    if name in ("hed", "scribble"):
        from controlnet_aux.hed import HEDdetector

        hed = HEDdetector.from_pretrained(folder)
        return lambda im: hed(im, scribble=name == "scribble", **res)
    if name == "lines" and backend == "mlsd":
        from controlnet_aux.mlsd import MLSDdetector

        mlsd = MLSDdetector.from_pretrained(folder, filename="mlsd_large_512_fp32.pth")
        return lambda im: mlsd(im, 0.1, 0.1, **res)
    if name == "normal" and backend == "bae":
        from controlnet_aux.normalbae import NormalBaeDetector

        bae = NormalBaeDetector.from_pretrained(folder)
        return lambda im: bae(im, **res)
    if name == "pose" and backend == "openpose":
        from controlnet_aux.open_pose import Body, Hand, OpenposeDetector

        hand = Hand(f"{folder}/hand_pose_model.pth")
        openpose = OpenposeDetector(Body(f"{folder}/body_pose_model.pth"), hand)
        return lambda im: openpose(im, include_hand=bool(params.get("hands")), **res)
    if name == "pose" and backend == "dwpose":
        dwpose = ref.dwpose_reference(weights)
        return lambda im: dwpose(im, **res)
    if name == "lineart":
        from controlnet_aux.lineart import LineartDetector

        lineart = LineartDetector.from_pretrained(folder)
        return lambda im: lineart(im, coarse=bool(params.get("coarse")), **res)
    if name == "lineart_anime":
        from controlnet_aux.lineart_anime import LineartAnimeDetector

        anime = LineartAnimeDetector.from_pretrained(folder)
        return lambda im: anime(im, **res)
    if name == "softedge":
        from controlnet_aux.pidi import PidiNetDetector

        pidi = PidiNetDetector.from_pretrained(folder)
        return lambda im: pidi(im, **res)
    if name in ("teed", "anyline"):
        from controlnet_aux.anyline import AnylineDetector
        from controlnet_aux.teed import TEEDdetector

        if name == "teed":
            teed = TEEDdetector.from_pretrained(folder, filename="7_model.pth")
            return lambda im: teed(im, detect_resolution=512, output_type="np")
        anyline = AnylineDetector.from_pretrained(folder, filename="MTEED.pth")
        return lambda im: anyline(im, detect_resolution=512, output_type="np")
    return None


def serve_reference(images: list[np.ndarray], weights: Path) -> None:
    """(In the reference interpreter) for each run label read from stdin, time one pass of
    controlnet_aux's detector over ``images`` and answer seconds per image (or null)."""
    runs = {label_of(n, p): (n, p) for n, p in learned_variants(set())}
    detectors: dict[str, Any] = {}
    answers, sys.stdout = sys.stdout, sys.stderr  # the detectors print; keep stdout for answers
    for line in sys.stdin:
        label = line.strip()
        if label not in detectors:
            try:
                detectors[label] = reference_detector(*runs[label], weights)
            except (OSError, RuntimeError, KeyError) as err:  # weights not written
                print(f"reference {label}: {err}", file=sys.stderr)
                detectors[label] = None
            if detectors[label] is not None:
                detectors[label](images[0])  # warm-up
        seconds = None
        if (detector := detectors[label]) is not None:
            start = time.perf_counter()
            for image in images:
                detector(image)
            seconds = (time.perf_counter() - start) / len(images)
        print(json.dumps(seconds), file=answers, flush=True)


class Reference:
    """controlnet_aux in ``python`` (its own venv), timing one pass per call, in turn with
    hintset's passes."""

    def __init__(self, python: str, args: argparse.Namespace, weights: Path) -> None:
        command = [python, __file__, "--as-reference", "--weights-dir", str(weights),
                   "--size", str(args.size), "--batch", str(args.batch),
                   "--threads", str(args.threads)]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)  # fmt: skip

    def __call__(self, label: str) -> float | None:
        self.process.stdin.write(label + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


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
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--reference", default="",
                        help="python with controlnet_aux 0.0.10: also time its detectors")  # fmt: skip
    parser.add_argument("--as-reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    runs = learned_variants(only)
    images = photos(args.size, args.batch)
    if args.as_reference:
        serve_reference(images, Path(args.weights_dir))
        return
    with tempfile.TemporaryDirectory(prefix="hintset-bench-") as tmp:
        weights = Path(args.weights_dir or tmp)
        start = time.perf_counter()
        networks = [n.strip() for n in args.networks.split(",") if n.strip()] or list(WRITERS)
        for network in networks:
            WRITERS[network](weights, tiny=args.tiny)
        print(f"random weights written to {weights} in {time.perf_counter() - start:.1f}s")
        reference = Reference(args.reference, args, weights) if args.reference else None
        print(
            f"\nCPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{args.size}x{args.size} photos ({len(images)}), best of {args.repeat} passes, "
            f"{'TINY configs' if args.tiny else 'real sizes'}\n"
        )
        header = ("| annotator | params | weights | MB | load s | batch 1 ms/img | batch {} ms/img "
                  "| default batch | controlnet_aux ms/img | x controlnet_aux at default |")  # fmt: skip
        print(header.format(args.batch))
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, params in runs:
            label = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
            try:
                r = time_run(name, params, images, args.batch, args.repeat, weights, reference)
            except Exception as err:  # noqa: BLE001 - report and go on with the others
                print(f"| {name} | {label} | error: {' '.join(str(err).split())[:120]} |||||||")
                continue
            ref = r["reference_ms"]
            versus = f"{ref:.0f} | {ref / r['default_ms']:.2f}x" if ref else "- | -"
            print(
                f"| {name} | {label} | {r['files']} | {r['mb']:.0f} | {r['load_s']:.1f} "
                f"| {r['single_ms']:.0f} | {r['batch_ms']:.0f} | {r['default']} | {versus} |",
                flush=True,
            )
        if reference is not None:
            reference.close()


if __name__ == "__main__":
    main()
