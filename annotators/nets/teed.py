"""TEED (Tiny and Efficient Edge Detector, 58K parameters; xavysp/TEED, ICCV 2023 workshop).

The ``TED`` network as published (``7_model.pth``, Anyline's ``MTEED.pth``): parameter names
follow those checkpoints (``block_1.conv1``, ``dblock_3.denselayer1.conv1``,
``up_block_3.features.3``, ``block_cat.DWconv1`` ...). Input: RGB 0..255 (no normalisation,
as controlnet_aux and ComfyUI feed it), both sides a multiple of 4; output: three side
edge maps and the fused one, each Bx1xHxW logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def smish(x: torch.Tensor) -> torch.Tensor:
    """Smish activation: ``x * tanh(log(1 + sigmoid(x)))``."""
    return x * torch.tanh(torch.log(1 + torch.sigmoid(x)))


class Smish(nn.Module):
    """Smish as a module (holds no parameters; keeps the published Sequential indices)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return smish(x)


class DoubleConvBlock(nn.Module):
    """Two 3x3 convolutions (the first may stride), Smish between and optionally after."""

    def __init__(self, cin: int, mid: int, cout: int | None = None, stride: int = 1,
                 use_act: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.use_act = use_act
        self.conv1 = nn.Conv2d(cin, mid, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(mid, cout or mid, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(smish(self.conv1(x)))
        return smish(x) if self.use_act else x


class SingleConvBlock(nn.Module):
    """A 1x1 convolution (``conv``), optionally strided."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DenseLayer(nn.Module):
    """``conv1`` (3x3, padding 2), Smish, ``conv2`` (3x3, no padding), averaged with the skip."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=2)
        self.conv2 = nn.Conv2d(cout, cout, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.conv2(smish(self.conv1(smish(x)))) + skip)


class DenseBlock(nn.Module):
    """One dense layer named ``denselayer1`` (TEED's ``_DenseBlock(1, 32, 48)``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.denselayer1 = DenseLayer(cin, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.denselayer1(x, skip)


class UpConvBlock(nn.Module):
    """``up_scale`` x (1x1 conv, Smish, x2 transposed conv); 16 channels, 1 in the last."""

    def __init__(self, cin: int, up_scale: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        kernel, pad = 2**up_scale, (0, 0, 1, 3, 7)[up_scale]
        for i in range(up_scale):
            cout = 1 if i == up_scale - 1 else 16
            layers += [nn.Conv2d(cin, cout, 1), Smish(),
                       nn.ConvTranspose2d(cout, cout, kernel, stride=2, padding=pad)]  # fmt: skip
            cin = cout
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class DoubleFusion(nn.Module):
    """TEED's fusion of the three side outputs: two depthwise convolutions, summed, Smish."""

    def __init__(self, cin: int = 3) -> None:
        super().__init__()
        self.DWconv1 = nn.Conv2d(cin, cin * 8, 3, padding=1, groups=cin)
        self.DWconv2 = nn.Conv2d(cin * 8, cin * 8, 3, padding=1, groups=cin * 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.DWconv1(smish(x))
        attn2 = self.DWconv2(smish(attn))
        return smish((attn2 + attn).sum(1, keepdim=True))


class TEED(nn.Module):
    """The TED network: three blocks, their up-sampled side outputs and the fused output."""

    def __init__(self) -> None:
        super().__init__()
        self.block_1 = DoubleConvBlock(3, 16, 16, stride=2)
        self.block_2 = DoubleConvBlock(16, 32, use_act=False)
        self.dblock_3 = DenseBlock(32, 48)
        self.side_1 = SingleConvBlock(16, 32, 2)
        self.pre_dense_3 = SingleConvBlock(32, 48, 1)
        self.up_block_1 = UpConvBlock(16, 1)
        self.up_block_2 = UpConvBlock(32, 1)
        self.up_block_3 = UpConvBlock(48, 2)
        self.block_cat = DoubleFusion(3)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        block_1 = self.block_1(x)
        block_2 = self.block_2(block_1)
        block_2_down = F.max_pool2d(block_2, kernel_size=3, stride=2, padding=1)
        block_3 = self.dblock_3(block_2_down + self.side_1(block_1), self.pre_dense_3(block_2_down))
        sides = [self.up_block_1(block_1), self.up_block_2(block_2), self.up_block_3(block_3)]
        return [*sides, self.block_cat(torch.cat(sides, dim=1))]
