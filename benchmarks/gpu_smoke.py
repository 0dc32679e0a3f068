"""GPU figures for every model family without downloads: each base at full size with random
weights, trained by ``hintset train`` (bf16) at 512 and 1024 px with and without gradient
checkpointing and the latent/text cache, beside diffusers' reference script at equal settings.

Run: ``python benchmarks/gpu_smoke.py [--models sd15,flux-dev] [--diffusers-examples DIR]``.
The full-size configs are the ``FULL`` table below (values of each base's published
``config.json``); the random bases are written once into ``--work``. DIR is diffusers'
``examples/controlnet`` folder (a clone of diffusers; the scripts are not in the pip package);
without it the diffusers columns stay empty. Without a CUDA GPU it says so and exits 0.

``--dry-run`` runs the same code on the CPU at tiny size (each family's tiny base, 64 px, 2
steps) and builds every full-size model of the table on the meta device to count its
parameters: a few seconds per family, run by tests/test_gpu_smoke.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import PHOTOS  # noqa: E402
from training.families import split_union  # noqa: E402  (the registry imports no torch)

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
              num_hidden_layers=12, max_position_embeddings=77, vocab_size=49408,
              hidden_act="quick_gelu", projection_dim=768)  # fmt: skip
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
              num_hidden_layers=32, max_position_embeddings=77, vocab_size=49408,
              hidden_act="gelu", projection_dim=1280)  # fmt: skip
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
              feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
              relative_attention_num_buckets=32, relative_attention_max_distance=128,
              layer_norm_epsilon=1e-6)  # fmt: skip
VAE_SD = dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32,
              down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
              in_channels=3, out_channels=3, latent_channels=4, act_fn="silu")  # fmt: skip
VAE_16 = dict(VAE_SD, latent_channels=16, sample_size=1024, use_quant_conv=False,
              use_post_quant_conv=False, force_upcast=True)  # fmt: skip


def sd35(hub: str, **transformer) -> dict:
    """An SD3.5 entry of ``FULL``: the parts medium and large share, and their transformer."""
    shared = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16,
                  attention_head_dim=64, joint_attention_dim=4096, pooled_projection_dim=2048,
                  qk_norm="rms_norm")  # fmt: skip
    return {
        "family": "sd3",
        "hub": hub,
        "components": {
            "transformer": ("diffusers:SD3Transformer2DModel", {**shared, **transformer}),
            "vae": (
                "diffusers:AutoencoderKL",
                dict(VAE_16, scaling_factor=1.5305, shift_factor=0.0609),
            ),
            "text_encoder": ("transformers:CLIPTextModelWithProjection", CLIP_L),
            "text_encoder_2": ("transformers:CLIPTextModelWithProjection", CLIP_G),
            "text_encoder_3": ("transformers:T5EncoderModel", T5_XXL),
        },
        "tokenizers": {"tokenizer": 77, "tokenizer_2": 77, "tokenizer_3": 512},
    }


#: full-size bases: name -> family, the hub id whose published config.json gives the values,
#: component -> (class, config), tokenizer -> model_max_length
FULL = {
    "sd15": {
        "family": "sd15",
        "hub": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "components": {
            "unet": ("diffusers:UNet2DConditionModel", dict(
                sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=[320, 640, 1280, 1280], attention_head_dim=8,
                down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                cross_attention_dim=768, norm_num_groups=32)),
            "vae": ("diffusers:AutoencoderKL", dict(VAE_SD, sample_size=512)),
            "text_encoder": ("transformers:CLIPTextModel", CLIP_L),
        },
        "tokenizers": {"tokenizer": 77},
    },
    "sdxl": {
        "family": "sdxl",
        "hub": "stabilityai/stable-diffusion-xl-base-1.0",
        "components": {
            "unet": ("diffusers:UNet2DConditionModel", dict(
                sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=[320, 640, 1280], attention_head_dim=[5, 10, 20],
                down_block_types=["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2,
                up_block_types=["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"],
                transformer_layers_per_block=[1, 2, 10], cross_attention_dim=2048,
                use_linear_projection=True, addition_embed_type="text_time",
                addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
                norm_num_groups=32)),
            "vae": ("diffusers:AutoencoderKL", dict(VAE_SD, sample_size=1024,
                                                    scaling_factor=0.13025, force_upcast=True)),
            "text_encoder": ("transformers:CLIPTextModel", CLIP_L),
            "text_encoder_2": ("transformers:CLIPTextModelWithProjection", CLIP_G),
        },
        "tokenizers": {"tokenizer": 77, "tokenizer_2": 77},
    },
    "sd3.5-medium": sd35("stabilityai/stable-diffusion-3.5-medium", num_layers=24,
                         num_attention_heads=24, caption_projection_dim=1536,
                         pos_embed_max_size=384, dual_attention_layers=list(range(13))),
    "sd3.5-large": sd35("stabilityai/stable-diffusion-3.5-large", num_layers=38,
                        num_attention_heads=38, caption_projection_dim=2432,
                        pos_embed_max_size=192, dual_attention_layers=[]),
    "flux-dev": {
        "family": "flux",
        "hub": "black-forest-labs/FLUX.1-dev",
        "components": {
            "transformer": ("diffusers:FluxTransformer2DModel", dict(
                patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=[16, 56, 56])),
            "vae": ("diffusers:AutoencoderKL", dict(VAE_16, scaling_factor=0.3611,
                                                    shift_factor=0.1159)),
            "text_encoder": ("transformers:CLIPTextModel", CLIP_L),
            "text_encoder_2": ("transformers:T5EncoderModel", T5_XXL),
        },
        "tokenizers": {"tokenizer": 77, "tokenizer_2": 512},
    },
}  # fmt: skip
# union ControlNets on the same bases (xinsir's SDXL slots, InstantX's FLUX modes)
FULL["sdxl-union"] = {**FULL["sdxl"], "family": "sdxl-union"}
FULL["flux-dev-union"] = {**FULL["flux-dev"], "family": "flux-union"}


#: family -> diffusers' reference script in examples/controlnet and its data-folder option
REFERENCE = {
    "sd15": ("train_controlnet.py", "--train_data_dir"),
    "sdxl": ("train_controlnet_sdxl.py", "--train_data_dir"),
    "sd3": ("train_controlnet_sd3.py", "--train_data_dir"),
    "flux": ("train_controlnet_flux.py", "--dataset_name"),
}

#: runs its target (a script + args) and prints this process's peak GPU memory at exit
PEAK_WRAPPER = """
import atexit, runpy, sys, torch
def report():
    if torch.cuda.is_available():
        print(f"PEAK_MB {torch.cuda.max_memory_allocated() / 2**20:.0f}", flush=True)
