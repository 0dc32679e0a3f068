"""Marigold (prs-eth, diffusion-based) depth and normals through diffusers' pipelines.

``MarigoldDepthPipeline`` / ``MarigoldNormalsPipeline`` (diffusers) load the published folder
(``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``)
from a local folder, the Hugging Face cache or the hub. hintset passes the initial noise itself:
one draw from ``seed`` per image (the same for every image of a size), so a map is deterministic
and does not depend on its batch mates. Outputs in ControlNet's conventions: depth is Marigold's
affine-invariant depth (0 = near) inverted to near = large, then normalised per image like every
depth backend; normals (x right, y up, z towards the viewer in Marigold's frame) have x negated
to NormalBAE's frame (x = left, y = up, z = towards the camera).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annotators.base import Param
from annotators.learned import groups_by_size
from annotators.weights import (
    WeightsError,
    model_local_dirs,
    model_missing_message,
    sha256_file,
    use_hub,
)

#: the files of a published Marigold folder that the pipelines load (safetensors, no variants)
PIPELINE_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer_config.json",  # + vocab.json and merges.txt (or tokenizer.json)
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
#: what is fetched from the hub: those files and the whole tokenizer folder
DOWNLOAD = [*PIPELINE_FILES, "tokenizer/*"]
#: the weights files recorded (sha256) in the manifest
IDENTITY_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
)
#: prs-eth/Marigold: "The models are licensed under RAIL++-M License" (LICENSE-MODEL.txt)
LICENCE = "RAIL++-M (prs-eth/Marigold LICENSE-MODEL)"
REFERENCE = "diffusers MarigoldDepthPipeline / MarigoldNormalsPipeline (prs-eth/Marigold v1.1)"


@dataclass(frozen=True)
class MarigoldModel:
    """A published Marigold checkpoint (a diffusers pipeline folder)."""

    repo_id: str
    task: str  # "depth" or "normals"
    family: str = "marigold"
    size: str = ""
    licence: str = LICENCE
    reference: str = REFERENCE
    #: the folder's files (``hintset annotators --json``); replaces the transformers files
    files: tuple[str, ...] = PIPELINE_FILES


DEPTH_MODELS = {"marigold-depth-v1-1": MarigoldModel("prs-eth/marigold-depth-v1-1", "depth")}
NORMALS_MODELS = {
    "marigold-normals-v1-1": MarigoldModel("prs-eth/marigold-normals-v1-1", "normals")
}

#: parameters of a Marigold backend (depth: ``model=marigold-*``; normal: ``backend=marigold``)
PARAMS = (
    Param("steps", 0, "marigold: denoising steps (0 = the model's default, 4 for v1.1)"),
    Param("ensemble_size", 1, "marigold: predictions per image, ensembled (median / closest)"),
    Param(
        "processing_resolution", 0, "marigold: long side the network sees (0 = the model's, 768)"
    ),
    Param("seed", 0, "marigold: seed of the initial noise (the same for every image)"),
)


def requirements() -> tuple[tuple[str, str], ...]:
    """torch, diffusers and transformers (its CLIP text encoder): the ``models`` extra."""
    return (("torch", "models"), ("diffusers", "models"), ("transformers", "models"))


def pipeline_missing(folder: Path) -> list[str]:
    """The published files a Marigold folder lacks."""
    return [name for name in PIPELINE_FILES if not (folder / name).is_file()]


def resolve_pipeline(model: str, weights_dir: str = "", offline: bool | None = None) -> Path:
    """The complete Marigold folder for ``model`` (folder or hub id): ``DIR/<hub id>/`` in the
    weights folder, the Hugging Face cache, or (online) the hub; else one WeightsError line."""
    incomplete: tuple[Path, list[str]] | None = None
    for folder in model_local_dirs(model, weights_dir or None):
        if folder.is_dir():
            missing = pipeline_missing(folder)
            if not missing:
                return folder
            incomplete = incomplete or (folder, missing)
    if incomplete is None and not Path(model).is_dir() and model.count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            for local_only in (True, False) if use_hub(offline) else (True,):
                try:
                    found = Path(snapshot_download(model, allow_patterns=DOWNLOAD,
                                                   local_files_only=local_only))  # fmt: skip
                except Exception:  # noqa: BLE001 - not cached / no network / no such repo
                    continue
                if not pipeline_missing(found):
                    return found
        except ImportError:
            pass
    if incomplete is not None:
        raise WeightsError(
            model_missing_message(model, missing=incomplete[1], folder=incomplete[0])
        )
    raise WeightsError(
        model_missing_message(model, weights_dir or None, missing=list(PIPELINE_FILES))
    )


def identity(model: str, folder: Path) -> list[dict[str, Any]]:
    """Manifest entries: the UNet's and the VAE's weights files with their sha256."""
    return [
        {
            "model": model,
            "file": name,
            "path": str(folder / name),
            "sha256": sha256_file(folder / name),
        }
        for name in IDENTITY_FILES
    ]


class MarigoldRunner:
    """A loaded Marigold pipeline run in batches of equal-size images with fixed initial noise."""

    def __init__(self, task: str, model: str, config: dict[str, Any], device: str, dtype: Any,
                 batch_size: Callable[[], int]):  # fmt: skip
        self.task, self.model, self.config = task, model, config
        self.device, self.dtype = device, dtype
        self.batch_size = batch_size  # the annotator's network batch (auto: 1 on CPU)
        self.pipe: Any = None

    def load(self) -> list[dict[str, Any]]:
        """Resolve the folder, load the pipeline (one WeightsError line on failure)."""
        import warnings

        import diffusers

        from annotators.hf_models import quiet_transformers

        quiet_transformers()
        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        folder = resolve_pipeline(self.model, self.config["weights_dir"])
        cls = (
            diffusers.MarigoldDepthPipeline
            if self.task == "depth"
            else diffusers.MarigoldNormalsPipeline
        )
        try:
            with warnings.catch_warnings():  # torch_dtype: renamed dtype in newer diffusers
                warnings.simplefilter("ignore", FutureWarning)
                pipe = cls.from_pretrained(
                    str(folder), local_files_only=True, torch_dtype=self.dtype
                )
        except Exception as err:  # noqa: BLE001 - any loading failure becomes one line
            text = " ".join(str(err).split())[:300]
            raise WeightsError(
                f"cannot load {self.model} from {folder}: {type(err).__name__}: {text}"
            ) from None
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        return identity(self.model, folder)

    def _noise(self, batch: Any) -> Any:
        """Initial latents for a batch of same-size images: one draw from ``seed``, repeated."""
        import torch

        cfg, pipe = self.config, self.pipe
        res = cfg["processing_resolution"] or pipe.default_processing_resolution
        pixels, _, _ = pipe.image_processor.preprocess(
            batch[:1], res, "bilinear", "cpu", torch.float32
        )
        scale = pipe.vae_scale_factor
        shape = (cfg["ensemble_size"], pipe.vae.config.latent_channels,
                 pixels.shape[2] // scale, pixels.shape[3] // scale)  # fmt: skip
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(cfg["seed"]))
        return noise.repeat(len(batch), 1, 1, 1).to(self.device, self.dtype)

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Depth: HxW float32, near = large. Normals: HxWx3 float32 unit vectors, NormalBAE axes."""
        import torch

        cfg = self.config
        found: list[np.ndarray] = [np.empty(0)] * len(images)
        size = self.batch_size()
        for group in groups_by_size(images, size):
            # (N, 3, H, W) uint8: the pipelines read an array's last two axes as H, W
            batch = torch.from_numpy(np.stack([images[i] for i in group])).permute(0, 3, 1, 2)
            with torch.inference_mode(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg["seed"])  # schedulers that add noise (LCM) draw from here
                out = self.pipe(
                    batch,
                    num_inference_steps=cfg["steps"] or None,
                    ensemble_size=cfg["ensemble_size"],
                    processing_resolution=cfg["processing_resolution"] or None,
                    batch_size=size,
                    latents=self._noise(batch),
                    output_type="np",
                ).prediction  # (N, H, W, 1 or 3)
            for i, pred in zip(group, out.astype(np.float32), strict=True):
                if self.task == "depth":
                    found[i] = 1.0 - pred[..., 0]
                else:
                    found[i] = to_normalbae_axes(pred)
        return found


def to_normalbae_axes(normals: np.ndarray) -> np.ndarray:
    """Marigold's normals (..., 3: x right, y up, z to the viewer) in NormalBAE's axes (x left)."""
    return normals * np.array([-1.0, 1.0, 1.0], np.float32)


def validate(name: str, config: dict[str, Any]) -> None:
    """One-line ValueError for Marigold parameters that cannot run."""
    if config["ensemble_size"] < 1:
        raise ValueError(f"{name}: ensemble_size must be >= 1")


def find_identity(model: str, weights_dir: str = "") -> list[dict[str, Any]]:
    """The identity of a Marigold folder found offline, without loading it ([] when absent)."""
    try:
        return identity(model, resolve_pipeline(model, weights_dir, offline=True))
    except WeightsError:
        return []
