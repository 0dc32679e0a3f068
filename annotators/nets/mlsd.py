"""M-LSD large (``mlsd_large_512_fp32.pth``): MobileNetV2 backbone (first 14 blocks, 4-channel
input) and a four-stage top-down decoder; output at half resolution."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: (expansion t, channels c, repeats n, first stride s) of the MobileNetV2 stages used
MOBILENET_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
#: backbone features handed to the decoder (strides 2, 4, 8, 16, 16)
FPN_SELECTED = (1, 3, 6, 10, 13)


class ConvBNReLU(nn.Sequential):
    """Conv + BN + ReLU6; stride 2 pads right/bottom by one first (TFLite style)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        padding = 0 if stride == 2 else (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = nn.functional.pad(x, (0, 1, 0, 1))
        return super().forward(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project (+ skip when shapes allow)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        layers: list[nn.Module] = [ConvBNReLU(cin, hidden, kernel=1)] if expand != 1 else []
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class Backbone(nn.Module):
    """The MobileNetV2 features used by M-LSD; returns the FPN_SELECTED outputs."""

    def __init__(self) -> None:
        super().__init__()
        features: list[nn.Module] = [ConvBNReLU(4, 32, stride=2)]
        cin = 32
        for expand, cout, repeats, stride in MOBILENET_STAGES:
            for i in range(repeats):
                features.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        self.features = nn.Sequential(*features)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        selected = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in FPN_SELECTED:
                selected.append(x)
        return selected


def conv_bn_relu(cin: int, cout: int, kernel: int, **kw: Any) -> nn.Sequential:
    """Conv + BN + ReLU as one Sequential (keys ``0``, ``1``)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, **kw), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class Merge(nn.Module):
    """Block type A: 1x1 on the skip (``conv2``) and on the coarser map (``conv1``), concat."""

    def __init__(self, skip_in: int, coarse_in: int, upscale: bool = True) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(coarse_in, 64, 1)
        self.conv2 = conv_bn_relu(skip_in, 64, 1)
        self.upscale = upscale

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        coarse = self.conv1(coarse)
        if self.upscale:
            coarse = nn.functional.interpolate(
                coarse, scale_factor=2.0, mode="bilinear", align_corners=True
            )
        return torch.cat((self.conv2(skip), coarse), dim=1)


class Refine(nn.Module):
    """Block type B: residual 3x3, then 3x3 down to 64 channels."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cin, 3, padding=1)
        self.conv2 = conv_bn_relu(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x) + x)


class Head(nn.Module):
    """Block type C: dilated 3x3, 3x3, 1x1 to the output maps."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cin, 3, padding=5, dilation=5)
        self.conv2 = conv_bn_relu(cin, cin, 3, padding=1)
        self.conv3 = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class MLSDLarge(nn.Module):
    """MobileV2_MLSD_Large. Input Bx4xHxW in -1..1 (H, W multiples of 32); output Bx9x(H/2)x(W/2)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.block15 = Merge(64, 96, upscale=False)
        self.block16 = Refine(128, 64)
        self.block17 = Merge(32, 64)
        self.block18 = Refine(128, 64)
        self.block19 = Merge(24, 64)
        self.block20 = Refine(128, 64)
        self.block21 = Merge(16, 64)
        self.block22 = Refine(128, 64)
        self.block23 = Head(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3, c4, c5 = self.backbone(x)
        x = self.block16(self.block15(c4, c5))
        x = self.block18(self.block17(c3, x))
        x = self.block20(self.block19(c2, x))
        x = self.block22(self.block21(c1, x))
        return self.block23(x)[:, 7:]
