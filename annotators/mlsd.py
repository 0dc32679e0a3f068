"""The M-LSD large line-segment network (``mlsd_large_512_fp32.pth``) behind ``lines`` backend mlsd.

MobileNetV2 backbone (first 14 blocks, 4-channel input: RGB plus a constant plane) and a
four-stage top-down decoder. The output at half resolution holds, per pixel, a line-centre
score and the displacements to both segment ends; segments are read from the score peaks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from annotators.learned import autocast, groups_by_size, load_network, resolve_dtype, to_tensor
from annotators.weights import WeightsFile

MLSD_WEIGHTS = WeightsFile("mlsd_large_512_fp32.pth", size_hint="6 MB")
#: output stride 16 (backbone) and TF-style stride-2 padding: pad the input to this multiple
MLSD_MULTIPLE = 32
TOPK = 200  # candidate centres per image
PEAK_KERNEL = 3  # local-maximum window on the centre heat map


def build_mlsd() -> Any:
    """MobileV2_MLSD_Large (parameter names as in the published checkpoint)."""
    from annotators.nets.mlsd import MLSDLarge

    return MLSDLarge()


def load_mlsd(
    weights_dir: str = "",
    device: str = "cpu",
    offline: bool | None = None,
    spec: WeightsFile = MLSD_WEIGHTS,
) -> tuple[Any, dict[str, Any]]:
    """The M-LSD large network with its checkpoint loaded (strict), and the file's identity."""
    return load_network(spec, build_mlsd, weights_dir=weights_dir, device=device, offline=offline)


def decode_segments(
    output: np.ndarray, score_threshold: float, distance_threshold: float
) -> np.ndarray:
    """Segments (N, 4: x1 y1 x2 y2, input pixels) from one 9xhxw output map (half resolution).

    Top-200 local maxima (3x3) of sigmoid(centre score); a segment is kept when its score
    exceeds ``score_threshold`` and its length on the half-resolution map exceeds
    ``distance_threshold``; coordinates are doubled back to input pixels.
    """
    import torch

    centre = torch.sigmoid(torch.from_numpy(output[0]))[None]
    peaks = torch.nn.functional.max_pool2d(centre, PEAK_KERNEL, stride=1, padding=PEAK_KERNEL // 2)
    heat = (centre * (peaks == centre)).reshape(-1)
    scores, indices = torch.topk(heat, min(TOPK, heat.numel()))
    width = output.shape[2]
    ys, xs = (indices // width).numpy(), (indices % width).numpy()
    disp = output[1:5, ys, xs].T  # (k, 4): start dx, dy, end dx, dy
    lengths = np.hypot(disp[:, 0] - disp[:, 2], disp[:, 1] - disp[:, 3])
    keep = (scores.numpy() > score_threshold) & (lengths > distance_threshold)
    # float64 as the reference (int64 centre + float32 displacement), so truncation agrees
    centres = np.stack([xs, ys, xs, ys], axis=1)[keep].astype(np.float64)
    return 2.0 * (centres + disp[keep].astype(np.float64))


def detect_segments(
    model: Any,
    images: list[np.ndarray],
    device: str,
    score_threshold: float = 0.1,
    distance_threshold: float = 0.1,
    precision: str = "fp32",
    batch_size: int = 8,
) -> list[np.ndarray]:
    """M-LSD segments for each image (batched per image size), in the image's pixel coordinates."""
    import torch

    found: list[np.ndarray] = [np.zeros((0, 4), np.float32)] * len(images)
    for group in groups_by_size(images, batch_size):
        rgb = to_tensor([images[i] for i in group], MLSD_MULTIPLE, device)
        ones = torch.ones_like(rgb[:, :1])  # the reference appends a plane of ones before scaling
        batch = torch.cat([rgb, ones], dim=1) / 127.5 - 1.0
        with torch.inference_mode(), autocast(device, resolve_dtype(precision, device)):
            outputs = model(batch).float().cpu().numpy()
        for i, output in zip(group, outputs, strict=True):
            found[i] = decode_segments(output, score_threshold, distance_threshold)
    return found
