"""Learning demonstration: a ControlNet trained by hintset follows Canny edges; the base cannot.

1. Draw a synthetic dataset in the spirit of the ControlNet tutorial's fill50k: one filled
   shape (circle, square, triangle) per image, captions naming colour, shape and background.
2. ``hintset build`` it with the canny annotator (a training set and a held-out set).
3. Pretrain the tiny base on the training shards (VAE, then text-conditioned U-Net).
4. ``hintset train`` a ControlNet on canny with that base locked.
5. ``hintset evaluate`` on the held-out conditions: generate with the ControlNet and with the
   same base without control (same captions, same seeds; DDIM), re-annotate every generated
   image with the dataset's Canny and score it against the condition (F1 with a 2 px slack, and
   ControlNet++'s pixel F1), with 95% intervals; the VAE round trip of each original is the
   ceiling.

Run: ``python benchmarks/learning_demo.py`` (CPU, about 15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import run_hintset  # noqa: E402

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220),
           "yellow": (235, 210, 40), "cyan": (40, 200, 210), "magenta": (200, 50, 190),
           "white": (245, 245, 245), "black": (20, 20, 20)}  # fmt: skip
SHAPES = ("circle", "square", "triangle")


def draw_shape(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """One RGB image with a filled shape on a plain background, and its caption."""
    names = list(COLOURS)
    fg, bg = rng.choice(len(names), 2, replace=False)
    shape = SHAPES[rng.integers(len(SHAPES))]
    img = np.empty((size, size, 3), np.uint8)
    img[:] = COLOURS[names[bg]]
    r = int(rng.integers(size // 8, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
    colour = COLOURS[names[fg]]
    if shape == "circle":
        cv2.circle(img, (cx, cy), r, colour, -1, cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour, -1, cv2.LINE_AA)
    else:
        pts = np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    return img, f"{names[fg]} {shape} on {names[bg]} background"


def write_shapes(folder: Path, count: int, size: int, seed: int) -> None:
    """``count`` PNG images with sidecar captions (what ``hintset build`` reads from a folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        img, caption = draw_shape(rng, size)
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        (folder / f"{i:05d}.txt").write_text(caption)


def vae_round_trips(base: Path, data: Path, folder: Path) -> None:
    """``{key}.png``: each held-out original encoded and decoded by the base's VAE, the best
    any generator with this VAE can do (scored as the ceiling row)."""
    import torch
    from diffusers import AutoencoderKL

    from evaluation.samples import read_samples
    from pipeline.decode import decode_image

    vae = AutoencoderKL.from_pretrained(base / "vae")
    folder.mkdir(parents=True, exist_ok=True)
    for s in read_samples(str(data), ("canny",)):
        rgb = decode_image(s.image)
        pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.no_grad():
            recon = vae.decode(vae.encode(pixels).latent_dist.mean).sample[0]
        out = ((recon.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).round()
        cv2.imwrite(str(folder / f"{s.key}.png"), cv2.cvtColor(out.astype(np.uint8),
                                                               cv2.COLOR_RGB2BGR))  # fmt: skip


def evaluate(base: Path, controlnet: Path, data: Path, work: Path, resolution: int,
             steps: int, guidance: float) -> tuple[dict, dict]:  # fmt: skip
    """``hintset evaluate`` on the held-out conditions: the ControlNet and the same base without
    control (same captions and seeds, DDIM), then the VAE round trips as the ceiling. Returns
    the two summaries."""
    run_hintset("evaluate", "--data", str(data), "--condition", "canny", "--model",
                str(controlnet), "--base-model", str(base), "-o", str(work / "evaluate"),
                "--steps", str(steps), "--guidance", str(guidance), "--scheduler", "ddim",
                "--resolution", str(resolution), "--device", "cpu")  # fmt: skip
    vae_round_trips(base, data, work / "vae")
    run_hintset("evaluate", "--data", str(data), "--condition", "canny", "--generated",
                str(work / "vae"), "-o", str(work / "ceiling"))  # fmt: skip
    return tuple(json.loads((work / name / "summary.json").read_text())
                 for name in ("evaluate", "ceiling"))  # fmt: skip


def grid_tiles(data: Path, report: Path, count: int) -> list[list[np.ndarray]]:
    """condition | base | ControlNet | original for the first ``count`` held-out samples."""
    from evaluation.report import viewable
    from evaluation.samples import read_samples
    from pipeline.decode import decode_image, load_image

    tiles = []
    for s in read_samples(str(data), ("canny",), limit=count):
        made = [load_image(report / "images" / run / f"{s.key}_0.png")
                for run in ("no-control", "controlnet")]  # fmt: skip
        tiles.append([viewable(s.maps["canny"]), *made, decode_image(s.image)])
    return tiles


def wins(report: Path, metric: str) -> tuple[int, int]:
    """(keys where the ControlNet scores higher than the base, keys scored by both)."""
    import csv

    with open(report / "samples.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_run = {run: {r["key"]: float(r[metric]) for r in rows if r["run"] == run}
              for run in ("controlnet", "no-control")}  # fmt: skip
    both = by_run["controlnet"].keys() & by_run["no-control"].keys()
    return sum(by_run["controlnet"][k] > by_run["no-control"][k] for k in both), len(both)


def save_grid(tiles: list[list[np.ndarray]], path: Path, columns: int = 2) -> None:
    """Rows of condition | base | ControlNet | original, ``columns`` samples side by side."""
    from PIL import Image

    pad = 4
    cells = [np.concatenate([np.pad(t, ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
                             for t in row], axis=1) for row in tiles]  # fmt: skip
    while len(cells) % columns:
        cells.append(np.full_like(cells[0], 255))
    lines = [np.concatenate(cells[i : i + columns], axis=1) for i in range(0, len(cells), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(lines, axis=0)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--eval-images", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--unet-steps", type=int, default=1000)
    parser.add_argument("--controlnet-steps", type=int, default=800)
    parser.add_argument("--controlnet-lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sample-steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--guidance", type=float, default=9.0)
    parser.add_argument("--grid", type=Path, default=ROOT / "docs" / "images" / "learning_demo.png")
    parser.add_argument("--work", type=Path, help="keep intermediate files here")
    args = parser.parse_args()

    from training.pretrain import pretrain_base
    from training.tiny_base import write_tiny_base

    work = args.work or Path(tempfile.mkdtemp(prefix="hintset-demo-"))
    res = str(args.resolution)
    times: dict[str, float] = {}
    start = time.perf_counter()
    write_shapes(work / "photos" / "train", args.train_images, args.resolution, seed=0)
    write_shapes(work / "photos" / "eval", args.eval_images, args.resolution, seed=1)
    for split in ("train", "eval"):
        run_hintset("build", str(work / "photos" / split), "-o", str(work / "data" / split),
                "-a", "canny", "--resolution", res, "--shard-size", "500", "-q")  # fmt: skip
    times["dataset (draw + hintset build)"] = time.perf_counter() - start

    start = time.perf_counter()
    # v-prediction (as SD 2.x): its loss at high noise is about the image's layout, which is
    # what a condition controls; epsilon's loss there is tiny and teaches layout slowly.
    write_tiny_base(work / "random-base", prediction_type="v_prediction",
                    unet_channels=(64, 128, 128), vae_channels=(16, 32, 32, 32))  # fmt: skip
    pre = pretrain_base(str(work / "data" / "train"), str(work / "random-base"), work / "base",
                        resolution=args.resolution, vae_steps=args.vae_steps,
                        unet_steps=args.unet_steps)  # fmt: skip
    times["pretrain base (VAE + U-Net)"] = time.perf_counter() - start

    start = time.perf_counter()
    steps = str(args.controlnet_steps)
    run_hintset("train", "--data", str(work / "data" / "train"), "--condition", "canny",
            "--base-model", str(work / "base"), "--output", str(work / "run"), "--resolution", res,
            "--steps", steps, "--batch-size", str(args.batch_size), "--lr",
            str(args.controlnet_lr), "--checkpoint-every", steps,
            "--timestep-sampling", "cubic")  # fmt: skip
    times["hintset train (ControlNet)"] = time.perf_counter() - start

    start = time.perf_counter()
    controlnet = work / "run" / f"checkpoint-{steps}"
    summary, ceiling = evaluate(work / "base", controlnet, work / "data" / "eval", work,
                                args.resolution, args.sample_steps, args.guidance)  # fmt: skip
    times["hintset evaluate (+ VAE ceiling)"] = time.perf_counter() - start
    save_grid(grid_tiles(work / "data" / "eval", work / "evaluate", 8), args.grid)

    from evaluation.report import fmt

    runs = {r["name"]: r for r in summary["runs"]} | {"ceiling": ceiling["runs"][0]}
    won, scored = wins(work / "evaluate", "f1_2px")
    first, last = pre["unet_losses"][:50], pre["unet_losses"][-50:]
    log = [json.loads(x) for x in (work / "run" / "log.jsonl").read_text().splitlines()]
    print(f"\n{scored} held-out conditions, {args.resolution} px, DDIM {args.sample_steps} steps, "
          f"guidance {args.guidance}; hintset evaluate: Canny of each generated image vs the "
          f"condition, mean [95% bootstrap interval]\n")  # fmt: skip
    print("| generator | edge F1 (2 px slack) | pixel F1 (ControlNet++) |\n| --- | ---: | ---: |")
    for name, label in (("no-control", "base without control"), ("controlnet", "base + ControlNet"),
                        ("ceiling", "(ceiling: VAE round trip of the original)")):  # fmt: skip
        m = runs[name]["metrics"]
        print(f"| {label} | {fmt(m['f1_2px'])} | {fmt(m['f1'])} |")
    print(f"\nControlNet edge F1 (2 px) higher on {won} of {scored} conditions")
    print(f"VAE loss {pre['vae_losses'][0]:.4f} -> {pre['vae_losses'][-1]:.4f}; U-Net loss "
          f"(mean of 50 steps) {np.mean(first):.4f} -> {np.mean(last):.4f}; ControlNet loss "
          f"{np.mean([r['loss'] for r in log[:50]]):.4f} -> "
          f"{np.mean([r['loss'] for r in log[-50:]]):.4f}")  # fmt: skip
    print("\n| stage | seconds |\n| --- | ---: |")
    for stage, seconds in times.items():
        print(f"| {stage} | {seconds:.0f} |")
    print(f"| total | {sum(times.values()):.0f} |")
    print(f"\ngrid (condition | base | ControlNet | original): {args.grid}")
    print(f"report: {work / 'evaluate' / 'report.html'}")


if __name__ == "__main__":
    main()
