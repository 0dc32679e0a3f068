"""Stable Diffusion 3 / 3.5: CLIP-L + CLIP-G (penultimate states, pooled) + T5 prompt encoding,
VAE latents with shift and scale, flow matching with the scheduler's shift, ``SD3ControlNetModel``
(the control image enters VAE-encoded) whose block states go into ``SD3Transformer2DModel``."""

from __future__ import annotations

from training.families.flow import FlowFamily
from training.families.flux import _cast, t5_ids
from training.families.sd15 import _fp32, token_ids


class SD3(FlowFamily):
    """The locked parts of an SD3/SD3.5 base and what one training step does with them."""

    name = "sd3"
    LOCKED = ("text_encoder", "text_encoder_2", "text_encoder_3", "vae", "transformer")
    TEXT = ("text_encoder", "text_encoder_2", "text_encoder_3")
    TEXT_FIELDS = ("prompt_embeds", "pooled_prompt_embeds")
    ARCHITECTURE, LABEL, TAG = "sd3", "SD3", "sd3"
    #: ComfyUI (comfy/controlnet.py load_controlnet_mmdit) rebuilds diffusers SD3 ControlNets
    #: with MMDiT's 64-wide heads
    SINGLE_FILE_STANDARD = {"attention_head_dim": 64}
    #: transformer blocks copied into the ControlNet (SD3ControlNetModel.from_transformer's
    #: default, which diffusers' train_controlnet_sd3.py uses)
    CONTROLNET_LAYERS = 12

    @staticmethod
    def transformer_class():
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel

    def load_text(self, base_model: str) -> dict:
        from transformers import (
            CLIPTextModelWithProjection,
            CLIPTokenizer,
            T5EncoderModel,
            T5TokenizerFast,
        )

        parts = {}
        for sub in ("", "_2"):
            parts[f"tokenizer{sub}"] = CLIPTokenizer.from_pretrained(
                base_model, subfolder=f"tokenizer{sub}"
            )
            parts[f"text_encoder{sub}"] = CLIPTextModelWithProjection.from_pretrained(
                base_model, subfolder=f"text_encoder{sub}"
            )
        parts["tokenizer_3"] = T5TokenizerFast.from_pretrained(base_model, subfolder="tokenizer_3")
        parts["text_encoder_3"] = T5EncoderModel.from_pretrained(
            base_model, subfolder="text_encoder_3"
        )
        return parts

    @staticmethod
    def modelspec_architecture(config: dict, info: dict) -> str:
        return "stable-diffusion-v3-medium/controlnet"  # SwarmUI's id for diffusers SD3 ones

    # --- the trainable model ---------------------------------------------------------------
    @staticmethod
    def controlnet_class():
        from diffusers import SD3ControlNetModel

        return SD3ControlNetModel

    def make_controlnet(self, channels: int):
        """A ControlNet from the transformer's first blocks, zero-initialised control input
        (``pos_embed_input``) and outputs, no extra conditioning channels."""
        if channels != 3:
            raise ValueError(
                f"SD3 ControlNets take one RGB control image through the VAE, not {channels} "
                "stacked channels (train one map, without --stack-conditions)"
            )
        # the transformer's last block is context-pre-only: a ControlNet copies the ones before
        layers = min(self.CONTROLNET_LAYERS, self.transformer.config.num_layers - 1)
        return self.controlnet_class().from_transformer(
            self.transformer, num_layers=layers, num_extra_conditioning_channels=0
        )

    # --- one step -------------------------------------------------------------------------
    def text_conditioning(self, captions: list[str]) -> dict:
        """StableDiffusion3Pipeline.encode_prompt: both CLIPs' penultimate states side by side,
        zero-padded to T5's width, then T5's states along the sequence; pooled: both CLIPs'."""
        import torch

        states, pooled = [], []
        with torch.no_grad():
            for tok, enc in ((self.tokenizer, self.text_encoder),
                             (self.tokenizer_2, self.text_encoder_2)):  # fmt: skip
                out = enc(token_ids(tok, captions, self.device), output_hidden_states=True)
                pooled.append(out[0])
                states.append(out.hidden_states[-2])
            t5 = self.text_encoder_3(t5_ids(self.tokenizer_3, captions, self.device, 256))[0]
        clip = torch.cat(states, dim=-1)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return {"prompt_embeds": torch.cat([clip, t5], dim=-2),
                "pooled_prompt_embeds": torch.cat(pooled, dim=-1)}  # fmt: skip

    def model_kwargs(self, encoded: dict) -> dict:
        return {
            "encoder_hidden_states": encoded["prompt_embeds"],
            "pooled_projections": encoded["pooled_prompt_embeds"],
        }

    def control_latents(self, mean):
        """StableDiffusion3ControlNetPipeline: with ``force_zeros_for_pooled_projection`` (what
        from_transformer gives, InstantX's convention) the control latents are scaled, not
        shifted (train_controlnet_sd3.py: ``* scaling_factor``)."""
        return mean * self.vae.config.scaling_factor

    def predict(self, controlnet, noisy, timesteps, cond, encoded: dict, config):
        """The transformer's velocity prediction with the ControlNet's block states; the
        ControlNet gets zero pooled projections, as the pipeline feeds it."""
        kwargs = self.model_kwargs(encoded)
        residuals = {}
        if controlnet is not None:  # the trainable copy runs in fp32 like its weights
            inputs = _fp32(kwargs)
            inputs["pooled_projections"] = inputs["pooled_projections"] * 0
            blocks = controlnet(
                hidden_states=noisy.float(), timestep=timesteps, controlnet_cond=cond.float(),
                return_dict=False, **inputs,
            )[0]  # fmt: skip
            residuals = {"block_controlnet_hidden_states": _cast(blocks, self.dtype)}
        return self.transformer(
            hidden_states=noisy, timestep=timesteps, return_dict=False, **kwargs, **residuals
        )[0]

    # --- sampling -------------------------------------------------------------------------
    @staticmethod
    def pipeline_class():
        from diffusers import StableDiffusion3ControlNetPipeline

        return StableDiffusion3ControlNetPipeline

    def pipeline_parts(self) -> tuple[str, ...]:
        return ("vae", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer",
                "tokenizer_2", "tokenizer_3", "transformer")  # fmt: skip
