"""Flow matching, shared by SD3 and FLUX.1: timestep/sigma draws, noisy input, velocity target
and loss weighting as diffusers' train_controlnet_sd3.py / train_controlnet_flux.py compute them,
with every random draw taken per sample from ``Draws`` (training/draws.py)."""

from __future__ import annotations

from training.families.sd15 import SD15


def density(config, draws):
    """Per-sample u in [0, 1) of ``config.weighting_scheme`` (diffusers'
    ``compute_density_for_timestep_sampling``: logit_normal, mode, else uniform), each sample's
    draw from its own generator."""
    import torch
    from diffusers.training_utils import compute_density_for_timestep_sampling

    return torch.cat([
        compute_density_for_timestep_sampling(
            config.weighting_scheme, 1, logit_mean=config.logit_mean,
            logit_std=config.logit_std, mode_scale=config.mode_scale, generator=g,
        ) for g in draws.generators
    ])  # fmt: skip


def timesteps_and_sigmas(scheduler, u):
    """Training timesteps and sigmas at ``u``: the scheduler's own schedule, so its shift (SD3's
    ``shift=3``; none for FLUX's dynamic shifting) applies, as the reference scripts index it."""
    n = scheduler.config.num_train_timesteps
    index = (u * n).long().clamp(0, n - 1)
    return scheduler.timesteps[index], scheduler.sigmas[index]


def broadcast(values, like):
    """Per-sample values shaped to multiply ``like`` (first dim = samples)."""
    return values.to(like.device, like.dtype).view(-1, *[1] * (like.ndim - 1))


def noisy_and_target(latents, noise, sigmas):
    """Rectified flow: input (1 - s) x + s noise, target the velocity noise - x."""
    s = broadcast(sigmas, latents)
    return (1.0 - s) * latents + s * noise, noise - latents


def weighted_mse(pred, target, scheme: str, sigmas):
    """Mean squared error with the SD3 loss weighting of ``scheme`` (sigma_sqrt, cosmap; else 1)."""
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    weight = broadcast(compute_loss_weighting_for_sd3(scheme, sigmas), target.float())
    return (weight * (pred.float() - target.float()) ** 2).mean()


class FlowFamily(SD15):
    """A transformer base trained by flow matching; subclasses say how text is encoded, how
    latents are laid out (``pack``) and how ControlNet and transformer are called (``predict``)."""

    LOCKED: tuple[str, ...] = ()
    SINGLE_FILE = "diffusers"  # ComfyUI's load_controlnet reads diffusers keys for SD3 and FLUX
    IMAGE_ARG = "control_image"
    #: head size ComfyUI assumes when it rebuilds the model from a single file's key shapes
    SINGLE_FILE_STANDARD = {"attention_head_dim": 128}

    @classmethod
    def single_file_settings(cls, config: dict) -> dict:
        return {k: config.get(k) for k in cls.SINGLE_FILE_STANDARD}

    #: text encoders (not loaded with ``text=False``: a cached run never loads T5)
    TEXT: tuple[str, ...] = ()
    #: encoded fields made from the captions (replaced for dropped prompts by a cache)
    TEXT_FIELDS: tuple[str, ...] = ()
    #: text field -> the sampling pipeline's argument (validation grids on cached text)
    PIPELINE_TEXT = {
        "prompt_embeds": "prompt_embeds",
        "pooled_prompt_embeds": "pooled_prompt_embeds",
    }

    def __init__(self, base_model: str, device, dtype, text: bool = True) -> None:
        self.text = text
        self.LOCKED = tuple(n for n in type(self).LOCKED if text or n not in self.TEXT)
        super().__init__(base_model, device, dtype, text=text)

    def load_parts(self, base_model: str) -> dict:
        """VAE, transformer and flow-matching scheduler; tokenizers and text encoders if
        ``text``."""
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

        parts = {
            "vae": AutoencoderKL.from_pretrained(base_model, subfolder="vae"),
            "transformer": self.transformer_class().from_pretrained(
                base_model, subfolder="transformer"
            ),
            "noise_scheduler": FlowMatchEulerDiscreteScheduler.from_pretrained(
                base_model, subfolder="scheduler"
            ),
        }
        if self.text:
            parts.update(self.load_text(base_model))
        return parts

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()

    def vae_latents(self, values):
        """VAE latents as the transformer sees them: (x - shift_factor) * scaling_factor."""
        cfg = self.vae.config
        return (values - (cfg.shift_factor or 0.0)) * cfg.scaling_factor

    def control_latents(self, mean):
        """The ControlNet's control input from the control image's VAE mean (as the family's
        pipeline computes it at sampling)."""
        return self.vae_latents(mean)

    def encode(self, batch: dict, captions: list[str], config) -> dict:
        """The image's VAE latent mean/std, the control image's VAE mean (``control_mean``; the
        map in [-1, 1] as the pipelines feed it) and the text fields, per sample."""
        import torch

        pixels = batch["pixel_values"].to(self.device, self.dtype)
        control = batch["conditioning"].to(self.device, self.dtype) * 2.0 - 1.0
        with torch.no_grad():
            dist = self.vae.encode(pixels).latent_dist
            encoded = {"latent_mean": dist.mean, "latent_std": dist.std}
            encoded["control_mean"] = self.vae.encode(control).latent_dist.mean
            encoded.update(self.text_conditioning(captions))
        return encoded

    def pack(self, latents):
        """Latents in the transformer's layout (identity; FLUX packs 2x2 patches)."""
        return latents

    def loss_from(self, controlnet, encoded: dict, config, draws, control: bool = True):
        """Flow-matching loss of the locked transformer with ControlNet residuals; the latent
        sample, noise and timestep of each sample come from ``draws``."""
        import torch

        mean = encoded["latent_mean"]
        latents = self.vae_latents(mean + encoded["latent_std"] * draws.randn_like(mean))
        noise = draws.randn_like(latents)
        timesteps, sigmas = timesteps_and_sigmas(self.noise_scheduler, density(config, draws))
        timesteps = timesteps.to(self.device)
        latents, noise = self.pack(latents), self.pack(noise)
        noisy, target = noisy_and_target(latents, noise, sigmas)
        cond = self.pack(self.control_latents(encoded["control_mean"]))
        autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            pred = self.predict(
                controlnet if control else None, noisy, timesteps, cond, encoded, config
            )
        return weighted_mse(pred, target, config.weighting_scheme, sigmas)

    # --- sampling -------------------------------------------------------------------------
    PIPELINE_EXTRA: dict = {}

    def pipeline(self, controlnet):
        """The family's ControlNet pipeline over the loaded parts, its own flow-matching sampler."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        parts = {name: getattr(self, name) for name in self.pipeline_parts()}
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.noise_scheduler.config)
        pipe = self.pipeline_class()(**parts, controlnet=controlnet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @classmethod
    def base_pipeline(cls, base_model: str, controlnet):
        """The family's ControlNet pipeline loaded from ``base_model`` with ``controlnet``."""
        pipe = cls.pipeline_class().from_pretrained(base_model, controlnet=controlnet)
        pipe.set_progress_bar_config(disable=True)
        return pipe
