"""Tasks route vs bundled route: the same BlazePose models, two MediaPipe APIs, same keypoints?

In the ``pose-bundled`` environment (mediapipe 0.10.21 has both APIs and ships the models):

    python benchmarks/pose_tasks_vs_bundled.py            # both routes here, print the figures
    python benchmarks/pose_tasks_vs_bundled.py save bundled.json DIR   # + DIR/*.task assembled

The Tasks route of the CURRENT mediapipe runs in the default environment on that file:

    python benchmarks/pose_tasks_vs_bundled.py save tasks.json DIR     # (DIR holds the .task)
    python benchmarks/pose_tasks_vs_bundled.py compare tasks.json bundled.json

The ``.task`` is assembled from the wheel's own TF Lite files (``tests/mediapipe_task.py``);
photos: tests/data/photos at 512 px; keypoints: the 18 OpenPose body points of ``pose``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(route: str, task_dir: Path) -> dict[str, list | None]:
    """Photo name -> 18x3 keypoints of the one person (None: nobody) for one route."""
    from annotators import create
    from pipeline.decode import load_image, resize_short_side

    backend = "mediapipe" if route == "tasks" else "mediapipe-bundled"
    annotator = create("pose", backend=backend, weights_dir=str(task_dir))
    found = {}
    for path in sorted((ROOT / "tests" / "data" / "photos").glob("*.jpg")):
        people = annotator.annotate(resize_short_side(load_image(path), 512)).data["pose"]["people"]
        found[path.name] = people[0]["pose_keypoints_2d"] if people else None
    return found


def agreement(tasks: dict, bundled: dict) -> tuple[int, int, np.ndarray, int]:
    """(photos with a person in both, in one only, pixel distances of the keypoints both
    report, keypoints reported by one route only)."""
    distances, both, only, one_route = [], 0, 0, 0
    for name, a in tasks.items():
        b = bundled[name]
        if a is None or b is None:
            only += (a is None) != (b is None)
            continue
        ka, kb = np.array(a).reshape(18, 3), np.array(b).reshape(18, 3)
        both += 1
        seen = (ka[:, 2] > 0) & (kb[:, 2] > 0)
        one_route += int(((ka[:, 2] > 0) != (kb[:, 2] > 0)).sum())
        distances += list(np.hypot(*(ka[seen, :2] - kb[seen, :2]).T))
    return both, only, np.array(distances), one_route


def compare(tasks: dict, bundled: dict) -> str:
    """Detection agreement and keypoint distances in pixels, as printed lines."""
    both, only, d, one_route = agreement(tasks, bundled)
    lines = [
        f"{len(tasks)} photos at 512 px: a person in both routes in {both}, in one only in {only}"
    ]
    if len(d):
        lines.append(f"{len(d)} keypoints seen by both: distance px mean {d.mean():.3f}, "
                     f"median {np.median(d):.3f}, p95 {np.percentile(d, 95):.3f}, max {d.max():.3f}; "
                     f"{one_route} keypoints above the confidence threshold in one route only")  # fmt: skip
    return "\n".join(lines)


def main(args: list[str]) -> None:
    if args and args[0] == "compare":
        tasks, bundled = (json.loads(Path(p).read_text()) for p in args[1:3])
        print(compare(tasks, bundled))
        return
    if args and args[0] == "save":
        out, task_dir = Path(args[1]), Path(args[2])
        import mediapipe

        bundled = hasattr(mediapipe, "solutions")
        if bundled and not (task_dir / "pose_landmarker_full.task").is_file():
            from tests.mediapipe_task import write_pose_task

            task_dir.mkdir(parents=True, exist_ok=True)
            write_pose_task(task_dir)
        found = run("bundled" if bundled else "tasks", task_dir)
        out.write_text(json.dumps(found))
        print(f"mediapipe {mediapipe.__version__}: {sum(v is not None for v in found.values())} "
              f"people in {len(found)} photos -> {out}")  # fmt: skip
        return
    from tests.mediapipe_task import write_pose_task

    with tempfile.TemporaryDirectory() as tmp:
        write_pose_task(Path(tmp))
        print(compare(run("tasks", Path(tmp)), run("bundled", Path(tmp))))


if __name__ == "__main__":
    main(sys.argv[1:])
