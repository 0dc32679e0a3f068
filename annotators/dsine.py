"""DSINE surface normals (``normal`` with ``backend=dsine``): ``dsine.pt``, as its authors run it.

As DSINE's ``test_minimal.py`` (the CVPR 2024 ``exp001`` checkpoint): RGB / 255, zero-padded
(black) centred to a multiple of 32, ImageNet-normalised; intrinsics from a field of view of
60 degrees (fx = fy = max(H, W) / 2 / tan(fov / 2), principal point at the image centre, shifted
by the padding); 5 refinement rounds; the last output cropped back. The map is (n + 1) / 2 in
NormalBAE's axes (red = left, green = up, blue = towards the camera), the encoding ComfyUI's
and the WebUI's DSINE preprocessors draw for ControlNet 1.1's normalbae model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from annotators.learned import LearnedAnnotator, groups_by_size
from annotators.weights import WeightsFile

DSINE_WEIGHTS = WeightsFile(
    "dsine.pt",
    repo_id="bdsqlsz/qinglong_controlnet-lllite",
    subfolder="Annotators",
    size_hint="290 MB",
    licence="DSINE Software Licence Agreement (Imperial College London): non-commercial research only",
)
REFERENCE = "baegwangbin/DSINE projects/dsine/test_minimal.py (fov 60, 5 iterations)"
MULTIPLE = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_dsine() -> Any:
    """The DSINE v02 network, published parameter names."""
    from annotators.nets.dsine import DSINE

    return DSINE()


def dsine_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The network weights inside ``dsine.pt`` (its ``model`` entry; ``module.`` prefix removed)."""
    from annotators.normal import bae_state

    return bae_state(checkpoint)


def centred_padding(height: int, width: int, multiple: int = MULTIPLE) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding to the next multiple, split as DSINE's ``get_padding``."""
    pads = []
    for side in (width, height):
        extra = -side % multiple
        pads += [extra // 2, extra - extra // 2]
    return pads[0], pads[1], pads[2], pads[3]


def intrinsics(height: int, width: int, fov: float) -> np.ndarray:
    """3x3 pinhole intrinsics for a field of view (degrees) over the longer side, centred."""
    focal = (max(height, width) / 2.0) / math.tan(math.radians(fov / 2.0))
    return np.array([[focal, 0, width / 2.0 - 0.5], [0, focal, height / 2.0 - 0.5], [0, 0, 1]],
                    np.float32)  # fmt: skip


class DsineRunner:
    """``dsine.pt`` loaded for a ``normal`` annotator; unit normals per image, NormalBAE axes."""

    def __init__(self, annotator: LearnedAnnotator) -> None:
        self.annotator = annotator
        self.model: Any = None

    def load(self) -> list[dict[str, Any]]:
        self.model, ident = self.annotator.load_torch(
            DSINE_WEIGHTS, build_dsine, extract=dsine_state
        )
        return [ident]

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """HxWx3 float32 unit normals for each RGB image, batched per size."""
        import torch
        from torch.nn import functional as F

        ann = self.annotator
        cfg, device = ann.config, ann.device
        self.model.iterations = cfg["iterations"]
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        found: list[np.ndarray] = [np.empty(0)] * len(images)
        for group in groups_by_size(images, ann.network_batch_size()):
            height, width = images[group[0]].shape[:2]
            left, right, top, bottom = centred_padding(height, width)
            batch = torch.from_numpy(np.stack([images[i] for i in group])).to(device)
            batch = batch.permute(0, 3, 1, 2).float() / 255.0
            batch = (F.pad(batch, (left, right, top, bottom)) - mean) / std
            k = torch.from_numpy(intrinsics(height, width, cfg["fov"])).to(device)
            k[0, 2] += left
            k[1, 2] += top
            with torch.inference_mode(), ann.autocast():
                out = self.model(batch, k.expand(len(group), 3, 3))
            out = out.float()[:, :, top : top + height, left : left + width]
            for i, n in zip(group, out.permute(0, 2, 3, 1).cpu().numpy(), strict=True):
                found[i] = n
        return found
