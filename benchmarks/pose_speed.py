"""Milliseconds per image of the pose annotator at short side 512 on this machine's CPU.

MediaPipe (bundled model; processes one image per call) and the OpenPose body network
with random weights in the published layout (the real cost), one image per call vs a
batch of same-size images. Run: ``python benchmarks/pose_speed.py [--images 8]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotators import create  # noqa: E402
from benchmarks.common import PHOTOS  # noqa: E402
from pipeline.decode import load_image, resize_short_side  # noqa: E402
from tests.weights import write_openpose  # noqa: E402


def ms_per_image(annotator, images, batch: int) -> float:
    """Mean wall milliseconds per image, after one warm-up call."""
    annotator.annotate_batch(images[:batch])
    start = time.perf_counter()
    for first in range(0, len(images), batch):
        annotator.annotate_batch(images[first : first + batch])
    return 1000 * (time.perf_counter() - start) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    photo = resize_short_side(load_image(sorted(PHOTOS.glob("*.jpg"))[0]), 512)
    images = [photo] * args.images  # same size, so the network can batch them
    rows = [("mediapipe (body)", "1 per call", ms_per_image(create("pose"), images, 1))]
    with tempfile.TemporaryDirectory() as tmp:
        write_openpose(Path(tmp))
        for batch in (1, 4):
            annotator = create("pose", backend="openpose", weights_dir=tmp, batch_size=batch,
                               device="cpu")  # fmt: skip
            rows.append(("openpose (body network)", f"batch {batch}",
                         ms_per_image(annotator, images, batch)))  # fmt: skip
    print(f"pose at {photo.shape[1]}x{photo.shape[0]}, {args.images} images, CPU\n")
    print("| backend | calls | ms per image |\n| --- | --- | ---: |")
    for name, mode, ms in rows:
        print(f"| {name} | {mode} | {ms:.0f} |")


if __name__ == "__main__":
    main()
