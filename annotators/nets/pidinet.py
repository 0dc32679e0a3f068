"""PiDiNet (pixel difference network), the ``table5_pidinet.pth`` configuration ControlNet 1.1 uses.

Configuration ``carv4``: 16 layers cycling central / angular / radial pixel-difference
convolutions and a vanilla one (cd, ad, rd, cv), 60 base channels, dilation module
(CDCM, 24 channels) and spatial attention (CSAM) on each of the 4 stages. Parameter names
follow the published checkpoint (whose keys carry a ``module.`` prefix under ``state_dict``).
Input: BGR 0..1; output: five sigmoid maps at the input size, the fused one last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: pixel-difference type of layer 0 (the stem) .. layer 15, configuration "carv4"
CARV4 = ("cd", "ad", "rd", "cv") * 4
#: flattened 3x3 index each weight is paired with for the angular difference (clockwise)
ANGULAR_PAIRS = (3, 0, 1, 6, 4, 2, 7, 8, 5)
#: 5x5 positions of the outer ring (+w) and inner ring (-w) of the radial difference
RADIAL_OUTER = (0, 2, 4, 10, 14, 20, 22, 24)
RADIAL_INNER = (6, 7, 8, 11, 13, 16, 17, 18)


def pdc_conv(
    kind: str, x: torch.Tensor, weight: torch.Tensor, padding: int = 1, groups: int = 1
) -> torch.Tensor:
    """A 3x3 pixel-difference convolution (no bias): ``cv`` plain, ``cd`` central
    (minus the centre pixel times the kernel sum), ``ad`` angular (each weight minus its
    clockwise neighbour's), ``rd`` radial (a 5x5 kernel: outer ring minus inner ring)."""
    if kind == "cv":
        return F.conv2d(x, weight, padding=padding, groups=groups)
    if kind == "cd":
        centre = F.conv2d(x, weight.sum(dim=(2, 3), keepdim=True), groups=groups)
        return F.conv2d(x, weight, padding=padding, groups=groups) - centre
    out_c, in_c = weight.shape[:2]
    flat = weight.reshape(out_c, in_c, 9)
    if kind == "ad":
        angular = flat - flat[:, :, list(ANGULAR_PAIRS)]
        return F.conv2d(x, angular.reshape_as(weight), padding=padding, groups=groups)
    if kind == "rd":
        ring = flat.new_zeros(out_c, in_c, 25)
        ring[:, :, list(RADIAL_OUTER)] = flat[:, :, 1:]
        ring[:, :, list(RADIAL_INNER)] = -flat[:, :, 1:]
        return F.conv2d(x, ring.reshape(out_c, in_c, 5, 5), padding=2 * padding, groups=groups)
    raise ValueError(f"unknown pixel difference type {kind!r}")


class PDConv(nn.Module):
    """3x3 pixel-difference convolution holding one ``weight`` (no bias)."""

    def __init__(self, kind: str, cin: int, cout: int, groups: int = 1) -> None:
        super().__init__()
        self.kind, self.groups = kind, groups
        self.weight = nn.Parameter(torch.empty(cout, cin // groups, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pdc_conv(self.kind, x, self.weight, padding=1, groups=self.groups)


class PDCBlock(nn.Module):
    """Depthwise pixel-difference conv, ReLU, 1x1 conv, residual; stride 2 = max pool first
    and a 1x1 ``shortcut`` on the residual path."""

    def __init__(self, kind: str, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(cin, cout, 1)
        self.conv1 = PDConv(kind, cin, cin, groups=cin)
        self.conv2 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        y = self.conv2(F.relu(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class CDCM(nn.Module):
    """Compact dilation module: ReLU, 1x1 conv, sum of 3x3 convs dilated 5, 7, 9, 11."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        for index, dilation in enumerate((5, 7, 9, 11), start=1):
            conv = nn.Conv2d(cout, cout, 3, dilation=dilation, padding=dilation, bias=False)
            self.add_module(f"conv2_{index}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return sum(getattr(self, f"conv2_{i}")(x) for i in range(1, 5))


class CSAM(nn.Module):
    """Compact spatial attention: x * sigmoid(conv3x3(conv1x1(relu(x))))."""

    def __init__(self, channels: int, mid: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, mid, 1)
        self.conv2 = nn.Conv2d(mid, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class MapReduce(nn.Module):
    """1x1 conv to one edge channel (key ``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """Stem + 4 stages (3, 4, 4, 4 blocks; strides 1, 2, 2, 2) + per-stage CDCM/CSAM/reduce,
    side maps upsampled to the input size and fused by a 1x1 ``classifier``."""

    def __init__(self, width: int = 60, dil: int = 24, kinds: tuple[str, ...] = CARV4) -> None:
        super().__init__()
        self.init_block = PDConv(kinds[0], 3, width)
        planes = (width, 2 * width, 4 * width, 4 * width)
        layer = 1
        for stage, count in enumerate((3, 4, 4, 4), start=1):
            cin = planes[max(stage - 2, 0)]
            for index in range(1, count + 1):
                stride = 2 if stage > 1 and index == 1 else 1
                block = PDCBlock(kinds[layer], cin if index == 1 else planes[stage - 1],
                                 planes[stage - 1], stride)  # fmt: skip
                self.add_module(f"block{stage}_{index}", block)
                layer += 1
        self.dilations = nn.ModuleList(CDCM(p, dil) for p in planes)
        self.attentions = nn.ModuleList(CSAM(dil) for _ in planes)
        self.conv_reduces = nn.ModuleList(MapReduce(dil) for _ in planes)
        self.classifier = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[-2:]
        x = self.init_block(x)
        sides = []
        for stage, count in enumerate((3, 4, 4, 4), start=1):
            for index in range(1, count + 1):
                x = getattr(self, f"block{stage}_{index}")(x)
            i = stage - 1
            side = self.conv_reduces[i](self.attentions[i](self.dilations[i](x)))
            sides.append(F.interpolate(side, size, mode="bilinear", align_corners=False))
        sides.append(self.classifier(torch.cat(sides, dim=1)))
        return [torch.sigmoid(s) for s in sides]
