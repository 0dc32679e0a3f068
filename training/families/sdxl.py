"""SDXL: two CLIP text encoders (penultimate hidden states side by side, the second's pooled
projection) and per-sample size/crop time ids as added conditioning; otherwise as SD 1.x."""

from __future__ import annotations

from training.families.sd15 import SD15, token_ids


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


class SDXL(SD15):
    """The locked parts of an SDXL base."""

    name = "sdxl"
    LOCKED = ("text_encoder", "text_encoder_2", "vae", "unet")
    TEXT = ("text_encoder", "text_encoder_2")
    TEXT_FIELDS = ("encoder_hidden_states", "text_embeds")
    PIPELINE_TEXT = {
        "encoder_hidden_states": "prompt_embeds",
        "text_embeds": "pooled_prompt_embeds",
    }
    PIPELINE_EXTRA: dict = {}
    ARCHITECTURE, LABEL, TAG = "sdxl", "SDXL", "stable-diffusion-xl"
    SINGLE_FILE = "diffusers"  # ComfyUI loads SDXL ControlNets with diffusers keys

    @staticmethod
    def modelspec_architecture(config: dict, info: dict) -> str:
        return "stable-diffusion-xl-v1-base/controlnet"

    def load_parts(self, base_model: str) -> dict:
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        parts = super().load_parts(base_model)
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(base_model, subfolder="tokenizer_2")
        if self.text:
            parts["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
                base_model, subfolder="text_encoder_2"
            )
        return parts

    def text_conditioning(self, captions: list[str]) -> dict:
        text, pooled = encode_prompts_sdxl(
            [self.tokenizer, self.tokenizer_2], [self.text_encoder, self.text_encoder_2],
            captions, self.device,
        )  # fmt: skip
        return {"encoder_hidden_states": text, "text_embeds": pooled}

    def added_conditioning(self, batch: dict, text: dict, resolution: int) -> dict:
        hidden = text["encoder_hidden_states"]
        return {"time_ids": sdxl_time_ids(batch, resolution, self.device, hidden.dtype)}

    def model_kwargs(self, encoded: dict) -> dict:
        added = {"text_embeds": encoded["text_embeds"], "time_ids": encoded["time_ids"]}
        return {"encoder_hidden_states": encoded["encoder_hidden_states"],
                "added_cond_kwargs": added}  # fmt: skip

    @staticmethod
    def pipeline_class():
        from diffusers import StableDiffusionXLControlNetPipeline

        return StableDiffusionXLControlNetPipeline

    def pipeline_parts(self) -> tuple[str, ...]:
        return ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet")
