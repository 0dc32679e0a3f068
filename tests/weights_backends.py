"""Test-only writers for the DSINE, Marigold and OneFormer COCO backends: random weights in the
published layouts (``dsine.pt`` at real size; tiny Marigold pipelines saved by diffusers'
``save_pretrained`` in the published folder layout; a tiny OneFormer with COCO's 133 classes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from annotators import coco, marigold
from annotators.dsine import DSINE_WEIGHTS, build_dsine

# tests.weights is imported inside the writers: its WRITERS holds this module's writers


def write_dsine(folder: Path, *, tiny: bool = False) -> list[Path]:
    """A random ``dsine.pt`` ({"model": state dict, "iter": n}, the authors' ``save_model``),
    real size (72.7M parameters)."""
    from tests.weights import random_state, write_state

    path = Path(folder) / DSINE_WEIGHTS.filename
    write_state(path, {"model": random_state(build_dsine), "iter": 0})
    return [path]


def write_oneformer_coco(folder: Path) -> list[Path]:
    """A random tiny OneFormer with COCO panoptic's 133 classes as ``folder/<hub id>/``."""
    from tests.weights import write_oneformer

    repo = next(iter(s for s in _seg_models() if "coco" in s))
    return write_oneformer(folder, repo_id=repo, classes=coco.CLASSES, seed=1)  # regions vary


def _seg_models() -> list[str]:
    from annotators import seg

    return [spec.repo_id for spec in seg.MODELS.values()]


def marigold_pipeline(task: str, folder: Path, seed: int = 0) -> Any:
    """A tiny random Marigold pipeline (the published classes: UNet2DConditionModel with 8 input
    channels, AutoencoderKL, CLIP text encoder and tokenizer, DDIM with trailing timesteps)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        MarigoldDepthPipeline,
        MarigoldNormalsPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.weights import clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=8, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=2, norm_num_groups=4,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=32,
    )  # fmt: skip
    tokenizer = clip_tokenizer(Path(folder) / "_vocab")
    tokenizer.model_max_length = 77  # as SD 2's tokenizer_config.json
    text = CLIPTextModel(CLIPTextConfig(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
        vocab_size=len(tokenizer), projection_dim=16, max_position_embeddings=77,
    ))  # fmt: skip
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        set_alpha_to_one=False, prediction_type="v_prediction", timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
    )  # fmt: skip
    parts = {"unet": unet, "vae": vae, "scheduler": scheduler, "text_encoder": text,
             "tokenizer": tokenizer}  # fmt: skip
    if task == "depth":
        return MarigoldDepthPipeline(**parts, prediction_type="depth", scale_invariant=True,
                                     shift_invariant=True, default_denoising_steps=4,
                                     default_processing_resolution=768)  # fmt: skip
    return MarigoldNormalsPipeline(**parts, prediction_type="normals", use_full_z_range=True,
                                   default_denoising_steps=4, default_processing_resolution=768)  # fmt: skip


def write_marigold(folder: Path, *, tiny: bool = True) -> list[Path]:
    """Tiny random Marigold depth and normals pipelines as ``folder/<hub id>/``, written by
    ``save_pretrained`` (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/);
    always tiny (``tiny=False`` too: the real pipeline has about 1.3B parameters)."""
    import shutil

    written = []
    for models in (marigold.DEPTH_MODELS, marigold.NORMALS_MODELS):
        for spec in models.values():
            target = Path(folder) / spec.repo_id
            pipe = marigold_pipeline(spec.task, target)
            pipe.save_pretrained(str(target), safe_serialization=True)
            for name in ("vocab.json", "merges.txt"):  # as published (SD 2's CLIP tokenizer)
                shutil.copy(target / "_vocab" / name, target / "tokenizer" / name)
            shutil.rmtree(target / "_vocab")
            written += sorted(p for p in target.rglob("*") if p.is_file())
    return written
