"""Training configuration: a plain dataclass that round-trips through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass
class TrainConfig:
    """Every knob of ``hintset train``; saved next to the run so it can be reproduced."""

    data: str
    condition: str
    base_model: str
    output: str
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-5
    lr_warmup_steps: int = 0
    resolution: int = 512
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    grad_accum: int = 1
    ema: bool = False
    ema_decay: float = 0.9999
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    resume: str = ""
    validate_every: int = 0
    num_validation: int = 4
    prompt_dropout: float = 0.5
    timestep_sampling: str = "uniform"  # or "cubic": more high-noise steps (T2I-Adapter)
    shuffle_buffer: int = 256
    num_workers: int = 0

    @property
    def conditions(self) -> list[str]:
        return [c.strip() for c in self.condition.split(",") if c.strip()]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def save(self, path: Path) -> None:
        from pipeline.atomic import atomic_write

        atomic_write(Path(path), self.to_json().encode())
