"""Pretrain a small Stable Diffusion base from scratch on hintset shards: the VAE, then the U-Net.

ControlNet assumes a base that already draws the data's domain. Real bases come from
billions of images; this lets the CPU learning demonstration start from a base that has
learned a toy domain (shapes) the same way: an autoencoder, then text-conditioned
denoising in its latent space, classifier-free guidance by dropping captions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm


def load_images(data: str, resolution: int) -> tuple[np.ndarray, list[str]]:
    """Every valid sample of a build output: images (N, 3, R, R) in [-1, 1] and captions."""
    from training.data import read_samples

    samples = read_samples(data, [], resolution)
    if not samples:
        raise ValueError(f"no samples in {data}")
    return np.stack([s["pixel_values"] for s in samples]), [s["caption"] for s in samples]


def _batches(n: int, batch_size: int, steps: int, seed: int):
    """Index batches for ``steps`` steps, reshuffled every epoch."""
    rng = np.random.default_rng(seed)
    order, at = rng.permutation(n), 0
    for _ in range(steps):
        if at + batch_size > n:
            order, at = rng.permutation(n), 0
        yield order[at : at + batch_size]
        at += batch_size


def _fit(
    module, steps: int, lr: float, batches, step_loss, desc: str, clip: float = 0.0
) -> list[float]:
    """AdamW with cosine decay over ``steps`` batches of ``step_loss(batch)``; returns losses.

    Leaves ``module`` in eval mode with gradients off, as the locked base it becomes.
    """
    import torch

    module.train().requires_grad_(True)
    opt = torch.optim.AdamW(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for idx in tqdm(batches, total=steps, desc=desc):
        loss = step_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
    module.eval().requires_grad_(False)
    return losses


def train_vae(vae, images: np.ndarray, *, steps: int, batch_size: int = 16, lr: float = 1e-3,
              kl_weight: float = 1e-6, seed: int = 0) -> list[float]:  # fmt: skip
    """Fit the VAE as an autoencoder (MSE plus a small KL term, random flips); returns losses.

    Decodes the posterior mean: sampling at the initial unit variance would drown the
    latents in noise for most of a short run (SD's trained VAE has a tiny variance anyway).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)

    def step_loss(idx):
        x = torch.from_numpy(images[idx])
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(-1)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.mean).sample
        return torch.nn.functional.mse_loss(recon, x) + kl_weight * posterior.kl().mean()

    batches = _batches(len(images), batch_size, steps, seed)
    return _fit(vae, steps, lr, batches, step_loss, "VAE")


def encode_latents(vae, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Posterior means of ``images`` and of their mirror images, concatenated (unscaled)."""
    import torch

    out = []
    with torch.no_grad():
        for flip in (False, True):
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(images[i : i + batch_size])
                out.append(vae.encode(x.flip(-1) if flip else x).latent_dist.mean.numpy())
    return np.concatenate(out)


def train_unet(unet, noise_scheduler, latents: np.ndarray, text: np.ndarray, null_text: np.ndarray,
               *, steps: int, batch_size: int = 32, lr: float = 1e-3, caption_dropout: float = 0.1,
               seed: int = 0) -> list[float]:  # fmt: skip
    """Text-conditioned noise prediction on scaled latents; ``text`` holds one embedding per row."""
    import torch
    import torch.nn.functional as F

    from training.families.sd15 import target_for

    gen = torch.Generator().manual_seed(seed)
    null = torch.from_numpy(null_text)

    def step_loss(idx):
        z = torch.from_numpy(latents[idx])
        cond = torch.from_numpy(text[idx])
        drop = torch.rand(len(idx), generator=gen) < caption_dropout
        cond = torch.where(drop[:, None, None], null.expand_as(cond), cond)
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        pred = unet(noise_scheduler.add_noise(z, noise, t), t, encoder_hidden_states=cond).sample
        return F.mse_loss(pred, target_for(noise_scheduler, z, noise, t))

    batches = _batches(len(latents), batch_size, steps, seed)
    return _fit(unet, steps, lr, batches, step_loss, "U-Net", clip=1.0)


def pretrain_base(data: str, base_model: str, output: str | Path, *, resolution: int,
                  vae_steps: int, unet_steps: int, lr: float = 1e-3, seed: int = 0) -> dict:  # fmt: skip
    """Train ``base_model``'s VAE then U-Net on the shards in ``data``; save a diffusers folder.

    The VAE's ``scaling_factor`` is set so scaled latents have unit variance (as SD's 0.18215).
    Returns the loss lists and the scaling factor.
    """
    import torch
    from diffusers import StableDiffusionPipeline

    from training.families.sd15 import SD15

    torch.manual_seed(seed)
    base = SD15(base_model, "cpu", torch.float32)
    parts = {name: getattr(base, name) for name in (*SD15.LOCKED, "tokenizer", "noise_scheduler")}
    images, captions = load_images(data, resolution)
    vae_losses = train_vae(parts["vae"], images, steps=vae_steps, lr=lr, seed=seed)
    latents = encode_latents(parts["vae"], images)
    scale = float(1.0 / latents.std())
    parts["vae"].register_to_config(scaling_factor=scale)
    unique = sorted(set(captions))
    embeds = base.text_conditioning(unique + [""])["encoder_hidden_states"].numpy()
    row = {c: i for i, c in enumerate(unique)}
    text = embeds[[row[c] for c in captions] * 2]  # latents hold the images twice (mirrored)
    unet_losses = train_unet(parts["unet"], parts["noise_scheduler"], latents * scale, text,
                             embeds[-1:], steps=unet_steps, lr=lr, seed=seed)  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
        unet=parts["unet"], scheduler=parts["noise_scheduler"], safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(output)
    return {"vae_losses": vae_losses, "unet_losses": unet_losses, "scaling_factor": scale}