atexit.register(report)
target, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(target, run_name="__main__")
"""


def component_class(spec: str):
    """``"diffusers:UNet2DConditionModel"`` -> the class."""
    import importlib

    library, _, name = spec.partition(":")
    return getattr(importlib.import_module(library), name)


def build(spec: str, config: dict):
    """A randomly initialised model of ``spec`` with ``config`` (on the current default device)."""
    cls = component_class(spec)
    if spec.startswith("diffusers:"):
        return cls.from_config(config)
    return cls(cls.config_class(**config))


def unknown_keys(spec: str, config: dict) -> list[str]:
    """Keys of ``config`` the class does not take (a typo in the table would be dropped)."""
    import inspect

    cls = component_class(spec)
    if spec.startswith("diffusers:"):
        known = set(inspect.signature(cls.__init__).parameters)
    else:
        known = set(cls.config_class().to_dict())
    return sorted(set(config) - known)


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters of each full-size component of ``FULL[name]``, built on the meta device
    (no memory, no weights)."""
    from accelerate import init_empty_weights

    counts = {}
    for part, (spec, config) in FULL[name]["components"].items():
        bad = unknown_keys(spec, config)
        if bad:
            raise ValueError(f"{name}.{part}: {spec} takes no {', '.join(bad)}")
        with init_empty_weights():
            model = build(spec, config)
        if hasattr(model, "tie_weights"):  # T5's shared embedding: untied on the meta device
            model.tie_weights()
        counts[part] = sum(p.numel() for p in model.parameters())
    return counts


