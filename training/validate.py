"""Validation: DDIM 20 steps, guidance 9.0 on held-out conditions -> labelled grid PNG (and
TensorBoard/W&B image); loss curve plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_pipeline(trainer):
    """The family's diffusers ControlNet pipeline over the trainer's models, DDIM sampler."""
    return trainer.family.pipeline(trainer.controlnet)


def validation_source(config) -> tuple[str, list[str] | None, bool]:
    """(data, shard urls, held out?) validation samples come from: ``--validation-data``, the
    ``--validation-shards`` held out of ``--data``, or else (not held out) the training shards."""
    from training.data import shard_urls, split_validation

    if config.validation_data:
        return config.validation_data, None, True
    train, held = split_validation(shard_urls(config.data), config.validation_shards)
    return (config.data, held, True) if held else (config.data, train, False)


def read_validation(config, n: int) -> list[dict]:
    """The first ``n`` validation samples (see ``validation_source``)."""
    from training.data import read_samples

    data, urls, _ = validation_source(config)
    return read_samples(data, config.conditions, config.resolution, n,
                        stack=config.stack_conditions, urls=urls, union=config.union)  # fmt: skip


def control_args(family, config):
    """sample -> the pipeline's control keyword arguments: the family's ``control_args`` (union
    models: maps and their slots), else the sample's hint as the family's ``IMAGE_ARG``."""
    import torch

    if hasattr(family, "control_args"):
        return lambda sample: family.control_args(sample, config)
    key = getattr(family, "IMAGE_ARG", "image")
    return lambda sample: {key: torch.from_numpy(sample["conditioning"])[None]}


def generate_rows(
    pipe, samples: list[dict], resolution: int, *, steps: int = 20, guidance: float = 9.0,
    seed: int = 0, control=None, prompts: list[dict] | None = None,
) -> np.ndarray:  # fmt: skip
    """Rows of condition | generated | original (uint8), one per sample, seeded per row;
    ``control``: sample -> the pipeline's control arguments (default: ``image=`` the hint);
    ``prompts``: each row's prompt arguments in place of its caption (cached embeddings)."""
    import torch

    control = control or control_args(None, None)
    rows = []
    for i, s in enumerate(samples):
        img = pipe(
            **(prompts[i] if prompts else {"prompt": s["caption"]}),
            **control(s),
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=resolution,
            width=resolution,
            generator=torch.Generator().manual_seed(seed + i),
            output_type="np",
        ).images[0]
        cond = s["conditioning"]
        cond = cond.max(axis=0) if cond.ndim == 4 else cond  # union: its maps overlaid
        hint = cond[:3] if cond.shape[0] >= 3 else cond[:1]
        cond_rgb = np.broadcast_to(hint, (3, *hint.shape[1:])).transpose(1, 2, 0)
        orig = (s["pixel_values"].transpose(1, 2, 0) + 1) / 2
        rows.append(np.concatenate([cond_rgb, img, orig], axis=1))
    return (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).round().astype(np.uint8)


def sample_grid(
    trainer, *, steps: int = 20, guidance: float = 9.0, seed: int = 0
) -> tuple[np.ndarray, list[dict]]:
    """Rows of condition | generated | original for validation samples (uint8), and the
    samples used (key, caption)."""
    samples = read_validation(trainer.config, trainer.config.num_validation)
    pipe = make_pipeline(trainer)
    was_training = trainer.controlnet.training
    trainer.controlnet.eval()
    prompts = None
    if getattr(trainer, "cache", None) is not None:  # no text encoders: the cached embeddings
        zeros = bool(pipe.config.get("force_zeros_for_empty_prompt", False))
        prompts = [trainer.cache.pipeline_prompt(s["caption"], zeros) for s in samples]
    try:
        grid = generate_rows(pipe, samples, trainer.config.resolution, steps=steps,
                             guidance=guidance, seed=seed, prompts=prompts,
                             control=control_args(trainer.family, trainer.config))  # fmt: skip
    finally:
        trainer.controlnet.train(was_training)
    return grid, [{"key": s["key"], "caption": s["caption"]} for s in samples]


def label_grid(grid: np.ndarray, captions: list[str], step: int, strip: int = 12) -> np.ndarray:
    """The grid with a header (step, column names) and each row's caption above it."""
    from PIL import Image, ImageDraw

    rows = np.split(grid, len(captions), axis=0)
    width = grid.shape[1]
    canvas = Image.new("RGB", (width, strip * (len(rows) + 1) + grid.shape[0]), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 0), f"step {step}: condition | generated | original", fill="black")
    y = strip
    for caption, row in zip(captions, rows, strict=True):
        draw.text((2, y), caption or "(empty caption)", fill="black")
        canvas.paste(Image.fromarray(row), (0, y + strip))
        y += strip + row.shape[0]
    return np.asarray(canvas)


def plot_loss(log: Path, out: Path) -> Path:
    """Loss per step (and a running mean) from RUN/log.jsonl to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in recs]
    loss = np.array([r["loss"] for r in recs])
    k = max(1, len(loss) // 20)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, alpha=0.4, label="loss")
    ax.plot(steps[k - 1 :], smooth, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def validate(trainer) -> Path:
    """Write RUN/validation/step-N.png (labelled grid) and step-N.json (the samples used, and
    whether they were held out), send the grid to the trackers, refresh RUN/loss.png."""
    from PIL import Image

    from pipeline.atomic import atomic_write

    out = trainer.run / "validation" / f"step-{trainer.step:06d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    grid, used = sample_grid(trainer)
    labelled = label_grid(grid, [u["caption"] for u in used], trainer.step)
    Image.fromarray(labelled).save(out)
    held_out = validation_source(trainer.config)[2]
    info = {"step": trainer.step, "held_out": held_out, "samples": used}
    atomic_write(out.with_suffix(".json"), json.dumps(info, indent=1).encode())
    if getattr(trainer, "tracker", None):
        trainer.tracker.image("validation", trainer.step, labelled, f"step {trainer.step}")
    if (trainer.run / "log.jsonl").exists():
        plot_loss(trainer.run / "log.jsonl", trainer.run / "loss.png")
    return out
