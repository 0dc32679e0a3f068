"""Validation: DDIM 20 steps, guidance 9.0 on held-out conditions -> grid PNG; loss curve plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def sample_grid(trainer, *, steps: int = 20, guidance: float = 9.0, seed: int = 0) -> np.ndarray:
    """Rows of condition | generated | original for held-out samples, as one uint8 image."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline

    from training.data import read_samples

    c = trainer.config
    samples = read_samples(c.data, c.conditions, c.resolution, c.num_validation)
    pipe = StableDiffusionControlNetPipeline(
        vae=trainer.vae,
        text_encoder=trainer.text_encoder,
        tokenizer=trainer.tokenizer,
        unet=trainer.unet,
        controlnet=trainer.controlnet,
        scheduler=DDIMScheduler.from_config(trainer.noise_scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    rows = []
    was_training = trainer.controlnet.training
    trainer.controlnet.eval()
    try:
        for i, s in enumerate(samples):
            cond = torch.from_numpy(s["conditioning"])[None]
            gen = torch.Generator().manual_seed(seed + i)
            img = pipe(
                s["caption"],
                image=cond,
                num_inference_steps=steps,
                guidance_scale=guidance,
                height=c.resolution,
                width=c.resolution,
                generator=gen,
                output_type="np",
            ).images[0]
            cond_rgb = np.repeat(s["conditioning"][:1], 3, 0).transpose(1, 2, 0)
            orig = (s["pixel_values"].transpose(1, 2, 0) + 1) / 2
            rows.append(np.concatenate([cond_rgb, img, orig], axis=1))
    finally:
        trainer.controlnet.train(was_training)
    return (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).round().astype(np.uint8)


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
    """Write RUN/validation/step-N.png and refresh RUN/loss.png."""
    from PIL import Image

    out = trainer.run / "validation" / f"step-{trainer.step:06d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample_grid(trainer)).save(out)
    if (trainer.run / "log.jsonl").exists():
        plot_loss(trainer.run / "log.jsonl", trainer.run / "loss.png")
    return out
