"""Generation: a ControlNet and its base as diffusers pipelines, images written as they come.

The pipeline classes come from ``PIPELINES``, keyed by the base's ``model_index.json`` class and
the ControlNet's ``config.json`` class, so a new family is one entry (``register``). Each image
is ``{key}_{i}.png`` in its run's folder, written atomically; a rerun generates only the
images not there yet. Seeds depend on the seed, the key and i only, so the run without control
gets the same noise, and a resumed or shortened run the same images.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annotators.base import stable_seed
from evaluation.samples import Sample


@dataclass(frozen=True)
class Family:
    """How one family's ControlNet is run: pipeline classes (diffusers names), the keyword
    taking the condition, the multiple image sides must have, and extra loading arguments."""

    name: str
    pipeline: str
    plain: str
    image_arg: str = "image"
    multiple: int = 8
    load: dict[str, Any] = field(default_factory=dict)
    union: bool = False  # the condition goes in a list with a control_mode
    tested: bool = True  # run on a tiny base in the test suite


_SD_LOAD = {"safety_checker": None, "requires_safety_checker": False}
#: (base pipeline class, ControlNet class) -> family
PIPELINES: dict[tuple[str, str], Family] = {
    ("StableDiffusionPipeline", "ControlNetModel"): Family(
        "sd15", "StableDiffusionControlNetPipeline", "StableDiffusionPipeline", load=_SD_LOAD),
    ("StableDiffusionXLPipeline", "ControlNetModel"): Family(
        "sdxl", "StableDiffusionXLControlNetPipeline", "StableDiffusionXLPipeline"),
    ("StableDiffusionXLPipeline", "ControlNetUnionModel"): Family(
        "sdxl-union", "StableDiffusionXLControlNetUnionPipeline", "StableDiffusionXLPipeline",
        image_arg="control_image", union=True, tested=False),
    ("StableDiffusion3Pipeline", "SD3ControlNetModel"): Family(
        "sd3", "StableDiffusion3ControlNetPipeline", "StableDiffusion3Pipeline",
        image_arg="control_image", multiple=16),
    ("FluxPipeline", "FluxControlNetModel"): Family(
        "flux", "FluxControlNetPipeline", "FluxPipeline", image_arg="control_image",
        multiple=16),
}  # fmt: skip

#: xinsir's SDXL union control modes per hintset condition
UNION_MODES = {"pose": 0, "depth": 1, "hed": 2, "softedge": 2, "scribble": 2, "canny": 3,
               "lineart": 3, "lines": 3, "normal": 4, "seg": 5, "tile": 6, "inpaint": 7}  # fmt: skip

#: --scheduler names -> diffusers classes ("default" keeps the base's own)
SCHEDULERS = {"ddim": "DDIMScheduler", "unipc": "UniPCMultistepScheduler",
              "euler-a": "EulerAncestralDiscreteScheduler", "dpm": "DPMSolverMultistepScheduler"}  # fmt: skip


#: --protocol NAME -> the settings it fixes (options given on the command line still win)
PROTOCOLS: dict[str, dict[str, Any]] = {
    # ControlNet++ (Li et al., ECCV 2024), eval/eval.py: 512 x 512 (conditions squashed to a
    # square), UniPC 20 steps, guidance 7.5, 4 images per prompt, this negative prompt, seed 42
    "controlnet-plus-plus": dict(
        steps=20,
        guidance=7.5,
        scheduler="unipc",
        seed=42,
        resolution=512,
        square=True,
        images_per_key=4,
        negative_prompt="worst quality, low quality",
    ),
}


def register(base_class: str, controlnet_class: str, family: Family) -> None:
    """Make ``family`` the way a ControlNet of ``controlnet_class`` runs on ``base_class``."""
    PIPELINES[(base_class, controlnet_class)] = family


@dataclass
class Settings:
    """What a generation run does (recorded in summary.json)."""

    steps: int = 20
    guidance: float = 7.5
    scheduler: str = "default"
    seed: int = 0
    resolution: int = 512
    square: bool = False  # resize every condition to resolution x resolution (ControlNet++)
    images_per_key: int = 1
    negative_prompt: str = ""
    batch_size: int = 4
    device: str = "auto"
    precision: str = "auto"


def protocol_settings(protocol: str | None, options: dict[str, Any],
                      explicit: set[str]) -> Settings:  # fmt: skip
    """Settings from ``options``, where ``protocol`` fixes its own fields unless the option was
    ``explicit`` (given on the command line)."""
    fixed = PROTOCOLS[protocol] if protocol else {}
    chosen = {k: v for k, v in options.items() if k not in fixed or k in explicit}
    return Settings(**{**fixed, **chosen})


def controlnet_folder(model: str) -> str:
    """The diffusers folder of ``model``: itself, EXPORT/diffusers (``hintset export``),
    CHECKPOINT/controlnet (a training checkpoint, whose own config.json is the run's), or
    ``model`` as a hub id: the first whose config.json names a model class."""
    path = Path(model)
    for folder in (path, path / "diffusers", path / "controlnet"):
        config = folder / "config.json"
        if config.is_file() and "_class_name" in json.loads(config.read_text()):
            return str(folder)
    if path.exists():
        raise ValueError(f"{model} holds no ControlNet (no model config.json in it, diffusers/ "
                         "or controlnet/)")  # fmt: skip
    return model


def family_of(model: str, base: str) -> tuple[Family, str, str]:
    """(family, ControlNet folder or id, ControlNet class) for ``model`` on ``base``."""
    from diffusers import ControlNetModel, DiffusionPipeline

    folder = controlnet_folder(model)
    try:
        net_class = ControlNetModel.load_config(folder)["_class_name"]
        base_class = DiffusionPipeline.load_config(base)["_class_name"]
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"cannot read the ControlNet or base config: {err}") from None
    family = PIPELINES.get((base_class, net_class))
    if family is None:
        known = ", ".join(f"{b} + {c}" for b, c in PIPELINES)
        raise ValueError(f"no pipeline for a {net_class} on a {base_class}; known: {known}")
    return family, folder, net_class


class Generator:
    """A ControlNet pipeline and the same base without control, loaded once."""

    def __init__(self, model: str, base: str, settings: Settings) -> None:
        import diffusers
        import torch

        from annotators.learned import resolve_dtype
        from annotators.weights import resolve_device

        self.settings = settings
        self.family, folder, net_class = family_of(model, base)
        self.device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.precision, self.device)
        typed = {} if dtype == torch.float32 else {"torch_dtype": dtype}
        net = getattr(diffusers, net_class).from_pretrained(folder, **typed)
        pipe_class = getattr(diffusers, self.family.pipeline)
        self.pipe = pipe_class.from_pretrained(base, controlnet=net, **typed, **self.family.load)
        if settings.scheduler != "default":
            scheduler = getattr(diffusers, SCHEDULERS[settings.scheduler])
            self.pipe.scheduler = scheduler.from_config(self.pipe.scheduler.config)
        self.pipe.to(self.device)
        self.plain = getattr(diffusers, self.family.plain).from_pipe(self.pipe)
        for p in (self.pipe, self.plain):
            p.set_progress_bar_config(disable=True)
        self.torch = torch

    def size(self, sample: Sample) -> tuple[int, int]:
        """(height, width) to generate at: the map's aspect with its short side at the
        resolution, each side a multiple of the family's; square with ``square``."""
        s, m = self.settings, self.family.multiple
        if s.square:
            return (s.resolution // m * m,) * 2
        h, w = sample.size
        scale = s.resolution / min(h, w)
        return max(m, round(h * scale / m) * m), max(m, round(w * scale / m) * m)

    def control_image(self, sample: Sample, condition: str, size: tuple[int, int]):
        """The condition as the pipeline takes it: RGB (a 1-channel map repeated), resized."""
        from PIL import Image

        from training.data import hint_array

        data = io.BytesIO()
        Image.fromarray(sample.maps[condition]).save(data, format="PNG")
        hint = hint_array(Image.open(data))
        rgb = Image.fromarray((hint * 255).round().astype(np.uint8))
        return rgb.resize((size[1], size[0]), Image.BILINEAR)

    def run(self, samples: Iterable[Sample], condition: str, out: Path,
            scale: float | None) -> int:  # fmt: skip
        """Write the missing ``{key}_{i}.png`` of ``samples`` into ``out``: with the ControlNet
        at ``scale``, or without control when ``scale`` is None. Returns images generated."""
        from pipeline.atomic import atomic_write
        from pipeline.encode import encode_png

        out.mkdir(parents=True, exist_ok=True)
        todo = [(s, i) for s in samples for i in range(self.settings.images_per_key)
                if not (out / f"{s.key}_{i}.png").exists()]  # fmt: skip
        todo.sort(key=lambda item: self.size(item[0]))
        done = 0
        for start in range(0, len(todo), self.settings.batch_size):
            batch = todo[start : start + self.settings.batch_size]
            groups: dict[tuple[int, int], list] = {}
            for item in batch:
                groups.setdefault(self.size(item[0]), []).append(item)
            for size, items in groups.items():
                images = self._generate(items, condition, size, scale)
                for (sample, i), img in zip(items, images, strict=True):
                    atomic_write(out / f"{sample.key}_{i}.png", encode_png(img))
                done += len(items)
        return done

    def _generate(self, items: list[tuple[Sample, int]], condition: str,
                  size: tuple[int, int], scale: float | None) -> list[np.ndarray]:  # fmt: skip
        s, torch = self.settings, self.torch
        gens = [torch.Generator("cpu").manual_seed(stable_seed("evaluate", s.seed, sample.key, i)
                                                   % 2**63) for sample, i in items]  # fmt: skip
        args: dict[str, Any] = dict(
            prompt=[sample.caption for sample, _ in items], num_inference_steps=s.steps,
            guidance_scale=s.guidance, height=size[0], width=size[1], generator=gens,
            output_type="np",
        )  # fmt: skip
        if s.negative_prompt:
            args["negative_prompt"] = [s.negative_prompt] * len(items)
        pipe = self.plain
        if scale is not None:
            pipe = self.pipe
            control = [self.control_image(sample, condition, size) for sample, _ in items]
            if self.family.union:
                args["control_mode"] = [UNION_MODES[condition]]
                control = [control]  # one control type, its images for the batch
            args[self.family.image_arg] = control
            args["controlnet_conditioning_scale"] = scale
        with torch.no_grad():
            images = pipe(**args).images
        return [(np.clip(img, 0, 1) * 255).round().astype(np.uint8) for img in images]