def write_random_base(name: str, folder: Path, *, full: bool, device: str = "cpu") -> Path:
    """The family's tiny base (tokenizers, scheduler, model_index.json) with every component of
    ``FULL[name]`` re-created with random weights in bf16: at the table's full size, or at the
    tiny base's own size (``full=False``: the dry run of the same code). Written once."""
    import torch
    from transformers import AutoConfig

    from training.tiny_base import TINY

    row = FULL[name]
    done = folder / ".complete"
    if done.exists():
        return folder
    TINY[split_union(row["family"])[0]](folder)
    for part, (spec, table) in row["components"].items():
        sub = folder / part
        if spec.startswith("diffusers:"):
            config = dict(component_class(spec).load_config(sub))
        else:
            config = AutoConfig.from_pretrained(sub).to_dict()
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        if full:
            config.update(table)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(device):
                model = build(spec, config)
        finally:
            torch.set_default_dtype(default)
        model.save_pretrained(sub)
        del model
        gc.collect()
    for tokenizer, length in row["tokenizers"].items() if full else ():
        path = folder / tokenizer / "tokenizer_config.json"
        if path.exists():
            cfg = json.loads(path.read_text())
            cfg["model_max_length"] = length
            path.write_text(json.dumps(cfg, indent=2))
    done.write_text("")
    return folder


def has_cache_option() -> bool:
    """Whether ``hintset train`` has ``--cache`` (the cached-latents column)."""
    from training.config import TrainConfig

    return "cache" in {f.name for f in fields(TrainConfig)}


def train_once(
    base: Path,
    family: str,
    data: Path,
    run: Path,
    *,
    resolution: int,
    steps: int,
    batch: int,
    checkpointing: bool,
    cache: Path | None,
    device: str | None,
) -> dict:
    """``hintset train`` in this process; steps/s (median of the steps after the first two,
    or of all when there are fewer) and peak GPU memory from its log.jsonl."""
    import torch

    from training.config import TrainConfig
    from training.trainer import Trainer

    family, union = split_union(family)
    options = dict(data=str(data), condition="canny", base_model=str(base), family=family,
                   union=union,
                   output=str(run), steps=steps, batch_size=batch, lr=1e-5,
                   resolution=resolution, mixed_precision="bf16",
                   gradient_checkpointing=checkpointing, checkpoint_every=0, keep_checkpoints=1,
                   report_to="none", shuffle_buffer=8)  # fmt: skip
    if cache is not None:
        options["cache"] = str(cache)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer = Trainer(TrainConfig(**options), device=device)
    trainer.train()
    wall = time.perf_counter() - started
    del trainer
    gc.collect()
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    rates = sorted(r["samples_per_s"] / batch for r in (log[2:] or log))
    peaks = [r["peak_gpu_mb"] for r in log if "peak_gpu_mb" in r]
    return {"steps_per_s": rates[len(rates) // 2], "wall_s": wall,
            "peak_mb": max(peaks) if peaks else None}  # fmt: skip


def reference_run(
    script: Path,
    data_flag: str,
    base: Path,
    data: Path,
    out: Path,
    *,
    resolution: int,
    steps: int,
    batch: int,
    checkpointing: bool,
) -> dict:
    """diffusers' script at the same settings, in a fresh process: wall steps/s (load
    included) and its peak GPU memory."""
    wrapper = out.parent / "peak_wrapper.py"
    wrapper.write_text(PEAK_WRAPPER)
    cmd = [sys.executable, str(wrapper), str(script), "--pretrained_model_name_or_path",
           str(base), "--output_dir", str(out), data_flag, str(data / "shards"),
           "--image_column", "jpg", "--conditioning_image_column", "canny.png",
           "--caption_column", "txt", "--resolution", str(resolution), "--train_batch_size",
           str(batch), "--max_train_steps", str(steps), "--learning_rate", "1e-5",
           "--mixed_precision", "bf16", "--checkpointing_steps", "1000000", "--seed", "0",
           *(["--gradient_checkpointing"] if checkpointing else [])]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    peaks = [float(x.split()[1]) for x in done.stdout.splitlines() if x.startswith("PEAK_MB")]
    return {"steps_per_s": steps / seconds, "peak_mb": max(peaks) if peaks else None}


def build_data(work: Path, resolution: int) -> Path:
    """A canny build of the repo's photos at ``resolution`` (made once in ``work``)."""
    data = work / f"data-{resolution}"
    if not (data / "manifest.json").exists():
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "pipeline", "build", str(PHOTOS), "-o", str(data),
                        "-a", "canny", "--resolution", str(resolution), "-q"],
                       check=True, env=env)  # fmt: skip
    return data


