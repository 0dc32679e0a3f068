"""FLUX.1: CLIP (pooled) + T5 prompt encoding, VAE latents with shift and scale packed into 2x2
patches, flow matching, ``FluxControlNetModel`` (InstantX layout: the control image enters
VAE-encoded and packed) whose block samples go into ``FluxTransformer2DModel``."""

from __future__ import annotations

from training.families.flow import FlowFamily
from training.families.sd15 import _fp32, token_ids


def pack(latents):
    """(B, C, H, W) latents -> FLUX's (B, H/2 * W/2, 4C) tokens of 2x2 patches."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def t5_ids(tokenizer, captions: list[str], device, max_length: int = 512):
    """T5 token ids padded/truncated to the tokenizer's length, at most 512 (the pipeline's
    ``max_sequence_length`` default)."""
    return tokenizer(
        captions, padding="max_length", max_length=min(tokenizer.model_max_length, max_length),
        truncation=True, return_tensors="pt",
    ).input_ids.to(device)  # fmt: skip


class Flux(FlowFamily):
    """The locked parts of a FLUX.1 base and what one training step does with them."""

    name = "flux"
    ARCHITECTURE, LABEL, TAG = "flux", "FLUX.1", "flux"
    #: ComfyUI (comfy/controlnet.py) rebuilds InstantX-layout FLUX ControlNets with FLUX's
    #: 128-wide heads and rotary axes 16/56/56
    SINGLE_FILE_STANDARD = {"attention_head_dim": 128, "axes_dims_rope": [16, 56, 56]}
    LOCKED = ("text_encoder", "text_encoder_2", "vae", "transformer")
    TEXT = ("text_encoder", "text_encoder_2")
    TEXT_FIELDS = ("prompt_embeds", "pooled_prompt_embeds")
    #: double / single transformer blocks copied into the ControlNet (diffusers'
    #: train_controlnet_flux.py defaults --num_double_layers 4 --num_single_layers 4)
    CONTROLNET_LAYERS = (4, 4)

    @staticmethod
    def transformer_class():
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel

    def load_text(self, base_model: str) -> dict:
        from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

        return {
            "tokenizer": CLIPTokenizer.from_pretrained(base_model, subfolder="tokenizer"),
            "text_encoder": CLIPTextModel.from_pretrained(base_model, subfolder="text_encoder"),
            "tokenizer_2": T5TokenizerFast.from_pretrained(base_model, subfolder="tokenizer_2"),
            "text_encoder_2": T5EncoderModel.from_pretrained(
                base_model, subfolder="text_encoder_2"
            ),
        }

    @staticmethod
    def modelspec_architecture(config: dict, info: dict) -> str:
        return "Flux.1-dev/controlnet"  # SwarmUI's id for FLUX.1 ControlNets

    # --- the trainable model ---------------------------------------------------------------
    @staticmethod
    def controlnet_class():
        from diffusers import FluxControlNetModel

        return FluxControlNetModel

    def make_controlnet(self, channels: int, num_mode: int | None = None):
        """A ControlNet from the transformer's first blocks (zero-initialised control embedder
        and outputs); ``num_mode`` > 0 adds InstantX's union mode embedding."""
        if channels != 3:
            raise ValueError(
                f"FLUX ControlNets take one RGB control image through the VAE, not {channels} "
                "stacked channels (train one map, without --stack-conditions)"
            )
        cfg = self.transformer.config
        double, single = self.CONTROLNET_LAYERS
        net = self.controlnet_class().from_transformer(
            self.transformer, num_layers=min(double, cfg.num_layers),
            num_single_layers=min(single, cfg.num_single_layers),
            attention_head_dim=cfg.attention_head_dim, num_attention_heads=cfg.num_attention_heads,
        )  # fmt: skip
        if num_mode:
            union = self.controlnet_class().from_config(net.config, num_mode=num_mode)
            union.load_state_dict(net.state_dict(), strict=False)
            net = union
        return net

    # --- one step -------------------------------------------------------------------------
    def text_conditioning(self, captions: list[str]) -> dict:
        """CLIP's pooled output and T5's last hidden states (FluxPipeline.encode_prompt)."""
        import torch

        with torch.no_grad():
            ids = token_ids(self.tokenizer, captions, self.device)
            pooled = self.text_encoder(ids, output_hidden_states=False).pooler_output
            embeds = self.text_encoder_2(t5_ids(self.tokenizer_2, captions, self.device))[0]
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def model_kwargs(self, encoded: dict) -> dict:
        embeds = encoded["prompt_embeds"]
        return {
            "encoder_hidden_states": embeds,
            "pooled_projections": encoded["pooled_prompt_embeds"],
            "txt_ids": embeds.new_zeros(embeds.shape[1], 3),
        }

    def pack(self, latents):
        return pack(latents)

    def predict(self, controlnet, noisy, timesteps, cond, encoded: dict, config):
        """The transformer's velocity prediction (packed) with the ControlNet's block samples
        (as train_controlnet_flux.py calls both: timestep / 1000, guidance when embedded)."""
        import torch
        from diffusers import FluxPipeline

        h, w = encoded["latent_mean"].shape[-2:]
        ids = FluxPipeline._prepare_latent_image_ids(None, h // 2, w // 2, self.device, noisy.dtype)
        kwargs = {**self.model_kwargs(encoded), "img_ids": ids}
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((len(noisy),), config.guidance_scale, device=self.device)
        t = timesteps / 1000
        residuals = {}
        if controlnet is not None:  # the trainable copy runs in fp32 like its weights
            blocks, singles = controlnet(
                hidden_states=noisy.float(), controlnet_cond=cond.float(), timestep=t,
                guidance=guidance, controlnet_mode=encoded.get("controlnet_mode"),
                return_dict=False, **_fp32(kwargs),
            )  # fmt: skip
            residuals = {
                "controlnet_block_samples": _cast(blocks, self.dtype),
                "controlnet_single_block_samples": _cast(singles, self.dtype),
            }
        return self.transformer(
            hidden_states=noisy, timestep=t, guidance=guidance, return_dict=False,
            **kwargs, **residuals,
        )[0]  # fmt: skip

    # --- sampling -------------------------------------------------------------------------
    @staticmethod
    def pipeline_class():
        from diffusers import FluxControlNetPipeline

        return FluxControlNetPipeline

    def pipeline_parts(self) -> tuple[str, ...]:
        return ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer")


def _cast(samples, dtype):
    """ControlNet block samples in the locked transformer's dtype (None stays None)."""
    return None if samples is None else [s.to(dtype) for s in samples]
