"""Surface normal maps (RGB): learned NormalBAE (ControlNet 1.1) or Sobel on depth (ControlNet 1.0).

``backend="bae"``: the NormalBAE network (checkpoint ``scannet.pt`` from lllyasviel/Annotators;
EfficientNet-B5 encoder from timm + the BAE decoder); rgb = (n + 1) / 2 in the ScanNet
convention: red = left (x), green = up (y), blue = towards the camera (z).

``backend="depth"``: ControlNet 1.0's recipe on the ``depth`` annotator's relative inverse
depth: Sobel x/y, z = 2*pi, x/y zeroed where the normalised depth < 0.4, unit length,
rgb = n * 127.5 + 127.5 with R = x, G = y, B = z.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from annotators.base import Annotation, Param
from annotators.inference import (
    TORCH_PARAMS,
    TorchAnnotator,
    autocast,
    groups_by_size,
    load_network,
    random_state,
    to_tensor,
    write_state,
)
from annotators.registry import create, register
from annotators.weights import WeightsFile

BAE_WEIGHTS = WeightsFile("scannet.pt", size_hint="290 MB")
#: the EfficientNet variant NormalBAE was trained with (timm name; same layout as geffnet's
#: tf_efficientnet_b5_ap, which the original code loads)
BAE_BACKBONE = "tf_efficientnet_b5"
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
        "channels": "R=Sobel x of inverse depth, G=Sobel y of inverse depth, B=2*pi",
        "encoding": "rgb = n / |n| * 127.5 + 127.5; x, y = 0 where normalised depth < bg_threshold",
        "source": "ControlNet 1.0 normal (MiDaS depth)",
    },
}


def normal_from_depth(
    depth: np.ndarray, bg_threshold: float = 0.4, z: float = 2.0 * math.pi
) -> np.ndarray:
    """ControlNet 1.0 normals from relative inverse depth (near = large): HxWx3 uint8, R=x G=y B=z.

    x, y = 3x3 Sobel of the depth; z = 2*pi; x and y are zeroed where the depth normalised
    to 0..1 is below ``bg_threshold`` (background faces the camera); then unit length, *127.5+127.5.
    """
    depth = np.asarray(depth, dtype=np.float32)
    span = float(depth.max() - depth.min())
    relative = (depth - depth.min()) / span if span > 0 else np.zeros_like(depth)
    gx = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    background = relative < bg_threshold
    gx[background] = 0
    gy[background] = 0
    normal = np.stack([gx, gy, np.full_like(gx, z)], axis=2)
    normal /= np.sqrt(np.sum(normal**2, axis=2, keepdims=True))
    return (normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)


def build_bae() -> Any:
    """NormalBAE (``NNET``: encoder.original_model = EfficientNet-B5, decoder), published names."""
    import timm
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # num_classes=0: no classifier, as the original replaces it (and global_pool) by Identity
            self.original_model = timm.create_model(BAE_BACKBONE, pretrained=False, num_classes=0)

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            """Skips at strides 2, 4, 8, 16 (blocks 0, 1, 2, 4) and the conv_head output (32)."""
            net = self.original_model
            x = net.bn1(net.conv_stem(x))
            outs = []
            for block in net.blocks:
                x = block(x)
                outs.append(x)
            return [outs[0], outs[1], outs[2], outs[4], net.conv_head(x)]

    class UpSampleBN(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self._net = nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(),
            )

        def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
            x = nn.functional.interpolate(
                x, size=skip.shape[-2:], mode="bilinear", align_corners=True
            )
            return self._net(torch.cat([x, skip], dim=1))

    def point_head(cin: int) -> nn.Sequential:
        """Per-pixel MLP (1x1 Conv1d) refining the upsampled prediction."""
        return nn.Sequential(
            nn.Conv1d(cin, 128, 1),
            nn.ReLU(),
            nn.Conv1d(128, 128, 1),
            nn.ReLU(),
            nn.Conv1d(128, 128, 1),
            nn.ReLU(),
            nn.Conv1d(128, 4, 1),
        )

    def unit(pred: torch.Tensor) -> torch.Tensor:
        """Normalise the xyz part to unit length; kappa -> elu + 1.01 (as the reference)."""
        xyz, kappa = pred[:, :3], pred[:, 3:]
        xyz = xyz / (torch.sqrt((xyz**2).sum(dim=1, keepdim=True)) + 1e-10)
        return torch.cat([xyz, nn.functional.elu(kappa) + 1.01], dim=1)

    def up2(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv2 = nn.Conv2d(2048, 2048, 1)
            self.up1 = UpSampleBN(2048 + 176, 1024)
            self.up2 = UpSampleBN(1024 + 64, 512)
            self.up3 = UpSampleBN(512 + 40, 256)
            self.up4 = UpSampleBN(256 + 24, 128)
            self.out_conv_res8 = nn.Conv2d(512, 4, 3, padding=1)
            self.out_conv_res4 = point_head(512 + 4)
            self.out_conv_res2 = point_head(256 + 4)
            self.out_conv_res1 = point_head(128 + 4)

        def refine(self, head: nn.Module, feat: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
            """Test-mode refinement at every pixel of the next (2x) resolution."""
            x = torch.cat([up2(feat), up2(pred)], dim=1)
            b, c, h, w = x.shape
            return unit(head(x.reshape(b, c, h * w))).reshape(b, 4, h, w)

        def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
            b0, b1, b2, b3, b4 = skips
            d1 = self.up1(self.conv2(b4), b3)
            d2 = self.up2(d1, b2)
            d3 = self.up3(d2, b1)
            d4 = self.up4(d3, b0)
            pred = unit(self.out_conv_res8(d2))
            pred = self.refine(self.out_conv_res4, d2, pred)
            pred = self.refine(self.out_conv_res2, d3, pred)
            return self.refine(self.out_conv_res1, d4, pred)  # full resolution, Bx4xHxW

    class NNET(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = Encoder()
            self.decoder = Decoder()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.encoder(x))

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


def write_random_weights(folder: Path, *, tiny: bool = False) -> list[Path]:
    """Write a random ``scannet.pt`` ({"model": state dict}) in the published layout (real size)."""
    path = Path(folder) / BAE_WEIGHTS.filename
    write_state(path, {"model": random_state(build_bae)})
    return [path]


def predict_normals(
    model: Any, images: list[np.ndarray], device: str, precision: str, batch_size: int = 8
) -> list[np.ndarray]:
    """NormalBAE unit normals (HxWx3 float32, ScanNet axes) for each image, batched per size."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0
    found: list[np.ndarray] = [np.empty(0)] * len(images)
    for group in groups_by_size(images, batch_size):
        height, width = images[group[0]].shape[:2]
        batch = (to_tensor([images[i] for i in group], BAE_MULTIPLE, device) - mean) / std
        with torch.inference_mode(), autocast(device, precision):
            pred = model(batch)
        normals = pred[:, :3, :height, :width].float().permute(0, 2, 3, 1).cpu().numpy()
        for i, n in zip(group, normals, strict=True):
            found[i] = n
    return found


