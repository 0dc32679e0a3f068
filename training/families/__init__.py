"""Model families: what differs between SD 1.x/2.x, SDXL (and later SD3, FLUX) ControlNet training.

Each family module holds one class with the same few methods; the training loop calls them and
never asks which family it runs. The family is read from the base's ``model_index.json``.

- ``Family(base_model, device, dtype, text=True)``: loads the locked parts (``LOCKED``), frozen,
  on device; ``text=False`` leaves out the text encoders (``TEXT``): a run on a cache
  (training/cache.py) gets the text fields (``TEXT_FIELDS``) from disk.
- ``make_controlnet(channels)``: the trainable ControlNet initialised from the base.
- ``encode(batch, captions, config) -> dict``: what the locked encoders make of a batch (VAE
  latent statistics, the control input, text and added conditioning), per sample along the
  first dimension, no autograd graph and no randomness, so it can be cached per sample key.
- ``loss_from(controlnet, encoded, config, draws, control=True)``: the loss; every random draw
  (latent sample, noise, timestep) comes from ``draws`` (training/draws.py, per sample).
- ``loss(controlnet, batch, captions, config, draws, control=True)``: ``encode`` + ``loss_from``.
- ``pipeline(controlnet)`` / ``base_pipeline(base_model, controlnet)``: the diffusers sampling
  pipeline of the family (validation, export checks, ``hintset evaluate``).
- ``control_args(sample, config)`` (optional): the pipeline's control keyword arguments for a
  validation sample (default: ``IMAGE_ARG=`` the hint; union variants add ``control_mode``).

Union variants (``--union``) are registered as ``<family>-union``.
"""

from __future__ import annotations

import importlib

#: family name -> "module:Class" (imported on use: the registry itself needs no torch)
FAMILIES = {
    "sd15": "training.families.sd15:SD15",
    "sdxl": "training.families.sdxl:SDXL",
    "sd3": "training.families.sd3:SD3",
    "flux": "training.families.flux:Flux",
}
#: union variants (``--union``): "<family>-union" -> "module:Class"
FAMILIES["sdxl-union"] = "training.families.sdxl_union:SDXLUnion"
FAMILIES["flux-union"] = "training.families.flux_union:FluxUnion"
#: diffusers pipeline class of a base (model_index.json ``_class_name``) -> family
PIPELINES = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}


def family_class(name: str):
    """The family class registered as ``name``."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r} (known: {', '.join(FAMILIES)})")
    module, _, cls = FAMILIES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def detect(base_model: str) -> str:
    """Family of the diffusers pipeline at ``base_model`` (folder or hub id), from its
    ``model_index.json``; SDXL-like pipelines are recognised by their second text encoder."""
    from diffusers import DiffusionPipeline

    index = DiffusionPipeline.load_config(base_model)
    name = str(index.get("_class_name", ""))
    if name in PIPELINES:
        return PIPELINES[name]
    if "text_encoder_2" in index or "XL" in name:
        return "sdxl"
    if "unet" in index:
        return "sd15"
    raise ValueError(
        f"{base_model}: unknown base pipeline {name!r} (families: {', '.join(FAMILIES)})"
    )


def is_sdxl_controlnet(config: dict) -> bool:
    """SDXL ControlNets carry SDXL's ``text_time`` added conditioning."""
    return config.get("addition_embed_type") == "text_time"


#: ControlNet class (``_class_name`` of its config.json) -> family, where the class says it
CONTROLNETS = {"FluxControlNetModel": "flux", "SD3ControlNetModel": "sd3",
               "ControlNetUnionModel": "sdxl-union"}  # fmt: skip


def family_of_controlnet(config: dict, class_name: str = "") -> str:
    """Family a saved ControlNet (its ``config.json`` as a dict, or a model's config and its
    class name) was trained for; union models (a ``ControlNetUnionModel``'s control types, a
    FLUX ControlNet's ``num_mode``) are the family's ``-union`` variant."""
    name = class_name or str(config.get("_class_name", ""))
    if "num_control_type" in config:
        return "sdxl-union"
    if name in CONTROLNETS:
        union = config.get("num_mode") and CONTROLNETS[name] + UNION in FAMILIES
        return CONTROLNETS[name] + (UNION if union else "")
    return "sdxl" if is_sdxl_controlnet(config) else "sd15"


def family_of_architecture(architecture: str):
    """The family class whose exports say ``hintset.architecture: architecture``."""
    for name in FAMILIES:
        if family_class(name).ARCHITECTURE == architecture:
            return family_class(name)
    raise ValueError(f"unknown architecture {architecture!r}")


UNION = "-union"


def split_union(name: str) -> tuple[str, bool]:
    """(family of the base, union?) of a registered family name: ``sdxl-union`` -> sdxl, True."""
    return name.removesuffix(UNION), name.endswith(UNION)


def create(base_model: str, device, dtype, family: str = "", union: bool = False,
           text: bool = True):  # fmt: skip
    """The family object holding the locked parts of ``base_model`` (``family`` overrides
    detection); ``union``: its union variant (one ControlNet, several condition types);
    ``text=False``: without its text encoders (a run on cached embeddings)."""
    name = family or detect(base_model)
    if union and name + UNION not in FAMILIES:
        union_of = sorted(base for base, is_union in map(split_union, FAMILIES) if is_union)
        raise ValueError(f"--union: no union ControlNet for family {name!r} "
                         f"(union: {', '.join(union_of)})")  # fmt: skip
    name = name + UNION if union else name
    return family_class(name)(base_model, device, dtype, text=text)
