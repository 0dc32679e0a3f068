"""Tasks route vs bundled route: the same BlazePose models, two MediaPipe APIs, same keypoints?

Run in the ``pose-bundled`` environment (mediapipe 0.10.21 has both APIs and ships the
models): ``python benchmarks/pose_tasks_vs_bundled.py [OUT_DIR]``. It assembles a
``pose_landmarker_full.task`` from the wheel's own TF Lite files (``tests/mediapipe_task.py``),
runs ``pose`` with ``backend=mediapipe`` (Tasks, that
file as weights) and ``backend=mediapipe-bundled`` (``mp.solutions``) on tests/data/photos at
512 px, and prints how far the 18 OpenPose keypoints lie apart.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def keypoints(result) -> np.ndarray | None:
    """18x3 (x, y, confidence) of the one person, or None."""
    people = result.data["pose"]["people"]
    return np.array(people[0]["pose_keypoints_2d"]).reshape(18, 3) if people else None


def main(out: Path) -> None:
    from annotators import create
    from pipeline.decode import load_image, resize_short_side
    from tests.mediapipe_task import write_pose_task

    task = write_pose_task(out)
    tasks = create("pose", backend="mediapipe", weights_dir=str(out))
    bundled = create("pose", backend="mediapipe-bundled")
    photos = sorted((ROOT / "tests" / "data" / "photos").glob("*.jpg"))
    distances, both, only, same_maps, one_route = [], 0, 0, 0, 0
    for path in photos:
        image = resize_short_side(load_image(path), 512)
        a, b = tasks.annotate(image), bundled.annotate(image)
        ka, kb = keypoints(a), keypoints(b)
        same_maps += bool(np.array_equal(a.maps["pose"], b.maps["pose"]))
        if ka is None or kb is None:
            only += (ka is None) != (kb is None)
            continue
        both += 1
        seen = (ka[:, 2] > 0) & (kb[:, 2] > 0)
        one_route += int(((ka[:, 2] > 0) != (kb[:, 2] > 0)).sum())
        distances += list(np.hypot(*(ka[seen, :2] - kb[seen, :2]).T))
    d = np.array(distances)
    print(f"task file {task.name}: {task.stat().st_size} bytes")
    print(f"{len(photos)} photos at 512 px: a person in both routes in {both}, in one only in "
          f"{only}; identical pose maps in {same_maps}")  # fmt: skip
    if len(d):
        print(f"{len(d)} keypoints seen by both: distance px mean {d.mean():.3f}, "
              f"median {np.median(d):.3f}, p95 {np.percentile(d, 95):.3f}, max {d.max():.3f}; "
              f"{one_route} keypoints above the confidence threshold in one route only")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