def normals_to_rgb(normals: np.ndarray) -> np.ndarray:
    """(n + 1) / 2 as uint8 RGB, clipped (the ControlNet 1.1 NormalBAE encoding)."""
    return ((normals + 1.0) * 0.5 * 255.0).clip(0, 255).astype(np.uint8)


@register
class Normal(TorchAnnotator):
    """Surface normals as RGB: NormalBAE (``bae``, ControlNet 1.1) or from depth (``depth``, 1.0)."""

    name = "normal"
    version = "1"
    outputs = ("normal",)
    description = "surface normals, RGB; bae needs scannet.pt, depth needs the depth model"
    params = (
        Param(
            "backend",
            "bae",
            "bae (NormalBAE network) or depth (Sobel on depth)",
            choices=("bae", "depth"),
        ),
        Param(
            "bg_threshold",
            0.4,
            "depth: flat normal where normalised depth is below this",
            maximum=1,
        ),
        Param("depth_model", "", "depth: model of the depth annotator ('' = its default)"),
        *TORCH_PARAMS,
    )

    def _validate(self) -> None:
        super()._validate()
        if not 0.0 <= self.config["bg_threshold"] <= 1.0:
            raise ValueError(
                f"normal: bg_threshold must be in [0, 1], got {self.config['bg_threshold']}"
            )

    @classmethod
    def weights_files(cls) -> list[WeightsFile]:
        """``scannet.pt`` for backend bae (backend depth needs the depth annotator's files)."""
        return [BAE_WEIGHTS]

    @classmethod
    def weights_by_backend(cls) -> dict[str, list[Any]]:
        """bae: scannet.pt; depth: the default depth model's files."""
        from annotators.registry import get

        return {"bae": [BAE_WEIGHTS], "depth": get("depth").weights_files()}

    @classmethod
    def benchmark_variants(cls) -> list[dict[str, Any]]:
        """Parameter sets a speed benchmark runs (the depth backend is timed as ``depth``)."""
        return [{"backend": "bae"}]

    def _load_networks(self) -> list[dict[str, Any]]:
        cfg = self.config
        if cfg["backend"] == "bae":
            self.model, ident = load_bae(cfg["weights_dir"], self.device)
            return [ident]
        extra = {"model": cfg["depth_model"]} if cfg["depth_model"] else {}
        self.depth = create("depth", device=cfg["device"], weights_dir=cfg["weights_dir"], **extra)
        self.depth.load()
        return self.depth.weights_identity()

    def weights_identity(self) -> list[dict[str, Any]]:
        if self._loaded is None and self.config["backend"] == "depth":
            return []  # known once the depth annotator is loaded
        return super().weights_identity()

    def info(self) -> dict[str, Any]:
        """Adds ``convention``: what the colours mean (channel order, encoding)."""
        return {**super().info(), "convention": CONVENTIONS[self.config["backend"]]}

    def _annotate_batch(
        self, images: list[np.ndarray], rngs: list[np.random.Generator]
    ) -> list[Annotation]:
        self.load()
        if self.config["backend"] == "bae":
            maps = [
                normals_to_rgb(n)
                for n in predict_normals(
                    self.model, images, self.device, self.precision, self.config["batch_size"]
                )
            ]
        else:
            depths = self.depth.predict_depth(images)
            maps = [normal_from_depth(d, self.config["bg_threshold"]) for d in depths]
        return [
            Annotation(maps={"normal": m}, stats={"normal_mean_z": float(m[..., 2].mean()) / 255.0})
            for m in maps
        ]
