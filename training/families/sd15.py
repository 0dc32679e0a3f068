"""Stable Diffusion 1.x/2.x: CLIP text encoder, VAE latents, DDPM noise with an epsilon or
v-prediction target, U-Net with ``ControlNetModel`` residuals; the hint enters in pixels
through the ControlNet's conditioning embedding."""

from __future__ import annotations


def token_ids(tokenizer, captions: list[str], device):
    """Token ids padded/truncated to the tokenizer's length (77 for SD's CLIP)."""
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def target_for(noise_scheduler, latents, noise, timesteps):
    """Regression target: the noise (epsilon) or the velocity (v_prediction)."""
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind}")


def sample_timesteps(kind: str, total: int, u):
    """Training timesteps from uniform draws ``u`` in [0, 1): ``uniform``, or ``cubic``
    (T2I-Adapter's bias toward high noise, where the layout a condition controls is decided)."""
    if kind == "uniform":
        return (u * total).long().clamp(0, total - 1)
    if kind == "cubic":
        return ((1 - u**3) * total).long().clamp(0, total - 1)
    raise ValueError(f"unknown timestep sampling {kind!r} (uniform or cubic)")


def _fp32(value):
    """Tensors (also inside dicts) as float32: the trainable copy's inputs under autocast."""
    if isinstance(value, dict):
        return {k: _fp32(v) for k, v in value.items()}
    return value.float() if hasattr(value, "float") else value


