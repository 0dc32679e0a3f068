"""Training configuration: one dataclass holds every option of ``hintset train``, its help text
and default; the CLI options are derived from it, and it round-trips through JSON and YAML."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from training.families.union import P_SINGLE

#: fields a run cannot start without (they may come from ``--config`` instead of the CLI)
REQUIRED = ("data", "condition", "base_model", "output")
#: options that define what a run trains; ``--resume`` refuses a change to any of them. Others
#: (steps, batch size, learning rate, precision, data, validation, logging) may change on resume.
RUN_DEFINING = ("base_model", "family", "condition", "stack_conditions", "union", "resolution")
#: old names still accepted in config files and checkpoints' config.json
RENAMED = {"num_workers": "loader_workers"}


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with the help text (and choices) its CLI option shows."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Every knob of ``hintset train``; saved next to the run so it can be reproduced."""

    data: str = opt(
        "", "required: build output folder (OUT) or shard URL pattern (.../{00000..00009}.tar)"
    )
    condition: str = opt(
        "",
        "required: map name (canny, depth, ...); several, comma separated, need --union or "
        "--stack-conditions",
    )
    base_model: str = opt(
        "", "required: diffusers folder or hub id of the base: SD 1.x/2.x, SDXL, SD3 or FLUX.1"
    )
    family: str = opt(
        "auto",
        "model family of the base; auto reads its model_index.json",
        ("auto", "sd15", "sdxl", "sd3", "flux"),
    )
    output: str = opt(
        "", "required: run folder (checkpoints, log.jsonl, TensorBoard events, validation grids)"
    )
    steps: int = opt(1000, "optimiser steps")
    batch_size: int = opt(4, "samples per step per rank")
    lr: float = opt(1e-5, "AdamW learning rate")
    lr_warmup_steps: int = opt(0, "linear learning-rate warm-up steps")
    resolution: int = opt(512, "training size: short side resized, then a random square crop")
    crop: str = opt(
        "random", "random: square crop and flip drawn per sample; centre: the centre square, "
        "unflipped (what --cache stores)", ("random", "centre"),
    )  # fmt: skip
    cache: str = opt(
        "", "folder of cached latents and text embeddings (hintset cache): filled on first use, "
        "reused after; the run loads no text encoder and samples the centre crop, unflipped",
    )  # fmt: skip
    mixed_precision: str = opt(
        "no", "dtype of the locked parts and autocast", ("no", "fp16", "bf16")
    )
    gradient_checkpointing: bool = opt(False, "recompute activations in backward (less memory)")
    grad_accum: int = opt(1, "batches accumulated per optimiser step")
    ema: bool = opt(False, "keep an EMA copy of the ControlNet weights")
    ema_decay: float = opt(0.9999, "EMA decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0: no clipping)")
    seed: int = opt(0, "seed of data order, noise and timesteps")
    checkpoint_every: int = opt(500, "write RUN/checkpoint-N every N steps (0: only at the end)")
    keep_checkpoints: int = opt(3, "checkpoints kept (oldest removed)")
    resume: str = opt("", '"latest" or a checkpoint folder to continue from')
    validate_every: int = opt(0, "sample validation grids every N steps (0: never)")
    num_validation: int = opt(4, "validation samples per grid")
    validation_data: str = opt("", "a separate build (folder or shard pattern) for validation")
    validation_shards: int = opt(
        0, "hold out the last N shards of --data for validation; never trained on"
    )
    prompt_dropout: float = opt(0.5, "share of captions replaced by the empty prompt")
    timestep_sampling: str = opt(
        "uniform", "cubic draws more high-noise timesteps, where layout is decided (T2I-Adapter)",
        ("uniform", "cubic"),
    )  # fmt: skip
    weighting_scheme: str = opt(
        "logit_normal", "SD3/FLUX: timestep density and loss weighting (diffusers' "
        "--weighting_scheme): logit_normal, mode, or uniform draws with sigma_sqrt/cosmap/none",
        ("logit_normal", "mode", "sigma_sqrt", "cosmap", "none"),
    )  # fmt: skip
    logit_mean: float = opt(0.0, "SD3/FLUX logit_normal: mean")
    logit_std: float = opt(1.0, "SD3/FLUX logit_normal: standard deviation")
    mode_scale: float = opt(1.29, "SD3/FLUX mode weighting: scale")
    guidance_scale: float = opt(3.5, "FLUX.1 dev-style bases (guidance embedding): guidance fed")
    max_bad_fraction: float = opt(
        0.05, "stop when more than this share of the samples read is bad (corrupt image or "
        "map, caption not UTF-8); fewer are skipped, counted in log.jsonl as bad_samples",
    )  # fmt: skip
    shuffle_buffer: int = opt(256, "samples in the seeded shuffle buffer")
    data_order: str = opt(
        "shards", "shards: each process reads its own shards (cheapest; the batches depend on "
        "the number of processes); exact: every process reads and decodes the whole seeded "
        "stream and keeps its own batches, so N processes with accumulation A train on the "
        "batches of 1 process with N*A (same weights to rounding; N x the decoding, and "
        "N x W with W loader workers)", ("shards", "exact"),
    )  # fmt: skip
    stack_conditions: bool = opt(
        False, "stack several maps as channels (more than 3 input channels: not loadable in "
        "AUTOMATIC1111/ComfyUI/diffusers pipelines); default: one map, 1-channel repeated to RGB",
    )  # fmt: skip
    union: bool = opt(
        False, "train one union ControlNet (SDXL: ControlNetUnionModel, xinsir's slot ids) on "
        "samples carrying several of the --condition maps, each its own RGB image",
    )  # fmt: skip
    union_single: float = opt(
        P_SINGLE, "with --union: share of draws giving a sample one of its maps (else 2 or more)"
    )
    report_to: str = opt(
        "tensorboard",
        "where metrics go: tensorboard, wandb (needs the wandb package), both (tensorboard,wandb) or none",
    )
    loader_workers: int = opt(0, "DataLoader worker processes per rank")
    ray_workers: int = opt(0, "Ray Train workers (0: no Ray; torchrun or one process)")
    address: str = opt("", "Ray address for --ray-workers (auto, ray://host:10001)")
    use_gpu: bool = opt(False, "one GPU per Ray Train worker")

    @property
    def conditions(self) -> list[str]:
        return [c.strip() for c in self.condition.split(",") if c.strip()]

    @property
    def trackers(self) -> list[str]:
        return [t.strip() for t in self.report_to.split(",") if t.strip() not in ("", "none")]

    def check(self) -> None:
        """Raise ValueError (one line) for a missing required option or a bad value."""
        missing = [f"--{n.replace('_', '-')}" for n in REQUIRED if not getattr(self, n)]
        if missing:
            raise ValueError(f"missing {', '.join(missing)} (on the command line or in --config)")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name}: {getattr(self, f.name)!r} is not one of {choices}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ValueError(f"--max-bad-fraction {self.max_bad_fraction} is not in [0, 1]")
        if self.validation_data and self.validation_shards:
            raise ValueError("give --validation-data or --validation-shards, not both")
        if len(self.conditions) > 1 and not (self.stack_conditions or self.union):
            raise ValueError(
                f"{self.condition}: several maps need --union (one union ControlNet) or "
                "--stack-conditions (a ControlNet with more than 3 input channels, which "
                "standard UIs cannot load)"
            )
        if self.union and self.stack_conditions:
            raise ValueError("give --union or --stack-conditions, not both")
        if self.union and self.cache:
            raise ValueError(
                "--cache does not cover --union runs yet (each sample's maps and "
                "their subsets are drawn per step); train a union run uncached"
            )
        if not 0 <= self.union_single <= 1:
            raise ValueError(f"--union-single {self.union_single} is not in [0, 1]")
        if "wandb" in self.trackers:
            import importlib.util

            if importlib.util.find_spec("wandb") is None:
                raise ValueError("--report-to wandb needs the wandb package: pip install wandb")
        unknown = set(self.trackers) - {"tensorboard", "wandb"}
        if unknown:
            raise ValueError(f"--report-to: unknown {sorted(unknown)} (tensorboard, wandb, none)")

    def check_resume(self, checkpoint: Path) -> None:
        """Raise ValueError (one line) naming each run-defining option that differs from the
        config saved in ``checkpoint``."""
        try:
            saved = self.normalise(json.loads((Path(checkpoint) / "config.json").read_text()))
        except (OSError, ValueError) as err:
            raise ValueError(f"--resume {checkpoint}: cannot read its config.json: {err}") from None
        changed = [
            f"--{name.replace('_', '-')} {saved[name]!r} -> {getattr(self, name)!r}"
            for name in RUN_DEFINING
            if name in saved and not _same(name, saved[name], getattr(self, name))
        ]
        if changed:
            raise ValueError(
                f"--resume {Path(checkpoint).name}: {'; '.join(changed)}: a resumed run keeps "
                f"its {', '.join(RUN_DEFINING)}; start a new --output to change them"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def normalise(cls, raw: dict, *, strict: bool = False) -> dict:
        """Field name -> typed value; dashes and old names map; ``strict`` refuses unknown keys."""
        raw = {RENAMED.get(k.replace("-", "_"), k.replace("-", "_")): v for k, v in raw.items()}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if strict and unknown:
            raise ValueError(f"unknown option(s) in config: {', '.join(unknown)}")
        return {k: _typed(known[k], v) for k, v in raw.items() if k in known}

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        return cls(**cls.normalise(raw))

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_file(cls, path: Path) -> dict:
        """Options in a YAML or JSON run file, checked against the fields (plain dict)."""
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: cannot read config: {str(err).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a config file holds option: value pairs")
        try:
            return cls.normalise(raw, strict=True)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def save(self, path: Path) -> None:
        from pipeline.atomic import atomic_write

        atomic_write(Path(path), self.to_json().encode())


def _same(name: str, saved: Any, now: Any) -> bool:
    """Equal values; a base model given as two paths to the same folder is the same."""
    if saved == now:
        return True
    if name == "base_model" and Path(saved).exists() and Path(now).exists():
        return Path(saved).resolve() == Path(now).resolve()
    return False


def _typed(f, value: Any) -> Any:
    """``value`` converted to the field's type (YAML may give 1 for 1.0 or "1e-5" for a float)."""
    kind = type(f.default) if f.default is not MISSING else str
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"{f.name}: expected true/false, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{f.name}: expected {kind.__name__}, got {value!r}") from None
