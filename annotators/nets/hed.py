"""ControlNet 1.1's RGB-input HED (``ControlNetHED.pth``): five VGG-style blocks with side outputs."""

from __future__ import annotations

import torch
from torch import nn

#: (input channels, output channels, convolutions) of block1..block5
HED_BLOCKS = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))


class SideBlock(nn.Module):
    """3x3 conv + ReLU stack (``convs``) and a 1x1 side output (``projection``)."""

    def __init__(self, cin: int, cout: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *[nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(layers)]
        )
        self.projection = nn.Conv2d(cout, 1, 1)

    def forward(self, x: torch.Tensor, pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if pool:
            x = nn.functional.max_pool2d(x, kernel_size=2, stride=2)
        for conv in self.convs:
            x = nn.functional.relu(conv(x))
        return x, self.projection(x)


class HED(nn.Module):
    """Input: RGB 0..255 float; output: five side maps at strides 1, 2, 4, 8, 16."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        for index, (cin, cout, layers) in enumerate(HED_BLOCKS, start=1):
            self.add_module(f"block{index}", SideBlock(cin, cout, layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x - self.norm
        sides = []
        for index in range(1, len(HED_BLOCKS) + 1):
            h, side = getattr(self, f"block{index}")(h, pool=index > 1)
            sides.append(side)
        return sides
