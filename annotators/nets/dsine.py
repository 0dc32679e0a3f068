"""DSINE (Bae & Davison, CVPR 2024; ``dsine.pt``, the ``v02`` network of baegwangbin/DSINE).

EfficientNet-B5 encoder (the NormalBAE one), a decoder conditioned on per-pixel ray directions
(weight-standardised convolutions + GroupNorm), then ``iterations`` rounds of neighbour-based
refinement at 1/8 resolution: a ConvGRU predicts, for each pixel's 5x5 neighbours, a weight, a
rotation axis and an angle; the neighbours' normals are rotated, passed through the ray ReLU
(normals must face the camera) and averaged; convex upsampling (learned 3x3 weights) gives the
full-resolution output. Parameter names equal the published checkpoint's keys.

Output: unit normals (B, 3, H, W) with x = image left, y = up, z = towards the camera (the
NormalBAE / ScanNet convention: DSINE's normals have a positive dot product with the viewing ray
in OpenCV camera axes, i.e. they are the negated camera-axis normals).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from annotators.nets.bae import Encoder

#: EfficientNet-B5 channels at strides 8 and 16 (blocks 2 and 4) and of conv_head (stride 32)
SKIP_CHANNELS = (64, 176, 2048)
#: decoder width (``NNET_decoder_NF``), feature / hidden state width, neighbourhood, output stride
WIDTH, STATE, PATCH, STRIDE = 2048, 64, 5, 8


def head(cin: int, hidden: int, cout: int) -> nn.Sequential:
    """3x3 conv, ReLU, 1x1 conv, ReLU, 1x1 conv (keys 0, 2, 4)."""
    return nn.Sequential(
        nn.Conv2d(cin, hidden, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, hidden, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, cout, 1),
    )


class StandardizedConv2d(nn.Conv2d):
    """Convolution with weight standardisation: each filter minus its mean, over its std + 1e-5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = w - w.mean(dim=(1, 2, 3), keepdim=True)
        w = w / (w.flatten(1).std(dim=1).view(-1, 1, 1, 1) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class UpBlock(nn.Module):
    """Bilinear upsampling (align_corners=False) to the skip's size, concat, 2 x (WS conv, GN, LeakyReLU)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self._net = nn.Sequential(
            StandardizedConv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(8, cout),
            nn.LeakyReLU(),
            StandardizedConv2d(cout, cout, 3, padding=1),
            nn.GroupNorm(8, cout),
            nn.LeakyReLU(),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self._net(torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    """Initial normals, features and hidden state at 1/8 from the encoder and ray encodings."""

    def __init__(self) -> None:
        super().__init__()
        s8, s16, s32 = SKIP_CHANNELS
        self.conv2 = nn.Conv2d(s32 + 2, WIDTH, 1)
        self.up1 = UpBlock(WIDTH + s16 + 2, WIDTH // 2)
        self.up2 = UpBlock(WIDTH // 2 + s8 + 2, WIDTH // 4)
        self.normal_head = head(WIDTH // 4 + 2, 128, 3)
        self.feature_head = head(WIDTH // 4 + 2, 128, STATE)
        self.hidden_head = head(WIDTH // 4 + 2, 128, STATE)

    def forward(
        self, feats: list[torch.Tensor], uvs: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        uv32, uv16, uv8 = uvs
        x = self.conv2(torch.cat([feats[4], uv32], dim=1))
        x = self.up1(x, torch.cat([feats[3], uv16], dim=1))
        x = self.up2(x, torch.cat([feats[2], uv8], dim=1))
        x = torch.cat([x, uv8], dim=1)
        normal = F.normalize(self.normal_head(x), dim=1)
        return normal, self.feature_head(x), self.hidden_head(x)


class ConvGRU(nn.Module):
    """Convolutional GRU cell (5x5 gates)."""

    def __init__(self, hidden: int, cin: int, kernel: int) -> None:
        super().__init__()
        pad = (kernel - 1) // 2
        self.convz = nn.Conv2d(hidden + cin, hidden, kernel, padding=pad)
        self.convr = nn.Conv2d(hidden + cin, hidden, kernel, padding=pad)
        self.convq = nn.Conv2d(hidden + cin, hidden, kernel, padding=pad)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


def neighbours(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size*size, H, W): each pixel's neighbourhood, edges replicated."""
    b, c, h, w = x.shape
    pad = (size - 1) // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return F.unfold(x, size).view(b, c, size * size, h, w)


def convex_upsample(x: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Each output pixel is a softmax-weighted mix of its coarse pixel's 3x3 neighbours."""
    b, c, h, w = x.shape
    weights = mask.view(b, 1, 9, k, k, h, w).softmax(dim=2)
    near = neighbours(x, 3).view(b, c, 9, 1, 1, h, w)
    out = (weights * near).sum(dim=2)  # (B, C, k, k, H, W)
    return out.permute(0, 1, 4, 2, 5, 3).reshape(b, c, k * h, k * w)


def ray_relu(normal: torch.Tensor, ray: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """Make the cosine between normal and viewing ray at least ``eps`` (dim 1 holds xyz)."""
    cos = F.cosine_similarity(normal, ray, dim=1).unsqueeze(1)
    return F.normalize(normal + ray * (torch.relu(cos - eps) + eps - cos), dim=1)


def rotate(v: torch.Tensor, axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotate vectors ``v`` by axis-angle vectors (both with xyz in dim 1), Rodrigues' formula."""
    angle = axis_angle.norm(dim=1, keepdim=True)
    small = angle < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    sin_term = torch.where(small, 1 - angle**2 / 6, torch.sin(safe) / safe)
    cos_term = torch.where(small, 0.5 - angle**2 / 24, (1 - torch.cos(safe)) / safe**2)
    cross = torch.linalg.cross(axis_angle, v, dim=1)
    dot = (axis_angle * v).sum(dim=1, keepdim=True)
    return v * torch.cos(angle) + cross * sin_term + axis_angle * dot * cos_term


def pixel_grid(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(1, 3, h, w): pixel centres (x + 0.5, y + 0.5, 1)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=like.dtype, device=like.device) + 0.5,
        torch.arange(w, dtype=like.dtype, device=like.device) + 0.5,
        indexing="ij",
    )
    return torch.stack([xs, ys, torch.ones_like(xs)])[None]


class DSINE(nn.Module):
    """DSINE v02 (B5 encoder, NF 2048, stride 8, 5x5 neighbours, ray ReLU), published key names."""

    def __init__(self, iterations: int = 5) -> None:
        super().__init__()
        self.iterations = iterations
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.gru = ConvGRU(STATE, STATE + 2, PATCH)
        taps = PATCH * PATCH
        self.prob_head = head(STATE + 2, 64, taps)
        self.xy_head = head(STATE + 2, 64, taps * 2)
        self.angle_head = head(STATE + 2, 64, taps)
        self.up_prob_head = head(STATE + 2, 64, 9 * STRIDE * STRIDE)

    @staticmethod
    def _scaled(intrins: torch.Tensor, h: int, w: int, height: int, width: int) -> torch.Tensor:
        """(B, 4, 1, 1) fx, cx, fy, cy of the (height, width) input, scaled to an (h, w) grid."""
        sx, sy = w / width, h / height
        k = torch.stack(
            [
                intrins[:, 0, 0] * sx,
                intrins[:, 0, 2] * sx,
                intrins[:, 1, 1] * sy,
                intrins[:, 1, 2] * sy,
            ],
            dim=1,
        )
        return k[:, :, None, None]

    def _uv(self, intrins: torch.Tensor, h: int, w: int, height: int, width: int) -> torch.Tensor:
        """(B, 2, h, w) normalised image coordinates of the grid's pixel centres."""
        k = self._scaled(intrins, h, w, height, width)
        grid = pixel_grid(h, w, intrins)
        return torch.cat(
            [(grid[:, :1] - k[:, 1:2]) / k[:, :1], (grid[:, 1:2] - k[:, 3:]) / k[:, 2:3]], 1
        )

    def _refine(
        self, h: torch.Tensor, feat: torch.Tensor, normal: torch.Tensor, k: torch.Tensor,
        uv8: torch.Tensor, ray8: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """One refinement round: new hidden state, normals at 1/8 and upsampled."""
        fx, cx, fy, cy = k[:, 0:1], k[:, 1:2], k[:, 2:3], k[:, 3:4]  # (B, 1, 1, 1)
        h = self.gru(h, feat)
        state = torch.cat([h, uv8], dim=1)
        prob = torch.sigmoid(self.prob_head(state)).unsqueeze(1)  # (B, 1, 25, h, w)
        near = neighbours(normal, PATCH)  # (B, 3, 25, h, w)
        taps = PATCH * PATCH
        xy = self.xy_head(state)
        xy = F.normalize(
            torch.stack([xy[:, :taps], xy[:, taps:]], dim=1), dim=1
        )  # (B, 2, 25, h, w)
        angle = torch.sigmoid(self.angle_head(state)).unsqueeze(1) * math.pi
        pix = neighbours(pixel_grid(*normal.shape[-2:], normal), PATCH)
        du, dv = xy[:, 0] / fx, xy[:, 1] / fy
        tu = (pix[:, 0] + xy[:, 0] - cx) / fx
        tv = (pix[:, 1] + xy[:, 1] - cy) / fy
        nx, ny, nz = near[:, 0], near[:, 1], near[:, 2]
        den = tu * nx + tv * ny + nz
        den = torch.where(den.abs() < 1e-8, 1e-8 * torch.sign(den), den)
        dz = -(du * nx + dv * ny) / den
        axes = F.normalize(torch.stack([du + dz * tu, dv + dz * tv, dz], dim=1), dim=1)
        bad = (~torch.isfinite(axes)).any(dim=1, keepdim=True)
        axes = torch.where(bad, torch.zeros_like(axes), axes)
        turned = F.normalize(rotate(near, axes * angle), dim=1)
        turned = ray_relu(turned, ray8.unsqueeze(2))
        normal = F.normalize((prob * turned).sum(dim=2), dim=1)
        return h, normal, self._upsample(state, normal)

    def _upsample(self, state: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
        return F.normalize(convex_upsample(normal, self.up_prob_head(state), STRIDE), dim=1)

    def forward(self, img: torch.Tensor, intrins: torch.Tensor) -> torch.Tensor:
        """Normals (B, 3, H, W) of ImageNet-normalised images (sides multiples of 32) with
        pinhole intrinsics (B, 3, 3) in pixels of this input (top-left pixel centre at 0)."""
        height, width = img.shape[-2:]
        feats = self.encoder(img)
        intrins = intrins.clone()
        intrins[:, :2, 2] += 0.5  # pixel centres at x + 0.5
        uvs = tuple(self._uv(intrins, height // s, width // s, height, width) for s in (32, 16, 8))
        uv8 = uvs[2]
        ray8 = F.normalize(torch.cat([uv8, torch.ones_like(uv8[:, :1])], dim=1), dim=1)
        normal, feat, h = self.decoder(feats, uvs)
        normal = ray_relu(normal, ray8)
        feat = torch.cat([feat, uv8], dim=1)
        if self.iterations == 0:
            return self._upsample(torch.cat([h, uv8], dim=1), normal)
        k = self._scaled(intrins, *normal.shape[-2:], height, width)
        up = normal
        for _ in range(self.iterations):
            h, normal, up = self._refine(h, feat, normal, k, uv8, ray8)
        return up
