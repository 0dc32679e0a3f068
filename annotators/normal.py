"""Surface normal maps (RGB): learned NormalBAE (ControlNet 1.1) or Sobel on depth (ControlNet 1.0).

``backend="bae"``: the NormalBAE network (checkpoint ``scannet.pt`` from lllyasviel/Annotators;
EfficientNet-B5 encoder from timm + the BAE decoder); rgb = (n + 1) / 2 in the ScanNet
convention: red = left (x), green = up (y), blue = towards the camera (z).

``backend="depth"``: ControlNet 1.0's recipe on the ``depth`` annotator's relative inverse
depth (MiDaS DPT-hybrid as in 1.0, or Depth Anything V2 with ``depth_model``): Sobel x/y, z = 2*pi, x/y zeroed where the normalised depth < 0.4 (1.0's app default;
controlnet_aux uses 0.1), unit length, n * 127.5 + 127.5, stored as R = z, G = y, B = x: the
order ``control_sd15_normal`` was fed (1.0's app reverses the annotator's x, y, z channels).

``backend="dsine"`` (DSINE, ``dsine.pt``: :mod:`annotators.dsine`) and ``backend="marigold"``
(Marigold normals, diffusers: :mod:`annotators.marigold`) are converted to NormalBAE's axes and
encoded like it, so every learned backend colours a surface facing one way the same.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from annotators import marigold
from annotators.base import Annotation, Param
from annotators.learned import LEARNED_PARAMS, LearnedAnnotator, load_network
from annotators.registry import create, register
from annotators.weights import WeightsFile

BAE_WEIGHTS = WeightsFile("scannet.pt", size_hint="290 MB")
#: encoder stride 32: pad the input to this multiple
BAE_MULTIPLE = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: what each backend's colours mean; recorded in the annotator's info (and so the manifest)
CONVENTIONS = {
    "bae": {
        "name": "scannet_rgb",
        "channels": "R=x (towards image left), G=y (up), B=z (towards the camera)",
        "encoding": "rgb = (n + 1) / 2 * 255",
        "source": "NormalBAE, ControlNet 1.1 normalbae",
    },
    "depth": {
        "name": "controlnet10_sobel",
        "channels": "R=2*pi (z), G=Sobel y of inverse depth, B=Sobel x of inverse depth",
        "encoding": "rgb = n / |n| * 127.5 + 127.5; x, y = 0 where normalised depth < bg_threshold",
        "source": "ControlNet 1.0 normal (MiDaS depth), channels as fed to control_sd15_normal",
    },
}
#: DSINE and Marigold normals are mapped to NormalBAE's axes and encoding
CONVENTIONS["dsine"] = {**CONVENTIONS["bae"], "source": "DSINE (its own axes equal NormalBAE's)"}
CONVENTIONS["marigold"] = {
    **CONVENTIONS["bae"],
    "source": "Marigold normals (x right, y up, z to the viewer), x negated to NormalBAE's axes",
}
#: learned backends run by a runner object (load() -> identities, predict(images) -> normals)
RUNNER_BACKENDS = ("dsine", "marigold")


def normal_from_depth(
    depth: np.ndarray,
    bg_threshold: float = 0.4,
    z: float = 2.0 * math.pi,
    depth_range: float = 0.0,
) -> np.ndarray:
    """ControlNet 1.0 normals from relative inverse depth (near = large): HxWx3 uint8, R=z G=y B=x.

    x, y = 3x3 Sobel of the depth; z = 2*pi; x and y are zeroed where the depth normalised
    to 0..1 is below ``bg_threshold`` (background faces the camera); then unit length,
    *127.5+127.5; channels reversed as 1.0's app fed them to the model (``[:, :, ::-1]``).
    ``depth_range`` > 0 first rescales the depth to [0, depth_range], so that the slopes do
    not depend on a model's arbitrary output scale (0 = the raw output, as 1.0 used MiDaS's).
    """
    depth = np.asarray(depth, dtype=np.float32)
    span = float(depth.max() - depth.min())
    relative = (depth - depth.min()) / span if span > 0 else np.zeros_like(depth)
    if depth_range > 0:
        depth = relative * np.float32(depth_range)
    gx = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    background = relative < bg_threshold
    gx[background] = 0
    gy[background] = 0
    normal = np.stack([gx, gy, np.full_like(gx, z)], axis=2)  # summed in this order below
    normal /= np.sum(normal**2.0, axis=2, keepdims=True) ** 0.5
    rgb = (normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def build_bae() -> Any:
    """NormalBAE (``NNET``: encoder.original_model = EfficientNet-B5, decoder), published names."""
    from annotators.nets.bae import NNET

    return NNET()


def bae_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The network weights inside ``scannet.pt`` (its ``model`` entry; ``module.`` prefix removed)."""
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, dict):
        from annotators.weights import WeightsError

        raise WeightsError(f"{BAE_WEIGHTS.filename}: 'model' entry is not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_bae(
    weights_dir: str = "",
    device: str = "cpu",
    offline: bool | None = None,
    spec: WeightsFile = BAE_WEIGHTS,
) -> tuple[Any, dict[str, Any]]:
    """NormalBAE with ``scannet.pt`` loaded (strict), and the file's identity."""
    return load_network(
        spec, build_bae, weights_dir=weights_dir, device=device, offline=offline, extract=bae_state
    )