def families_to_run(names: list[str]) -> tuple[list[str], list[str]]:
    """(models of ``FULL`` to run, one line per model skipped): a model runs when its family is
    registered in training/families and has a tiny-base writer in training/tiny_base.TINY."""
    from training.families import FAMILIES
    from training.tiny_base import TINY

    run, skipped = [], []
    for name in names:
        family = FULL[name]["family"]
        if family not in FAMILIES:
            skipped.append(f"{name}: family {family} is not registered in training/families")
        elif split_union(family)[0] not in TINY:
            skipped.append(f"{name}: no tiny-base writer for {family} in training/tiny_base.TINY")
        else:
            run.append(name)
    return run, skipped


def fmt(value, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(FULL),
                        help=f"comma separated, of: {', '.join(FULL)}")  # fmt: skip
    parser.add_argument("--resolutions", default="512,1024")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--diffusers-examples", type=Path,
                        default=os.environ.get("DIFFUSERS_CONTROLNET_EXAMPLES"),
                        help="diffusers' examples/controlnet folder")  # fmt: skip
    parser.add_argument("--data", type=Path, help="a build with canny maps (default: built here)")
    parser.add_argument("--work", type=Path, help="folder for bases, data and runs")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, tiny bases, 64 px, 2 steps; count full-size parameters")  # fmt: skip
    args = parser.parse_args(argv)

    import torch

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(FULL))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(FULL)})")
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_smoke: skipped (no CUDA GPU)")  # --dry-run: the tiny CPU version
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="hintset-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        resolutions, steps, batch, device = [64], 2, 1, "cpu"
    else:
        resolutions = [int(r) for r in args.resolutions.split(",")]
        steps, batch, device = args.steps, args.batch_size, None
    runnable, skipped = families_to_run(names)
    for line in skipped:
        print(f"skipped {line}")
    caches = [False, True] if has_cache_option() else [False]
    rows = []
    for name in runnable:
        family = FULL[name]["family"]
        counts = parameter_counts(name)
        print(f"{name}: full-size parameters " + ", ".join(f"{k} {v / 1e6:.1f}M"
                                                           for k, v in counts.items()))  # fmt: skip
        base = write_random_base(name, work / f"{'tiny' if args.dry_run else 'full'}-{name}",
                                 full=not args.dry_run, device="cpu" if args.dry_run else "cuda")  # fmt: skip
        for res in resolutions:
            data = args.data or build_data(work, res)
            for checkpointing in (False, True):
                for cached in caches if not split_union(family)[1] else [False]:
                    tag = f"{name}-{res}-gc{int(checkpointing)}-cache{int(cached)}"
                    cache = work / f"cache-{name}-{res}" if cached else None
                    if cached and not args.dry_run:  # fill the cache first: measure reuse
                        train_once(base, family, data, work / f"fill-{tag}", resolution=res,
                                   steps=1, batch=batch, checkpointing=checkpointing,
                                   cache=cache, device=device)  # fmt: skip
                    got = train_once(base, family, data, work / f"run-{tag}", resolution=res,
                                     steps=steps, batch=batch, checkpointing=checkpointing,
                                     cache=cache, device=device)  # fmt: skip
                    ref = {}
                    script = REFERENCE.get(family)
                    if args.diffusers_examples and script and not cached and not args.dry_run:
                        ref = reference_run(args.diffusers_examples / script[0], script[1], base,
                                            data, work / f"diffusers-{tag}", resolution=res,
                                            steps=steps, batch=batch,
                                            checkpointing=checkpointing)  # fmt: skip
                    rows.append((name, res, checkpointing, cached, got, ref))
    where = "CPU dry run (tiny bases)" if args.dry_run else torch.cuda.get_device_name(0)
    print(f"\n{where}; bf16, batch {batch}, {steps} steps; steps/s = median per step after 2\n")
    print("| model | px | grad. ckpt | cache | steps/s | peak GPU MB | diffusers steps/s "
          "(wall) | diffusers peak GPU MB |")  # fmt: skip
    print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |")
    cache_cell = {True: "yes", False: "no" if len(caches) > 1 else "n/a"}
    for name, res, checkpointing, cached, got, ref in rows:
        refs = (ref.get("error", fmt(ref.get("steps_per_s"))), fmt(ref.get("peak_mb"), "{:.0f}"))
        print(f"| {name} | {res} | {'yes' if checkpointing else 'no'} | {cache_cell[cached]} | "
              f"{fmt(got['steps_per_s'])} | {fmt(got['peak_mb'], '{:.0f}')} | {refs[0]} | "
              f"{refs[1]} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
