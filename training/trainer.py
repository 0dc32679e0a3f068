"""The ControlNet training loop: locked SD base, trainable ControlNet copy, checkpoints, resume."""

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


def is_sdxl(base_model: str) -> bool:
    """True when the diffusers pipeline at ``base_model`` has SDXL's second text encoder."""
    from diffusers import DiffusionPipeline

    index = DiffusionPipeline.load_config(base_model)
    return "text_encoder_2" in index or "XL" in str(index.get("_class_name", ""))


def load_base(base_model: str, dtype=None) -> dict:
    """Tokenizer(s), text encoder(s), VAE, U-Net and DDPM noise scheduler of an SD 1.x/2.x or
    SDXL diffusers folder/hub id; ``sdxl`` says which."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    parts = {
        "sdxl": is_sdxl(base_model),
        "tokenizer": CLIPTokenizer.from_pretrained(base_model, subfolder="tokenizer"),
        "text_encoder": CLIPTextModel.from_pretrained(base_model, subfolder="text_encoder"),
        "vae": AutoencoderKL.from_pretrained(base_model, subfolder="vae"),
        "unet": UNet2DConditionModel.from_pretrained(base_model, subfolder="unet"),
        "noise_scheduler": DDPMScheduler.from_pretrained(base_model, subfolder="scheduler"),
    }
    locked = ["text_encoder", "vae", "unet"]
    if parts["sdxl"]:
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(base_model, subfolder="tokenizer_2")
        parts["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
            base_model, subfolder="text_encoder_2"
        )
        locked.append("text_encoder_2")
    for name in locked:
        parts[name].eval()
        parts[name].requires_grad_(False)
        if dtype is not None:
            parts[name].to(dtype)
    return parts


def token_ids(tokenizer, captions: list[str], device):
    """Token ids padded/truncated to the tokenizer's length (77 for SD's CLIP)."""
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def encode_prompts(tokenizer, text_encoder, captions: list[str], device):
    """CLIP last hidden states for captions, without an autograd graph."""
    import torch

    ids = token_ids(tokenizer, captions, device)
    with torch.no_grad():
        return text_encoder(ids)[0]


def encode_prompts_sdxl(tokenizers, text_encoders, captions: list[str], device):
    """SDXL text conditioning: penultimate hidden states of both encoders concatenated, and the
    second encoder's pooled projection (as diffusers' SDXL training scripts compute them)."""
    import torch

    states = []
    pooled = None
    with torch.no_grad():
        for tokenizer, encoder in zip(tokenizers, text_encoders, strict=True):
            out = encoder(token_ids(tokenizer, captions, device), output_hidden_states=True)
            pooled = out[0]
            states.append(out.hidden_states[-2])
    return torch.cat(states, dim=-1), pooled.reshape(len(captions), -1)


def sdxl_time_ids(batch: dict, resolution: int, device, dtype):
    """SDXL micro-conditioning per sample: original (h, w), crop top-left (y, x), target (h, w)."""
    import torch

    rows = [
        [*orig, *crop, resolution, resolution]
        for orig, crop in zip(batch["original_size"], batch["crop_top_left"], strict=True)
    ]
    return torch.tensor(rows, device=device, dtype=dtype)


def target_for(noise_scheduler, latents, noise, timesteps):
    """Regression target: the noise (epsilon) or the velocity (v_prediction)."""
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind}")


def sample_timesteps(kind: str, total: int, n: int, device):
    """Training timesteps: ``uniform``, or ``cubic`` (T2I-Adapter's bias toward high noise,
    where the layout a condition controls is decided)."""
    import torch

    if kind == "uniform":
        return torch.randint(0, total, (n,), device=device).long()
    if kind == "cubic":
        u = torch.rand(n, device=device)
        return ((1 - u**3) * total).long().clamp(0, total - 1)
    raise ValueError(f"unknown timestep sampling {kind!r} (uniform or cubic)")


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


class Trainer:
    """Holds the models and state of one run; ``train()`` runs to ``config.steps``."""

    def __init__(self, config: TrainConfig, device: str | None = None) -> None:
        import torch
        from diffusers import ControlNetModel

        from training.data import shard_urls, split_validation

        self.config = config
        self.run = Path(config.output)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.rank = int(os.environ.get("RANK", 0))
        self.train_urls, _ = split_validation(shard_urls(config.data), config.validation_shards)
        # per-rank seeds: ranks draw different noise; DDP broadcasts rank 0's weights anyway
        random.seed(config.seed + self.rank)
        np.random.seed(config.seed + self.rank)
        torch.manual_seed(config.seed + self.rank)
        base = load_base(config.base_model)
        self.sdxl = base["sdxl"]
        self.tokenizer = base["tokenizer"]
        self.tokenizer_2 = base.get("tokenizer_2")
        self.noise_scheduler = base["noise_scheduler"]
        self.weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
            config.mixed_precision
        ]
        cast = {} if self.weight_dtype == torch.float32 else {"dtype": self.weight_dtype}
        self.text_encoder = base["text_encoder"].to(self.device, **cast)
        self.text_encoder_2 = base.get("text_encoder_2")
        if self.text_encoder_2 is not None:
            self.text_encoder_2.to(self.device, **cast)
        self.vae = base["vae"].to(self.device, **cast)
        self.unet = base["unet"].to(self.device, **cast)
        self.controlnet = ControlNetModel.from_unet(
            base["unet"], conditioning_channels=self._channels()
        )
        self.controlnet.to(self.device).train()
        if cast:  # trainable weights stay fp32 under mixed precision
            self.controlnet.to(dtype=torch.float32)
        if config.gradient_checkpointing:
            self.controlnet.enable_gradient_checkpointing()
            self.unet.enable_gradient_checkpointing()
        self.optimizer = torch.optim.AdamW(self.controlnet.parameters(), lr=config.lr)
        warm = max(config.lr_warmup_steps, 0)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
        )
        self.ema = None
        if config.ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.controlnet.parameters(), decay=config.ema_decay)
        self.scaler = torch.amp.GradScaler(enabled=config.mixed_precision == "fp16")
        self.step = 0
        self.batches_consumed = 0
        self.dataset = None
        self.model = self.controlnet
        if self._world() > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.controlnet,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )

    @staticmethod
    def _world() -> int:
        import torch.distributed as dist

        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def _channels(self) -> int:
        """ControlNet input channels: 3 (one map as RGB), or the stacked maps' channel count."""
        from training.data import read_samples

        c = self.config
        sample = read_samples(c.data, c.conditions, c.resolution, 1, stack=c.stack_conditions,
                              urls=self.train_urls)  # fmt: skip
        if not sample:
            raise ValueError(f"no sample with maps {c.condition} in {c.data}")
        return int(sample[0]["conditioning"].shape[0])

    def text_conditioning(self, captions: list[str]) -> dict:
        """U-Net/ControlNet text inputs: ``encoder_hidden_states`` (+ SDXL pooled embeddings)."""
        if not self.sdxl:
            text = encode_prompts(self.tokenizer, self.text_encoder, captions, self.device)
            return {"encoder_hidden_states": text}
        text, pooled = encode_prompts_sdxl(
            [self.tokenizer, self.tokenizer_2], [self.text_encoder, self.text_encoder_2],
            captions, self.device,
        )  # fmt: skip
        return {"encoder_hidden_states": text, "text_embeds": pooled}

    # --- one step -------------------------------------------------------------------------
    def loss(self, batch: dict, control: bool = True):
        """Noise-prediction loss of the locked U-Net with ControlNet residuals on one batch.

        ``control=False`` runs the U-Net alone (the base without control, or a plain
        U-Net fine-tune in the speed benchmark)."""
        import torch
        import torch.nn.functional as F

        c = self.config
        pixels = batch["pixel_values"].to(self.device, self.weight_dtype)
        cond = batch["conditioning"].to(self.device, torch.float32)
        captions = ["" if random.random() < c.prompt_dropout else t for t in batch["caption"]]
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample()
            latents = latents * self.vae.config.scaling_factor
            text = self.text_conditioning(captions)
        hidden = text["encoder_hidden_states"]
        added = {}
        if self.sdxl:
            time_ids = sdxl_time_ids(batch, c.resolution, self.device, hidden.dtype)
            added = {
                "added_cond_kwargs": {"text_embeds": text["text_embeds"], "time_ids": time_ids}
            }
        noise = torch.randn_like(latents)
        timesteps = sample_timesteps(
            c.timestep_sampling, self.noise_scheduler.config.num_train_timesteps,
            latents.shape[0], self.device,
        )  # fmt: skip
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        autocast = self.config.mixed_precision != "no"
        with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=autocast):
            residuals = {}
            if control:
                added_fp32 = {
                    k: {n: t.float() for n, t in v.items()} for k, v in added.items()
                }  # the trainable copy runs in fp32 like its weights
                down, mid = self.model(
                    noisy.float(),
                    timesteps,
                    encoder_hidden_states=hidden.float(),
                    controlnet_cond=cond,
                    return_dict=False,
                    **added_fp32,
                )
                residuals = {
                    "down_block_additional_residuals": [r.to(self.weight_dtype) for r in down],
                    "mid_block_additional_residual": mid.to(self.weight_dtype),
                }
            pred = self.unet(
                noisy, timesteps, encoder_hidden_states=hidden, return_dict=False,
                **added, **residuals,
            )[0]  # fmt: skip
        target = target_for(self.noise_scheduler, latents, noise, timesteps)
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    # --- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """RUN/checkpoint-N: controlnet folder + training state (safetensors + JSON, no pickle);
        keeps the last K."""
        from pipeline.atomic import normal_modes
        from training.state import save_state

        folder = self.run / f"checkpoint-{self.step}"
        tmp = self.run / f".tmp-checkpoint-{self.step}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.controlnet.save_pretrained(tmp / "controlnet")
        state = {
            "step": self.step,
            "batches_consumed": self.batches_consumed,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": _rng_state(),
        }
        save_state(tmp, state)
        self.config.save(tmp / "config.json")
        if self.ema is not None:
            from diffusers import ControlNetModel

            ema_model = ControlNetModel.from_config(self.controlnet.config)
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
        self.controlnet.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = state["step"]
        self.batches_consumed = state["batches_consumed"]
        self._rng_after_skip = state["rng"]

    # --- loop -----------------------------------------------------------------------------
    def train(self) -> list[float]:
        """Run to ``config.steps``; returns the losses of the steps run in this call."""
        import time

        import torch

        from training.data import ShardDataset, make_loader
        from training.tracking import Tracker

        c = self.config
        self.run.mkdir(parents=True, exist_ok=True)
        self._rng_after_skip = None
        if c.resume:
            found = checkpoints(self.run) if c.resume == "latest" else [Path(c.resume)]
            if found:
                self.load_checkpoint(found[-1])
        c.save(self.run / "config.json")
        if self.rank == 0 and c.validate_every:
            from training.validate import validation_source

            if not validation_source(c)[2]:
                print("warning: validation samples come from the training shards; hold some out "
                      "with --validation-shards N or --validation-data", file=sys.stderr)  # fmt: skip
        self.dataset = ShardDataset(
            c.data, c.conditions, c.resolution, seed=c.seed, shuffle_buffer=c.shuffle_buffer,
            stack=c.stack_conditions, urls=self.train_urls,
        )  # fmt: skip
        batches = iter(make_loader(self.dataset, c.batch_size, c.loader_workers))
        for _ in range(self.batches_consumed):  # replay the deterministic stream to the position
            next(batches)
        if self._rng_after_skip is not None:
            _set_rng_state(self._rng_after_skip)
        losses = []
        log = open(self.run / "log.jsonl", "a") if self.rank == 0 else None
        self.tracker = Tracker(self.run, c) if self.rank == 0 else None
        bar = tqdm(total=c.steps, initial=self.step, desc="train", disable=self.rank != 0)
        samples_per_step = c.batch_size * c.grad_accum * self._world()
        try:
            while self.step < c.steps:
                started = time.perf_counter()
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for _ in range(c.grad_accum):
                    batch = next(batches)
                    self.batches_consumed += 1
                    loss = self.loss(batch) / c.grad_accum
                    self.scaler.scale(loss).backward()
                    total += float(loss.detach())
                self.scaler.unscale_(self.optimizer)
                grads = [p.grad for p in self.controlnet.parameters() if p.grad is not None]
                if c.max_grad_norm > 0:
                    norm = torch.nn.utils.clip_grad_norm_(grads, c.max_grad_norm)
                else:
                    norm = torch.linalg.vector_norm(
                        torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
                    )
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.lr_scheduler.step()
                if self.ema is not None:
                    self.ema.step(self.controlnet.parameters())
                self.step += 1
                if self._world() > 1:  # log the mean over ranks, not rank 0's share
                    total = _mean_over_ranks(total)
                losses.append(total)
                bar.update(1)
                bar.set_postfix(loss=f"{total:.4f}", refresh=False)
                if log:
                    rec = {
                        "step": self.step,
                        "loss": total,
                        "lr": self.lr_scheduler.get_last_lr()[0],
                        "grad_norm": float(norm),
                        "samples_per_s": samples_per_step / (time.perf_counter() - started),
                    }
                    if self.device.type == "cuda":
                        rec["peak_gpu_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
                    rec["skipped"] = int(batch["skipped"])
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    self.tracker.scalars(self.step, {f"train/{k}": v for k, v in rec.items()
                                                     if k != "step"})  # fmt: skip
                if self.rank == 0 and c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.rank == 0 and c.validate_every and self.step % c.validate_every == 0:
                    self.validate()
        finally:
            bar.close()
            if log:
                log.close()
            if self.tracker:
                self.tracker.close()
        if self.rank == 0 and (
            not checkpoints(self.run) or checkpoints(self.run)[-1].name != f"checkpoint-{self.step}"
        ):
            self.save_checkpoint()
        return losses

    def validate(self) -> Path | None:
        """Sample validation conditions and write a labelled grid (see training/validate.py)."""
        from training.validate import validate

        return validate(self)


def _mean_over_ranks(value: float) -> float:
    """Average a float over the process group (one small all-reduce)."""
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def _init_distributed() -> str | None:
    """Join the process group torchrun describes (RANK/WORLD_SIZE env); return the device."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return None
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}"
    dist.init_process_group("gloo")
    return "cpu"


def train(config: TrainConfig) -> list[float]:
    """Entry point used by the CLI (single process or one rank of torchrun / Ray Train)."""
    device = _init_distributed()
    return Trainer(config, device=device).train()


def train_on_ray(config: TrainConfig):
    """Run the same loop on ``config.ray_workers`` Ray Train workers (TorchTrainer, DDP inside).

    Data and run folder must be on storage all nodes see."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(address=config.address or None, ignore_reinit_error=True)

    def loop(cfg: dict) -> None:
        import torch
        from ray.train.torch import get_device

        device = get_device() if torch.cuda.is_available() else torch.device("cpu")
        Trainer(TrainConfig(**cfg), device=str(device)).train()

    from dataclasses import asdict

    trainer = TorchTrainer(
        loop,
        train_loop_config=asdict(config),
        scaling_config=ScalingConfig(num_workers=config.ray_workers, use_gpu=config.use_gpu),
        run_config=RunConfig(storage_path=str(Path(config.output).resolve() / "ray")),
    )
    return trainer.fit()
