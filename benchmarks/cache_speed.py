"""Training with and without the cache of latents and text embeddings (``hintset cache``,
``hintset train --cache``): s/step, samples/s and peak memory, each mode in its own process.

Writes a base (``--size tiny``: the test base; ``small``: SD 1.5's real CLIP-L text encoder and
VAE with a small U-Net, so what the cache removes has its real cost; ``full``: SD 1.5's real
sizes, for a GPU), builds shards of the 20 repo photos with ``hintset build``, fills the cache
with ``hintset cache`` (timed), then runs ``--steps`` steps uncached (``--crop centre``, the rule
the cache stores) and cached through the same loop. Memory: peak RSS (CPU) and
``torch.cuda.max_memory_allocated`` (CUDA).

    flock /tmp/bench.lock python benchmarks/cache_speed.py [--size small] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PHOTOS, run_hintset

#: U-Net widths, text encoder (hidden, layers, heads, ffn) and VAE widths per --size
SIZES = {
    "small": ((64, 128, 256), (768, 12, 12, 3072), (128, 256, 512, 512)),
    "full": ((320, 640, 1280, 1280), (768, 12, 12, 3072), (128, 256, 512, 512)),
}


def write_base(folder: Path, size: str, family: str) -> Path:
    """A random base of ``size``: the test writer (tiny), or SD 1.5's real text encoder and VAE
    configurations (vocabulary 49408, 77 positions) with a small or full U-Net."""
    from training.tiny_base import TINY

    if size == "tiny":
        return TINY[family](folder, seed=0)
    if family == "flux" and size == "small":
        return write_small_flux(folder)
    if family != "sd15":
        raise SystemExit(f"--size {size}: sd15 (small, full) or flux (small) only")
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from training.tiny_base import SCHEDULER, tiny_vae, write_tokenizer

    torch.manual_seed(0)
    unet_w, (hidden, layers, heads, ffn), vae_w = SIZES[size]
    write_tokenizer(folder / "tokenizer")
    tok = CLIPTokenizer(str(folder / "tokenizer" / "vocab.json"),
                        str(folder / "tokenizer" / "merges.txt"), model_max_length=77)  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))  # fmt: skip
    n = len(unet_w)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=unet_w, cross_attention_dim=hidden, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
    )  # fmt: skip
    vae = tiny_vae(vae_w)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
        scheduler=DDPMScheduler(**SCHEDULER, clip_sample=False), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM: reset at exec, unlike ru_maxrss, which a
    child inherits from the parent that wrote the base)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_small_flux(folder: Path) -> Path:
    """FLUX with SD's real CLIP-L, a T5 of 1024 width and 12 layers (T5-XXL: 4096 and 24) read at
    128 tokens (FLUX.1-dev: 512), the real 16-channel VAE widths and a small transformer: the
    encoders the cache removes at a size a CPU runs in minutes."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    from training.tiny_base import FLUX_SCHEDULER, write_t5_tokenizer, write_tokenizer

    torch.manual_seed(0)
    write_tokenizer(folder / "tokenizer")
    tok = CLIPTokenizer(str(folder / "tokenizer" / "vocab.json"),
                        str(folder / "tokenizer" / "merges.txt"), model_max_length=77)  # fmt: skip
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))  # fmt: skip
    tok_2 = write_t5_tokenizer(folder / "tokenizer_2", max_length=128)
    t5 = T5EncoderModel(T5Config(
        vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=12, num_heads=16,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False,
    ))  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), shift_factor=0.1159, scaling_factor=0.3611,
        use_quant_conv=False, use_post_quant_conv=False,
    )  # fmt: skip
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=64,
        num_attention_heads=4, joint_attention_dim=1024, pooled_projection_dim=768,
        guidance_embeds=True, axes_dims_rope=[16, 24, 24],
    )  # fmt: skip
    FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=vae, text_encoder=clip,
        tokenizer=tok, text_encoder_2=t5, tokenizer_2=tok_2, transformer=transformer,
    ).save_pretrained(folder)  # fmt: skip
    return folder


def measure(a) -> dict:
    """One mode in this process: load, run 1 + ``steps`` steps, time the last ``steps``."""
    import torch

    from training.config import TrainConfig
    from training.trainer import Trainer

    out = Path(tempfile.mkdtemp())
    cfg = TrainConfig(
        data=a.data, condition="canny", base_model=a.base, output=str(out), steps=a.steps + 1,
        batch_size=a.batch_size, resolution=a.resolution, checkpoint_every=0, shuffle_buffer=8,
        crop="centre", cache=a.cache if a.mode == "cached" else "", report_to="none",
        mixed_precision=a.mixed_precision,
    )  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trainer = Trainer(cfg, device=device)
    loaded = peak_rss_mb()
    trainer.train()
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()][1:]
    per_step = sum(a.batch_size / r["samples_per_s"] for r in recs) / len(recs)
    text = [n for n in trainer.family.TEXT if getattr(trainer.family, n) is not None]
    return {
        "mode": a.mode,
        "s_per_step": per_step,
        "samples_per_s": a.batch_size / per_step,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_load_mb": loaded,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "text_encoders_loaded": text,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="sd15")
    ap.add_argument("--size", choices=["tiny", "small", "full"], default="small")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    ap.add_argument("--work", default="", help="folder for base, shards, cache (default: temp)")
    ap.add_argument("--mode", choices=["plain", "cached"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:  # a child: one mode, one JSON line
        print(json.dumps(measure(a)))
        return
    work = Path(a.work or tempfile.mkdtemp(prefix="cache-speed-"))
    base = work / f"base-{a.family}-{a.size}"
    if not (base / "model_index.json").exists():
        write_base(base, a.size, a.family)
    data = work / f"data-{a.resolution}"
    if not (data / "manifest.json").exists():
        run_hintset("build", str(PHOTOS), "-o", str(data), "--annotators", "canny",
                    "--resolution", str(a.resolution), "--workers", "1")  # fmt: skip
    cache = work / f"cache-{a.family}-{a.size}-{a.resolution}-{a.mixed_precision}"
    start = time.perf_counter()
    fill = run_hintset("cache", "--data", str(data), "--base-model", str(base), "--condition",
                       "canny", "-o", str(cache), "--resolution", str(a.resolution),
                       "--mixed-precision", a.mixed_precision, "--batch-size", str(a.batch_size))  # fmt: skip
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20
    print(f"cache: {fill:.1f} s wall (process start included, {time.perf_counter() - start:.1f} s "
          f"total), {size:.1f} MB on disk for 20 samples")  # fmt: skip
    rows = []
    for mode in ("plain", "cached"):
        child = [sys.executable, __file__, *sys.argv[1:], "--mode", mode, "--data", str(data),
                 "--base", str(base), "--cache", str(cache)]  # fmt: skip
        line = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(line.strip().splitlines()[-1]))
    print(f"{a.family} --size {a.size}, batch {a.batch_size} @ {a.resolution} px, "
          f"precision {a.mixed_precision}, {a.steps} timed steps")  # fmt: skip
    print(
        "| mode | s/step | samples/s | peak RSS MB | RSS after load MB | peak CUDA MB | text encoders |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cuda = f"{r['peak_cuda_mb']:.0f}" if r["peak_cuda_mb"] is not None else "-"
        print(f"| {r['mode']} | {r['s_per_step']:.3f} | {r['samples_per_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['rss_after_load_mb']:.0f} | {cuda} | "
              f"{', '.join(r['text_encoders_loaded']) or 'none'} |")  # fmt: skip


if __name__ == "__main__":
    main()