def normals_to_rgb(normals: np.ndarray) -> np.ndarray:
    """(n + 1) / 2 as uint8 RGB, clipped (the ControlNet 1.1 NormalBAE encoding)."""
    return ((normals + 1.0) * 0.5 * 255.0).clip(0, 255).astype(np.uint8)


@register
class Normal(LearnedAnnotator):
    """Surface normals as RGB: NormalBAE (``bae``, ControlNet 1.1) or from depth (``depth``, 1.0)."""

    name = "normal"
    version = "2"
    outputs = ("normal",)
    stats = ("normal_mean_z",)
    gpu_batch_size = 8  # EfficientNet-B5 and a full-resolution decoder
    description = (
        "surface normals, RGB; bae needs scannet.pt, dsine dsine.pt, marigold its pipeline "
        "folder, depth the depth model"
    )
    params = (
        Param(
            "backend",
            "bae",
            "bae (NormalBAE network), depth (Sobel on depth), dsine (DSINE) or marigold "
            "(Marigold normals, diffusers)",
            choices=("bae", "depth", "dsine", "marigold"),
        ),
        Param(
            "bg_threshold",
            0.4,
            "depth: flat normal where normalised depth is below this (ControlNet 1.0's app: 0.4)",
            maximum=1,
        ),
        Param(
            "depth_model",
            "",
            "depth: model of the depth annotator ('' = its default, dpt-hybrid; "
            "depth-anything-v2-small/base/large for Depth Anything V2)",
        ),
        Param(
            "depth_range",
            0.0,
            "depth: rescale the depth to [0, this] before Sobel (0 = the model's raw output, "
            "as 1.0 used MiDaS's; set it for models with another output scale)",
        ),
        Param("depth_resolution", 0, "depth: working short side of the depth model (0 = its own)"),
        Param(
            "fov", 60.0, "dsine: assumed field of view in degrees (the authors' 60)", maximum=179
        ),
        Param("iterations", 5, "dsine: refinement rounds (5, as trained)"),
        Param(
            "marigold_model",
            next(iter(marigold.NORMALS_MODELS)),
            "marigold: published model, or a hub id / local folder of a Marigold normals pipeline",
        ),
        *marigold.PARAMS,
        *LEARNED_PARAMS,
    )

    def _validate(self) -> None:
        super()._validate()
        if not 0.0 <= self.config["bg_threshold"] <= 1.0:
            raise ValueError(
                f"normal: bg_threshold must be in [0, 1], got {self.config['bg_threshold']}"
            )
        marigold.validate(self.name, self.config)

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        """``scannet.pt`` for backend bae (backend depth needs the depth annotator's files)."""
        return [BAE_WEIGHTS]

    @classmethod
    def weights_by_backend(cls) -> dict[str, list[Any]]:
        """bae: scannet.pt; depth: the default depth model's files."""
        from annotators.dsine import DSINE_WEIGHTS
        from annotators.registry import get

        spec = next(iter(marigold.NORMALS_MODELS.values()))
        return {
            "bae": [BAE_WEIGHTS],
            "depth": get("depth").weights_files(),
            "dsine": [DSINE_WEIGHTS],
            "marigold": [
                WeightsFile(name, repo_id=spec.repo_id, licence=spec.licence) for name in spec.files
            ],  # fmt: skip
        }

    @classmethod
    def model_folders(cls) -> dict[str, Any]:
        """The Marigold normals pipelines of ``backend=marigold``."""
        return dict(marigold.NORMALS_MODELS)

    @classmethod
    def catalogue(cls) -> dict[str, dict[str, Any]]:
        """Adds each backend's reference implementation (DSINE's and Marigold's own)."""
        from annotators.dsine import REFERENCE

        entries = super().catalogue()
        entries["dsine"]["reference"] = REFERENCE
        entries["marigold"]["reference"] = marigold.REFERENCE
        return entries

    def configured_weights(self) -> list[Any]:
        """The checkpoint of the configured torch backend (bae: scannet.pt, dsine: dsine.pt)."""
        return self.weights_by_backend()[self.config["backend"]]

    def marigold_id(self) -> str:
        """Hub id (or folder) of the configured Marigold normals model."""
        name = self.config["marigold_model"]
        return marigold.NORMALS_MODELS[name].repo_id if name in marigold.NORMALS_MODELS else name

    @classmethod
    def benchmark_variants(cls) -> list[dict[str, Any]]:
        """Parameter sets a speed benchmark runs (the depth backend is timed as ``depth``)."""
        return [{"backend": "bae"}]

    def requirements(self) -> tuple[tuple[str, str], ...]:
        """bae: torch and timm; depth: what the depth annotator needs (torch, transformers)."""
        from annotators.extras import TORCH, TRANSFORMERS

        backend = self.config["backend"]
        if backend == "marigold":
            return marigold.requirements()
        return (*TORCH, ("timm", "models")) if backend in ("bae", "dsine") else TRANSFORMERS

    def find_weights(self) -> None:
        """scannet.pt (bae) or the depth annotator's model (depth)."""
        if self.config["backend"] == "marigold":
            marigold.resolve_pipeline(self.marigold_id(), self.config["weights_dir"])
        elif self.config["backend"] in ("bae", "dsine"):
            super().find_weights()
        else:
            self._depth_annotator().find_weights()

    def _depth_annotator(self) -> Any:
        cfg = self.config
        extra = {"model": cfg["depth_model"]} if cfg["depth_model"] else {}
        extra["resolution"] = cfg["depth_resolution"]
        return create("depth", device=cfg["device"], weights_dir=cfg["weights_dir"], **extra)

    def _load_networks(self) -> list[dict[str, Any]]:
        cfg = self.config
        if cfg["backend"] == "bae":
            self.model, ident = self.load_torch(BAE_WEIGHTS, build_bae, extract=bae_state)
            return [ident]
        if cfg["backend"] == "dsine":
            from annotators.dsine import DsineRunner

            self.runner: Any = DsineRunner(self)
            return self.runner.load()
        if cfg["backend"] == "marigold":
            self.runner = marigold.MarigoldRunner(
                "normals",
                self.marigold_id(),
                cfg,
                self.device,
                self.dtype,
                self.network_batch_size,
            )
            return self.runner.load()
        self.depth = self._depth_annotator()
        self.depth.load()
        return self.depth.weights_identity()

    def weights_identity(self) -> list[dict[str, Any]]:
        if self._loaded is None and self.config["backend"] == "depth":
            return []  # known once the depth annotator is loaded
        if self._loaded is None and self.config["backend"] == "marigold":
            return marigold.find_identity(self.marigold_id(), self.config["weights_dir"])
        return super().weights_identity()

    def info(self) -> dict[str, Any]:
        """Adds ``convention``: what the colours mean (channel order, encoding)."""
        return {**super().info(), "convention": CONVENTIONS[self.config["backend"]]}

    def predict_normals(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """NormalBAE unit normals (HxWx3 float32, ScanNet axes) for each image, batched per size."""
        import torch

        self.load()
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255.0
        found: list[np.ndarray] = [np.empty(0)] * len(images)
        for group, batch in self.padded_batches(images, BAE_MULTIPLE):
            height, width = images[group[0]].shape[:2]
            with torch.inference_mode(), self.autocast():
                pred = self.model((batch - mean) / std)
            normals = pred[:, :3, :height, :width].float().permute(0, 2, 3, 1).cpu().numpy()
            for i, n in zip(group, normals, strict=True):
                found[i] = n
        return found

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        self.load()
        if self.config["backend"] == "bae":
            maps = [normals_to_rgb(n) for n in self.predict_normals(images)]
        elif self.config["backend"] in RUNNER_BACKENDS:
            maps = [normals_to_rgb(n) for n in self.runner.predict(images)]
        else:
            # as 1.0's app: normals at the depth network's working size, then resized (linear)
            depths = self.depth.predict_depth(images, at_image_size=False)
            maps = []
            for image, d in zip(images, depths, strict=True):
                rgb = normal_from_depth(
                    d, self.config["bg_threshold"], depth_range=self.config["depth_range"]
                )
                height, width = image.shape[:2]
                if rgb.shape[:2] != (height, width):
                    rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
                maps.append(rgb)
        return [
            Annotation(maps={"normal": m}, stats={"normal_mean_z": float(m[..., 2].mean()) / 255.0})
            for m in maps
        ]
