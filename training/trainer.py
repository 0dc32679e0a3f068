"""The family-agnostic ControlNet training loop on accelerate: trainable ControlNet, locked base
(a family object from training/families), accumulation, clipping, EMA, checkpoints, exact resume."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.config import TrainConfig


def checkpoints(run: Path) -> list[Path]:
    """checkpoint-N folders of a run, oldest first."""
    found = [p for p in Path(run).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _rng_state() -> dict:
    """RNG states as tensors and plain values (stored without pickle, see training/state.py)."""
    import torch

    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(mt), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },  # fmt: skip
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


DTYPES = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}


def make_accelerator(config: TrainConfig, device: str | None):
    """The run's ``Accelerator`` (DDP/FSDP/DeepSpeed as ``accelerate launch`` or torchrun set it
    up); ``device="cpu"`` forces the CPU. A single process may build several in turn (tests):
    a previous one's precision is dropped then, which accelerate otherwise refuses."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != config.mixed_precision:
        if PartialState().num_processes == 1:
            AcceleratorState._reset_state()
    import torch

    # several processes without CUDA (torchrun, accelerate launch, Ray Train on CPUs): accelerate
    # needs cpu=True to join them with gloo instead of running each process alone
    spread = int(os.environ.get("WORLD_SIZE", 1)) > 1 and not torch.cuda.is_available()
    return Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        cpu=device == "cpu" or spread,
    )


