"""Training speed on a small base (CPU): s/step and memory, ControlNet vs a full U-Net
fine-tune (no ControlNet) with the same batch; data-loader samples/s vs what the trainer uses.

Memory is reported as peak RSS and as the growth above the loaded models (gradients,
optimiser state, activations), which is what locking the base saves.

    flock /tmp/hintset-heavy.lock python benchmarks/train_speed.py --data OUT [--steps 10]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    """Current resident set size (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _time_steps(trainer, steps: int, params, control: bool) -> float:
    import torch

    from training.data import ShardDataset, make_loader

    c = trainer.config
    ds = ShardDataset(c.data, c.conditions, c.resolution, seed=0, shuffle_buffer=8)
    batches = iter(make_loader(ds, c.batch_size))
    opt = torch.optim.AdamW(params, lr=1e-5)
    batch = next(batches)
    trainer.loss(batch, control).backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        trainer.loss(next(batches), control).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", default="")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--unet-channels", default="64,128,256", help="U-Net block widths")
    ap.add_argument("--mode", choices=["all", "controlnet", "unet"], default="all")
    a = ap.parse_args()
    import subprocess
    import sys

    if a.mode == "all":  # separate processes so each peak RSS is its own
        for mode in ("controlnet", "unet"):
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--mode", mode], check=True)
        return
    from training.config import TrainConfig
    from training.data import ShardDataset, make_loader
    from training.tiny_base import write_tiny_base
    from training.trainer import Trainer

    channels = tuple(int(c) for c in a.unet_channels.split(","))
    base = a.base or write_tiny_base(Path(tempfile.mkdtemp()) / "base", unet_channels=channels)
    cfg = TrainConfig(
        data=a.data,
        condition="canny",
        base_model=str(base),
        output=tempfile.mkdtemp(),
        batch_size=a.batch_size,
        resolution=a.resolution,
    )
    t = Trainer(cfg, device="cpu")
    control = a.mode == "controlnet"
    if control:
        params = list(t.controlnet.parameters())
    else:  # the usual fine-tune: the whole U-Net trainable, no ControlNet in the step
        t.family.unet.requires_grad_(True)
        t.family.unet.train()
        params = list(t.family.unet.parameters())
    loaded = _rss_mb()
    sps = _time_steps(t, a.steps, params, control)
    trained = sum(p.numel() for p in params) / 1e6
    ds = ShardDataset(a.data, ["canny"], a.resolution, seed=0, shuffle_buffer=8)
    it = iter(make_loader(ds, a.batch_size))
    next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 3:
        n += len(next(it)["key"])
    loader = n / (time.perf_counter() - start)
    consume = a.batch_size / sps
    print(
        f"| {a.mode:10s} | {trained:.1f}M trained | batch {a.batch_size} @ {a.resolution}px | "
        f"{sps:.3f} s/step | peak RSS {_peak_mb():.0f} MB | above models "
        f"{_peak_mb() - loaded:.0f} MB | loader {loader:.0f} samples/s | trainer "
        f"{consume:.1f} samples/s | margin {loader / consume:.1f}x |"
    )


if __name__ == "__main__":
    main()