class SD15:
    """The locked parts of an SD 1.x/2.x base and what one training step does with them."""

    name = "sd15"
    #: locked modules, in the order they are loaded
    LOCKED = ("text_encoder", "vae", "unet")
    #: text encoders (not loaded with ``text=False``: a run on cached text embeddings)
    TEXT = ("text_encoder",)
    #: ``encode`` fields the text encoders make (a prompt-dropped cached sample gets the empty
    #: prompt's), and the sampling pipeline's argument each one fills (grids on cached text)
    TEXT_FIELDS = ("encoder_hidden_states",)
    PIPELINE_TEXT = {"encoder_hidden_states": "prompt_embeds"}

    # --- export: what the files and the model card say (training/export.py, model_card.py)
    #: ``hintset.architecture`` in exports, the card's label and Hub tag
    ARCHITECTURE, LABEL, TAG = "sd", "SD 1.x/2.x", "stable-diffusion"
    #: key layout of the single file: "cldm" (original ``control_model.*``) or "diffusers"
    SINGLE_FILE = "cldm"
    #: the pipeline's keyword taking the control image
    IMAGE_ARG = "image"
    #: what AUTOMATIC1111's ControlNet extension (>= 1.1.400) and ComfyUI assume when they
    #: rebuild a ControlNet from a single file's key shapes: ldm's GroupNorm(32, eps 1e-5), the
    #: 16/32/96/256 hint encoder and SD's 320 base channels. Other numbers (tiny bases) would
    #: load wrongly there.
    SINGLE_FILE_STANDARD = {"norm_num_groups": 32, "norm_eps": 1e-5,
                            "conditioning_embedding_out_channels": (16, 32, 96, 256),
                            "base_channels": 320}  # fmt: skip

    @staticmethod
    def single_file_settings(config: dict) -> dict:
        """The ControlNet config's values of the ``SINGLE_FILE_STANDARD`` settings."""
        return {
            "norm_num_groups": config.get("norm_num_groups", 32),
            "norm_eps": config.get("norm_eps", 1e-5),
            "conditioning_embedding_out_channels": tuple(
                config.get("conditioning_embedding_out_channels", (16, 32, 96, 256))
            ),
            "base_channels": config["block_out_channels"][0],
        }

    @staticmethod
    def modelspec_architecture(config: dict, info: dict) -> str:
        """ModelSpec architecture id of a standard ControlNet, as SwarmUI registers it."""
        if config.get("cross_attention_dim") == 1024:
            v = info.get("prediction_type") == "v"
            return f"stable-diffusion-v2-{'768-v' if v else '512'}/controlnet"
        return "stable-diffusion-v1/controlnet"

    def __init__(self, base_model: str, device, dtype, text: bool = True) -> None:
        import torch

        self.base_model = base_model
        self.device = torch.device(device)
        self.dtype = dtype
        self.text = text
        for name in self.TEXT:  # absent with text=False, as their tokenizers may be
            setattr(self, name, None)
            setattr(self, name.replace("text_encoder", "tokenizer"), None)
        for name, part in self.load_parts(base_model).items():
            setattr(self, name, part)
        for name in self.LOCKED:
            if getattr(self, name) is None:
                continue
            module = getattr(self, name)
            module.eval()
            module.requires_grad_(False)
            module.to(self.device)
            if dtype != torch.float32:  # mixed precision: the locked parts in half precision
                module.to(dtype)

    def load_parts(self, base_model: str) -> dict:
        """Tokenizer, text encoder (unless ``self.text`` is False), VAE, U-Net and DDPM noise
        scheduler of the base."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        parts = {"tokenizer": CLIPTokenizer.from_pretrained(base_model, subfolder="tokenizer")}
        if self.text:
            parts["text_encoder"] = CLIPTextModel.from_pretrained(
                base_model, subfolder="text_encoder"
            )
        return {
            **parts,
            "vae": AutoencoderKL.from_pretrained(base_model, subfolder="vae"),
            "unet": UNet2DConditionModel.from_pretrained(base_model, subfolder="unet"),
            "noise_scheduler": DDPMScheduler.from_pretrained(base_model, subfolder="scheduler"),
        }

    def locked(self) -> dict:
        """Name -> locked module (never trained; text encoders only when loaded)."""
        return {n: getattr(self, n) for n in self.LOCKED if getattr(self, n) is not None}

    # --- the trainable model ---------------------------------------------------------------
    @staticmethod
    def controlnet_class():
        from diffusers import ControlNetModel

        return ControlNetModel

    def make_controlnet(self, channels: int):
        """A ControlNet initialised from the base's U-Net encoder (zero-initialised outputs)."""
        return self.controlnet_class().from_unet(self.unet, conditioning_channels=channels)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    # --- one step -------------------------------------------------------------------------
    def text_conditioning(self, captions: list[str]) -> dict:
        """U-Net/ControlNet text inputs (``encoder_hidden_states``), without an autograd graph."""
        import torch

        with torch.no_grad():
            ids = token_ids(self.tokenizer, captions, self.device)
            return {"encoder_hidden_states": self.text_encoder(ids)[0]}

    def added_conditioning(self, batch: dict, text: dict, resolution: int) -> dict:
        """Extra per-sample conditioning tensors (none for SD 1.x/2.x)."""
        return {}

    def model_kwargs(self, encoded: dict) -> dict:
        """Keyword arguments of U-Net and ControlNet made from the encoded conditioning."""
        return {"encoder_hidden_states": encoded["encoder_hidden_states"]}

    def encode(self, batch: dict, captions: list[str], config) -> dict:
        """What the locked encoders make of a batch, per sample (first dim), without an autograd
        graph and without randomness, so it can be cached: the VAE's latent mean and std, the
        pixel hint, text and added conditioning."""
        import torch

        pixels = batch["pixel_values"].to(self.device, self.dtype)
        with torch.no_grad():
            dist = self.vae.encode(pixels).latent_dist
            encoded = {"latent_mean": dist.mean, "latent_std": dist.std}
            encoded["controlnet_cond"] = batch["conditioning"].to(self.device, torch.float32)
            encoded.update(self.text_conditioning(captions))
            encoded.update(self.added_conditioning(batch, encoded, config.resolution))
        return encoded

    def loss(self, controlnet, batch: dict, captions: list[str], config, draws, control=True):
        """The loss of one batch: ``encode`` then ``loss_from``."""
        return self.loss_from(controlnet, self.encode(batch, captions, config), config, draws,
                              control=control)  # fmt: skip

    def loss_from(self, controlnet, encoded: dict, config, draws, control: bool = True):
        """Noise-prediction loss of the locked U-Net with ControlNet residuals; every random
        draw (latent sample, noise, timestep) comes from ``draws`` (training/draws.py).

        ``control=False`` runs the U-Net alone (the base without control, or a plain
        U-Net fine-tune in the speed benchmark)."""
        import torch
        import torch.nn.functional as F

        mean = encoded["latent_mean"]
        latents = mean + encoded["latent_std"] * draws.randn_like(mean)
        latents = latents * self.vae.config.scaling_factor
        noise = draws.randn_like(latents)
        total = self.noise_scheduler.config.num_train_timesteps
        timesteps = sample_timesteps(config.timestep_sampling, total, draws.rand(self.device))
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        kwargs = self.model_kwargs(encoded)
        autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            residuals = {}
            if control:
                down, mid = self.control_residuals(controlnet, noisy, timesteps, encoded, kwargs,
                                                   config, draws)  # fmt: skip
                residuals = {
                    "down_block_additional_residuals": [r.to(self.dtype) for r in down],
                    "mid_block_additional_residual": mid.to(self.dtype),
                }
            pred = self.unet(noisy, timesteps, return_dict=False, **kwargs, **residuals)[0]
        target = target_for(self.noise_scheduler, latents, noise, timesteps)
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    def control_residuals(self, controlnet, noisy, timesteps, encoded: dict, kwargs: dict,
                          config, draws) -> tuple:  # fmt: skip
        """The ControlNet's (down residuals, mid residual); the trainable copy runs in fp32
        like its weights."""
        return controlnet(
            noisy.float(), timesteps, controlnet_cond=encoded["controlnet_cond"],
            return_dict=False, **_fp32(kwargs),
        )  # fmt: skip

    # --- sampling -------------------------------------------------------------------------
    @staticmethod
    def pipeline_class():
        from diffusers import StableDiffusionControlNetPipeline

        return StableDiffusionControlNetPipeline

    #: extra keyword arguments of the pipeline's constructor
    PIPELINE_EXTRA = {"safety_checker": None, "feature_extractor": None,
                      "requires_safety_checker": False}  # fmt: skip

    def pipeline(self, controlnet):
        """The diffusers ControlNet pipeline over the loaded parts, DDIM sampler (validation)."""
        from diffusers import DDIMScheduler

        parts = {name: getattr(self, name) for name in self.pipeline_parts()}
        pipe = self.pipeline_class()(
            **parts, controlnet=controlnet,
            scheduler=DDIMScheduler.from_config(self.noise_scheduler.config),
            **self.PIPELINE_EXTRA,
        )  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def pipeline_parts(self) -> tuple[str, ...]:
        return ("vae", "text_encoder", "tokenizer", "unet")

    @classmethod
    def base_pipeline(cls, base_model: str, controlnet):
        """The family's ControlNet pipeline loaded from ``base_model`` with ``controlnet``, DDIM."""
        from diffusers import DDIMScheduler

        extra = {k: v for k, v in cls.PIPELINE_EXTRA.items() if k != "feature_extractor"}
        pipe = cls.pipeline_class().from_pretrained(base_model, controlnet=controlnet, **extra)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        return pipe
