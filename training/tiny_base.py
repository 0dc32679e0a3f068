"""A tiny random Stable Diffusion in diffusers layout, so the whole training path runs on a CPU."""

from __future__ import annotations

import json
from pathlib import Path


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins for bytes that CLIP's byte-level BPE uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


#: Words that get whole-word tokens (other text falls back to one token per character).
WORDS = ("the", "a", "of", "on", "photo", "background", "circle", "square", "triangle",
         "red", "green", "blue", "yellow", "cyan", "magenta", "orange", "purple", "white",
         "black", "gray")  # fmt: skip


def write_tokenizer(folder: Path, words: tuple[str, ...] = WORDS) -> None:
    """Write a small CLIP BPE vocabulary (bytes, byte+</w>, merges for ``words``) built locally."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab_list = chars + [c + "</w>" for c in chars]
    merges = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            merged = parts[0] + parts[1]
            if merged not in vocab_list:
                vocab_list.append(merged)
            parts = [merged] + parts[2:]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    unique = list(dict.fromkeys(merges))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(unique) + "\n")


#: SD's noise schedule (both SD 1.x and SDXL train on it)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 num_train_timesteps=1000, steps_offset=1)  # fmt: skip


#: U-Net settings both tiny bases share (8x8 latents at 64 px)
UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=8)


def tiny_vae(channels: tuple[int, ...], **extra):
    """A small random VAE that downsamples 2 ** (len(channels) - 1) times, 4 latent channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        **extra,
    )


def write_tiny_base(
    folder: Path,
    *,
    prediction_type: str = "epsilon",
    seed: int = 0,
    unet_channels: tuple[int, ...] = (32, 64),
    vae_channels: tuple[int, ...] = (8, 8, 16, 16),
) -> Path:
    """Write U-Net, VAE, CLIP text encoder, tokenizer and DDPM scheduler; return the folder.

    The VAE downsamples 8x like SD's (ControlNet's condition encoder expects that); the
    U-Net has one attention level per channel entry except the last.
    """
    import torch
    from diffusers import (
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    write_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer(
        str(folder / "tokenizer" / "vocab.json"),
        str(folder / "tokenizer" / "merges.txt"),
        model_max_length=16,
    )
    text_cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = CLIPTextModel(text_cfg)
    unet = UNet2DConditionModel(
        **UNET,
        block_out_channels=unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (len(unet_channels) - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(unet_channels) - 1),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    vae = tiny_vae(vae_channels)
    scheduler = DDPMScheduler(**SCHEDULER, prediction_type=prediction_type, clip_sample=False)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def write_tiny_sdxl(
    folder: Path,
    *,
    prediction_type: str = "epsilon",
    seed: int = 0,
    unet_channels: tuple[int, ...] = (32, 64),
) -> Path:
    """Write a tiny random SDXL (two CLIP text encoders, the second with a projection; U-Net
    with ``text_time`` added conditioning) in diffusers layout; return the folder."""
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizers = []
    for sub in ("tokenizer", "tokenizer_2"):
        write_tokenizer(folder / sub)
        tokenizers.append(
            CLIPTokenizer(
                str(folder / sub / "vocab.json"),
                str(folder / sub / "merges.txt"),
                model_max_length=16,
            )  # fmt: skip
        )
    tok = tokenizers[0]
    text_cfg = dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, projection_dim=32,
    )  # fmt: skip
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg))
    time_dim = 8  # SDXL: 256; six numbers (original h, w, crop y, x, target h, w)
    unet = UNet2DConditionModel(
        **UNET,
        block_out_channels=unet_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(unet_channels) - 1) + ("UpBlock2D",),
        transformer_layers_per_block=(1,) + (2,) * (len(unet_channels) - 1),
        cross_attention_dim=64,  # both encoders' hidden states side by side: 32 + 32
        attention_head_dim=tuple(c // 8 for c in unet_channels),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + 32,  # + pooled projection
    )
    vae = tiny_vae((8, 8, 16, 16), scaling_factor=0.13025)  # SDXL's VAE scaling factor
    scheduler = EulerDiscreteScheduler(
        **SCHEDULER, prediction_type=prediction_type, timestep_spacing="leading"
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1],
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder)
    return folder


