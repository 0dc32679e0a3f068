"""Where a run's metrics go: TensorBoard event files (default) and, when asked, Weights & Biases."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np


class Tracker:
    """Scalars and images for the trackers named in ``config.report_to`` (rank 0 only)."""

    def __init__(self, run: Path, config) -> None:
        self.tensorboard = None
        self.wandb = None
        names = config.trackers
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(Path(run) / "tensorboard"))
        if "wandb" in names:
            try:
                import wandb
            except ImportError:
                raise ValueError(
                    "--report-to wandb needs the wandb package: pip install wandb"
                ) from None
            self.wandb = wandb.init(
                project="hintset", dir=str(run), name=Path(run).name, config=asdict(config)
            )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One value per tag at ``step``."""
        if self.tensorboard:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, step)
        if self.wandb:
            self.wandb.log(values, step=step)

    def image(self, tag: str, step: int, image: np.ndarray, caption: str = "") -> None:
        """An HxWx3 uint8 image (a validation grid)."""
        if self.tensorboard:
            self.tensorboard.add_image(tag, image, step, dataformats="HWC")
            self.tensorboard.flush()
        if self.wandb:
            import wandb

            self.wandb.log({tag: wandb.Image(image, caption=caption)}, step=step)

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()
