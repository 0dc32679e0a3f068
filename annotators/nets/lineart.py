"""Line-art generators of ControlNet 1.1's lineart annotators (module-level, published key names).

- :class:`LineartGenerator`: "Informative Drawings" ResNet generator, 3 residual blocks,
  RGB 0..1 in, sigmoid line darkness out (``sk_model.pth`` realistic, ``sk_model2.pth`` coarse).
- :class:`AnimeUnet`: Anime2Sketch's 8-level U-Net with parameter-free instance norm,
  RGB -1..1 in, tanh out (``netG.pth``).
"""

from __future__ import annotations

import torch
from torch import nn


def _instance_norm(channels: int) -> nn.Module:
    """Instance norm without affine parameters or running statistics (no checkpoint keys)."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResidualBlock(nn.Module):
    """Two reflection-padded 3x3 convs with instance norm; keys ``conv_block.1`` and ``conv_block.5``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _instance_norm(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            _instance_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class LineartGenerator(nn.Module):
    """Stem (7x7), two stride-2 downs, ``blocks`` residual blocks, two transposed-conv ups, 7x7 head.

    Input height and width must be multiples of 4 (the annotator pads).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, blocks: int = 3) -> None:
        super().__init__()
        self.model0 = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, 64, 7), _instance_norm(64), nn.ReLU(True)
        )
        downs: list[nn.Module] = []
        for cin in (64, 128):
            downs += [nn.Conv2d(cin, cin * 2, 3, stride=2, padding=1), _instance_norm(cin * 2)]
            downs.append(nn.ReLU(True))
        self.model1 = nn.Sequential(*downs)
        self.model2 = nn.Sequential(*[ResidualBlock(256) for _ in range(blocks)])
        ups: list[nn.Module] = []
        for cin in (256, 128):
            ups.append(nn.ConvTranspose2d(cin, cin // 2, 3, 2, padding=1, output_padding=1))
            ups += [_instance_norm(cin // 2), nn.ReLU(True)]
        self.model3 = nn.Sequential(*ups)
        self.model4 = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(64, out_channels, 7), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (self.model0, self.model1, self.model2, self.model3, self.model4):
            x = stage(x)
        return x


class UnetBlock(nn.Module):
    """One U-Net level: (down conv, inner level, up conv) in ``model``; concatenates its input
    to its output except at the outermost level. Layer order gives the published key indices."""

    def __init__(
        self,
        outer: int,
        inner: int,
        child: nn.Module | None = None,
        in_channels: int | None = None,
        outermost: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        down = nn.Conv2d(in_channels or outer, inner, 4, stride=2, padding=1, bias=True)
        up_in = inner if child is None else inner * 2
        up = nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=True)
        if outermost:
            layers = [down, child, nn.ReLU(True), up, nn.Tanh()]
        elif child is None:  # innermost
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, _instance_norm(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down, _instance_norm(inner), child]
            layers += [nn.ReLU(True), up, _instance_norm(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class AnimeUnet(nn.Module):
    """Anime2Sketch U-Net: ``levels`` stride-2 levels (8: input sides multiples of 256)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, levels: int = 8, ngf: int = 64):
        super().__init__()
        block = UnetBlock(ngf * 8, ngf * 8)
        for _ in range(levels - 5):
            block = UnetBlock(ngf * 8, ngf * 8, block)
        for mult in (4, 2, 1):
            block = UnetBlock(ngf * mult, ngf * mult * 2, block)
        self.model = UnetBlock(out_channels, ngf, block, in_channels=in_channels, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