def write_t5_tokenizer(folder: Path, words: tuple[str, ...] = WORDS, max_length: int = 32):
    """Write a small T5 (SentencePiece Unigram) tokenizer built locally: <pad> 0, </s> 1, <unk> 2,
    whole-word pieces for ``words`` and one piece per letter and digit; returns it."""
    import string

    from transformers import T5TokenizerFast

    pieces = [f"\u2581{w}" for w in words] + ["\u2581"]
    pieces += list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, -1.0 - len(p) / 10 if p.startswith("\u2581") else -5.0) for p in pieces]
    tokenizer = T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=max_length)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_t5(tokenizer, d_model: int = 32):
    """A tiny random T5 encoder (the FLUX/SD3 prompt encoder's class) for ``tokenizer``."""
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return T5EncoderModel(cfg)


def tiny_clip(folder: Path, projection: bool = False):
    """(tokenizer, CLIP text encoder) written to / built for ``folder``; ``projection`` gives
    the ``CLIPTextModelWithProjection`` SDXL's and SD3's second encoders are."""
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    write_tokenizer(folder)
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    cfg = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, projection_dim=32,
    )  # fmt: skip
    return tok, (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


#: FLUX.1's scheduler (dev and schnell): shift resolution-dependent (dynamic), set by the pipeline
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                      base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                      max_image_seq_len=4096)  # fmt: skip


def write_tiny_flux(folder: Path, *, seed: int = 0, guidance: bool = True, **_) -> Path:
    """Write a tiny random FLUX.1 (CLIP + T5 text encoders, 16-channel VAE with shift, a
    one-double-one-single-block transformer, with guidance embedding like dev) in diffusers
    layout; return the folder."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer, text_encoder = tiny_clip(folder / "tokenizer")
    tokenizer_2 = write_t5_tokenizer(folder / "tokenizer_2")
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=guidance, axes_dims_rope=[4, 6, 6],
    )  # fmt: skip
    vae = tiny_vae((8, 8, 16, 16), shift_factor=0.1159, scaling_factor=0.3611,
                   use_quant_conv=False, use_post_quant_conv=False)  # fmt: skip
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=tiny_t5(tokenizer_2),
        tokenizer_2=tokenizer_2, transformer=transformer,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def write_tiny_sd3(folder: Path, *, seed: int = 0, **_) -> Path:
    """Write a tiny random SD3 (CLIP-L and CLIP-G with projections, T5 as wide as both CLIPs'
    states, VAE with shift, a two-block MMDiT, SD3's shift-3 flow-matching scheduler) in
    diffusers layout; return the folder."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer, text_encoder = tiny_clip(folder / "tokenizer", projection=True)
    tokenizer_2, text_encoder_2 = tiny_clip(folder / "tokenizer_2", projection=True)
    tokenizer_3 = write_t5_tokenizer(folder / "tokenizer_3")
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
        caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=16,
    )  # fmt: skip
    vae = tiny_vae((8, 8, 16, 16), shift_factor=0.0609, scaling_factor=1.5305,
                   use_quant_conv=False, use_post_quant_conv=False)  # fmt: skip
    pipe = StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, transformer=transformer,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2, text_encoder_3=tiny_t5(tokenizer_3, d_model=64),
        tokenizer_3=tokenizer_3,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


#: family -> writer of its tiny base (``hintset tiny-base --family``)
TINY = {"sd15": write_tiny_base, "sdxl": write_tiny_sdxl, "sd3": write_tiny_sd3,
        "flux": write_tiny_flux}  # fmt: skip