class Trainer:
    """Holds the models and state of one run; ``train()`` runs to ``config.steps``."""

    def __init__(self, config: TrainConfig, device: str | None = None) -> None:
        import torch

        from training import families
        from training.data import shard_urls, split_validation

        self.config = config
        self.run = Path(config.output)
        self.accelerator = make_accelerator(config, device)
        self.device = self.accelerator.device
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.train_urls, _ = split_validation(shard_urls(config.data), config.validation_shards)
        # per-rank seeds: ranks draw different noise; DDP broadcasts rank 0's weights anyway
        random.seed(config.seed + self.rank)
        np.random.seed(config.seed + self.rank)
        torch.manual_seed(config.seed + self.rank)
        self.weight_dtype = getattr(torch, DTYPES[config.mixed_precision])
        family = "" if config.family == "auto" else config.family
        self.cache = self._open_cache(family)
        self.family = families.create(config.base_model, self.device, self.weight_dtype, family,
                                      union=config.union, text=self.cache is None)  # fmt: skip
        controlnet = self.family.make_controlnet(self._channels())
        controlnet.to(self.device).train()
        if self.weight_dtype != torch.float32:  # trainable weights stay fp32 under mixed precision
            controlnet.to(torch.float32)
        if config.gradient_checkpointing:
            controlnet.enable_gradient_checkpointing()
            self.family.enable_gradient_checkpointing()
        optimizer = torch.optim.AdamW(controlnet.parameters(), lr=config.lr)
        self.controlnet = controlnet  # the module itself; self.model may wrap it (DDP, FSDP)
        self.model, self.optimizer = self.accelerator.prepare(controlnet, optimizer)
        warm = max(config.lr_warmup_steps, 0)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
        )  # stepped once per optimiser step here, not once per rank as accelerate's wrapper does
        self.ema = None
        if config.ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.controlnet.parameters(), decay=config.ema_decay)
        self.step = 0
        self.batches_consumed = 0
        self.dataset = None

    def _open_cache(self, family: str):
        """The run's cache (``--cache``), filled where it lacks this rank's share of the
        training shards, the empty prompt or the validation captions; None without one."""
        if not self.config.cache:
            return None
        from training import families
        from training.cache import Cache, fill
        from training.validate import read_validation

        c = self.config
        family = family or families.detect(c.base_model)
        cache = Cache(c.cache, c, family)
        mine = self.train_urls[self.rank :: self.world]
        captions = [""]
        if c.validate_every and self.rank == 0:
            captions += [s["caption"] for s in read_validation(c, c.num_validation)]
        fill(cache, lambda: families.create(c.base_model, self.device, self.weight_dtype, family),
             mine, captions, batch_size=c.batch_size,
             log=print if self.accelerator.is_main_process else lambda *_: None)  # fmt: skip
        self.accelerator.wait_for_everyone()
        return cache

    def _channels(self) -> int:
        """ControlNet input channels: 3 (one map as RGB; each map of a union), or the stacked
        maps' channel count."""
        from training.data import read_samples

        c = self.config
        sample = read_samples(c.data, c.conditions, c.resolution, 1, stack=c.stack_conditions,
                              urls=self.train_urls, union=c.union)  # fmt: skip
        if not sample:
            raise ValueError(f"no sample with maps {c.condition} in {c.data}")
        return int(sample[0]["conditioning"].shape[-3])  # union: (maps, 3, H, W)

    # --- one step -------------------------------------------------------------------------
    def loss(self, batch: dict, control: bool = True):
        """The family's loss on one batch, with prompt dropout applied to the captions."""
        from training.draws import Draws

        draws = Draws(self.config.seed, self.step, batch["key"])
        keep = (draws.rand() >= self.config.prompt_dropout).tolist()
        if "encoded" in batch:  # from the cache: dropped samples get the empty prompt's text
            encoded = self.cache.with_dropout(batch["encoded"], keep, self.device)
            return self.family.loss_from(self.model, encoded, self.config, draws, control=control)
        captions = [t if k else "" for t, k in zip(batch["caption"], keep, strict=True)]
        return self.family.loss(self.model, batch, captions, self.config, draws, control=control)

    # --- checkpoints ----------------------------------------------------------------------
    def _fsdp(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.FSDP

    def _optimizer_state(self) -> dict:
        """The whole optimiser state (under FSDP gathered from the shards: a collective call)."""
        if self._fsdp():
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            return FSDP.optim_state_dict(self.model, self.optimizer.optimizer)
        return self.optimizer.state_dict()

    def _load_optimizer_state(self, saved: dict) -> None:
        """The inverse of ``_optimizer_state`` (under FSDP each rank takes its shard)."""
        if self._fsdp():
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            saved = FSDP.optim_state_dict_to_load(self.model, self.optimizer.optimizer, saved)
        self.optimizer.load_state_dict(saved)

    def save_checkpoint(self) -> Path:
        """RUN/checkpoint-N: controlnet folder + training state (safetensors + JSON, no pickle);
        keeps the last K. Called on every rank: under FSDP/DeepSpeed the full weights are
        gathered from all of them (``accelerator.get_state_dict``); the main process writes."""
        from pipeline.atomic import normal_modes
        from training.state import save_state

        folder = self.run / f"checkpoint-{self.step}"
        weights = self.accelerator.get_state_dict(self.model)  # collective under FSDP/ZeRO-3
        optimizer = self._optimizer_state()
        if not self.accelerator.is_main_process:
            return folder
        tmp = self.run / f".tmp-checkpoint-{self.step}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.controlnet.save_pretrained(tmp / "controlnet", state_dict=weights)
        scaler = self.accelerator.scaler
        state = {
            "step": self.step,
            "batches_consumed": self.batches_consumed,
            "optimizer": optimizer,
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": _rng_state(),
        }
        save_state(tmp, state)
        self.config.save(tmp / "config.json")
        if self.ema is not None:
            ema_model = type(self.controlnet).from_config(self.controlnet.config)
            self.ema.copy_to(ema_model.parameters())
            ema_model.save_pretrained(tmp / "controlnet_ema")
        normal_modes(tmp)  # diffusers and safetensors write 0600; checkpoints follow the umask
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        for old in checkpoints(self.run)[: -self.config.keep_checkpoints or None]:
            shutil.rmtree(old)
        return folder

    def load_checkpoint(self, folder: Path) -> None:
        """Restore weights, optimiser, scheduler, EMA, RNG, step and data position."""
        from safetensors.torch import load_file

        from training.state import load_state

        state = load_state(folder)  # first: refuses a pickled state before anything else
        weights = load_file(str(folder / "controlnet" / "diffusion_pytorch_model.safetensors"))
        (self.model if self._fsdp() else self.controlnet).load_state_dict(weights)
        self._load_optimizer_state(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.accelerator.scaler is not None and state["scaler"]:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = state["step"]
        self.batches_consumed = state["batches_consumed"]
        self._rng_after_skip = state["rng"]

    # --- loop -----------------------------------------------------------------------------
    def _optimizer_step(self, batches) -> tuple[float, float, dict]:
        """One optimiser step over ``grad_accum`` batches: (mean loss, grad norm before
        clipping, last batch)."""
        c = self.config
        acc = self.accelerator
        total, norm = 0.0, 0.0
        self.optimizer.zero_grad(set_to_none=True)  # at the start: the grads stay inspectable
        for _ in range(c.grad_accum):
            batch = next(batches)
            self.batches_consumed += 1
            with acc.accumulate(self.model):
                loss = self.loss(batch)
                acc.backward(loss)  # divided by grad_accum inside
                total += float(loss.detach()) / c.grad_accum
                if acc.sync_gradients:
                    # an infinite limit measures the norm without clipping
                    limit = c.max_grad_norm if c.max_grad_norm > 0 else float("inf")
                    norm = float(acc.clip_grad_norm_(self.model.parameters(), limit))
                self.optimizer.step()  # a no-op until the last batch of the step
        self.lr_scheduler.step()
        if self.ema is not None:
            self.ema.step(self.controlnet.parameters())
        if self.world > 1:  # log the mean over ranks, not rank 0's share
            import torch

            total = float(acc.reduce(torch.tensor([total], device=self.device), "mean"))
        return total, norm, batch

    def train(self) -> list[float]:
        """Run to ``config.steps``; returns the losses of the steps run in this call."""
        import time

        import torch

        from training.data import ShardDataset, make_loader
        from training.tracking import Tracker

        c = self.config
        main = self.accelerator.is_main_process
        self.run.mkdir(parents=True, exist_ok=True)
        self._rng_after_skip = None
        if c.resume:
            found = checkpoints(self.run) if c.resume == "latest" else [Path(c.resume)]
            if found:
                c.check_resume(found[-1])
                self.load_checkpoint(found[-1])
        if main:
            c.save(self.run / "config.json")
        if main and c.validate_every:
            from training.validate import validation_source

            if not validation_source(c)[2]:
                print("warning: validation samples come from the training shards; hold some out "
                      "with --validation-shards N or --validation-data", file=sys.stderr)  # fmt: skip
        args = dict(seed=c.seed, shuffle_buffer=c.shuffle_buffer, stack=c.stack_conditions,
                    urls=self.train_urls, max_bad_fraction=c.max_bad_fraction,
                    order=c.data_order, batch_size=c.batch_size, union=c.union)  # fmt: skip
        collate = None
        if self.cache is not None:
            from training.cache import CachedDataset, collate_cached

            self.dataset = CachedDataset(self.cache, c.data, c.conditions, c.resolution, **args)
            collate = collate_cached
        else:
            self.dataset = ShardDataset(c.data, c.conditions, c.resolution, crop=c.crop, **args)
        batches = iter(make_loader(self.dataset, c.batch_size, c.loader_workers, collate))
        for _ in range(self.batches_consumed):  # replay the deterministic stream to the position
            next(batches)
        if self._rng_after_skip is not None:
            _set_rng_state(self._rng_after_skip)
        losses = []
        log = open(self.run / "log.jsonl", "a") if main else None
        self.tracker = Tracker(self.run, c) if main else None
        bar = tqdm(total=c.steps, initial=self.step, desc="train", disable=not main)
        samples_per_step = c.batch_size * c.grad_accum * self.world
        try:
            while self.step < c.steps:
                started = time.perf_counter()
                total, norm, batch = self._optimizer_step(batches)
                self.step += 1
                losses.append(total)
                bar.update(1)
                bar.set_postfix(loss=f"{total:.4f}", refresh=False)
                if log:
                    rec = {
                        "step": self.step,
                        "loss": total,
                        "lr": self.lr_scheduler.get_last_lr()[0],
                        "grad_norm": norm,
                        "samples_per_s": samples_per_step / (time.perf_counter() - started),
                        "processes": self.world,
                    }
                    if self.device.type == "cuda":
                        rec["peak_gpu_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
                    rec["skipped"] = int(batch["skipped"])
                    rec["bad_samples"] = int(batch["bad"])
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    self.tracker.scalars(self.step, {f"train/{k}": v for k, v in rec.items()
                                                     if k != "step"})  # fmt: skip
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.save_checkpoint()  # on every rank (FSDP gathers the weights)
                if main and c.validate_every and self.step % c.validate_every == 0:
                    self.validate()
        finally:
            bar.close()
            if log:
                log.close()
            if self.tracker:
                self.tracker.close()
        if c.checkpoint_every == 0 or self.step % c.checkpoint_every:
            self.save_checkpoint()  # the final state, unless the loop has just written it
        self.accelerator.wait_for_everyone()
        return losses

    def validate(self) -> Path | None:
        """Sample validation conditions and write a labelled grid (see training/validate.py)."""
        from training.validate import validate

        return validate(self)


def train(config: TrainConfig) -> list[float]:
    """Entry point used by the CLI (one process, or one rank of accelerate launch / torchrun /
    Ray Train)."""
    return Trainer(config).train()


def train_on_ray(config: TrainConfig):
    """Run the same loop on ``config.ray_workers`` Ray Train workers (TorchTrainer, DDP inside).

    Data and run folder must be on storage all nodes see."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(address=config.address or None, ignore_reinit_error=True)

    def loop(cfg: dict) -> None:
        import torch

        Trainer(TrainConfig(**cfg), device=None if torch.cuda.is_available() else "cpu").train()

    from dataclasses import asdict

    trainer = TorchTrainer(
        loop,
        train_loop_config=asdict(config),
        scaling_config=ScalingConfig(num_workers=config.ray_workers, use_gpu=config.use_gpu),
        run_config=RunConfig(storage_path=str(Path(config.output).resolve() / "ray")),
    )
    return trainer.fit()
