"""NormalBAE (``scannet.pt``): EfficientNet-B5 encoder (timm) and the BAE decoder with
test-mode refinement at every pixel; output Bx4xHxW (unit normal xyz, kappa)."""

from __future__ import annotations

import torch
from torch import nn

#: the EfficientNet variant NormalBAE was trained with (timm name; same layout as geffnet's
#: tf_efficientnet_b5_ap, which the original code loads)
BAE_BACKBONE = "tf_efficientnet_b5"


class Encoder(nn.Module):
    """EfficientNet-B5 features (``original_model``, as the published keys name it)."""

    def __init__(self) -> None:
        super().__init__()
        import timm

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
    """Upsample to the skip's size, concat, two conv + BN + LeakyReLU."""

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
        x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
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
    """Bilinear x2 (align_corners=True, as the reference)."""
    return nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Decoder(nn.Module):
    """The BAE decoder: four upsampling stages, a coarse prediction and three refinements."""

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
    """NormalBAE as published: ``encoder.original_model.*`` and ``decoder.*``."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
