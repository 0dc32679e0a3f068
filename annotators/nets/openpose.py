"""The CMU OpenPose body and hand networks as ControlNet ships them (``body_pose_model.pth``,
``hand_pose_model.pth``): one attribute per Caffe layer, so state-dict keys are the published
flat keys (``conv1_1.weight``, ``Mconv7_stage6_L2.bias``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# (name, in, out, kernel) of the shared VGG trunks; "pool" entries are 2x2 max pools
BODY_TRUNK = (("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), "pool", ("conv2_1", 64, 128, 3),
              ("conv2_2", 128, 128, 3), "pool", ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3),
              ("conv3_3", 256, 256, 3), ("conv3_4", 256, 256, 3), "pool", ("conv4_1", 256, 512, 3),
              ("conv4_2", 512, 512, 3), ("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, 128, 3))  # fmt: skip
#: the hand trunk shares conv1_1 .. conv4_2 with the body trunk, then goes on at 512 channels
HAND_TRUNK = BODY_TRUNK[:13] + (("conv4_3", 512, 512, 3), ("conv4_4", 512, 512, 3),
                                ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3),
                                ("conv5_3_CPM", 512, 128, 3))  # fmt: skip


def _stage(prefix: str, suffix: str, cin: int, cout: int) -> list[tuple[str, int, int, int]]:
    """A refinement stage: five 7x7 convs, then two 1x1 convs."""
    layers = [
        (f"Mconv{i}_stage{prefix}{suffix}", cin if i == 1 else 128, 128, 7) for i in range(1, 6)
    ]
    return layers + [(f"Mconv6_stage{prefix}{suffix}", 128, 128, 1),
                     (f"Mconv7_stage{prefix}{suffix}", 128, cout, 1)]  # fmt: skip


def body_layout() -> dict[str, list]:
    """Layer lists of the body net: trunk, stage-1 branches, stages 2-6 for PAFs (L1) and heatmaps (L2)."""
    layout = {"trunk": list(BODY_TRUNK)}
    for branch, cout in (("L1", 38), ("L2", 19)):
        layout[f"1_{branch}"] = [(f"conv5_{i}_CPM_{branch}", 128, 128, 3) for i in (1, 2, 3)] + [
            (f"conv5_4_CPM_{branch}", 128, 512, 1), (f"conv5_5_CPM_{branch}", 512, cout, 1)]  # fmt: skip
        for stage in range(2, 7):
            layout[f"{stage}_{branch}"] = _stage(str(stage), f"_{branch}", 185, cout)
    return layout


def hand_layout() -> dict[str, list]:
    """Layer lists of the hand net: trunk, stage 1, stages 2-6 (22 heatmaps)."""
    layout = {"trunk": list(HAND_TRUNK),
              "1": [("conv6_1_CPM", 128, 512, 1), ("conv6_2_CPM", 512, 22, 1)]}  # fmt: skip
    for stage in range(2, 7):
        layout[str(stage)] = _stage(str(stage), "", 150, 22)
    return layout


#: layers without a ReLU after them. As in the published code, Mconv7_stage6_L2 (the final
#: body heatmaps) does keep its ReLU: its no-ReLU list names Mconv7_stage6_L1 twice.
NO_RELU = {"conv5_5_CPM_L1", "conv5_5_CPM_L2", "conv6_2_CPM",
           *(f"Mconv7_stage{s}_L1" for s in range(2, 7)),
           *(f"Mconv7_stage{s}_L2" for s in range(2, 6)),
           *(f"Mconv7_stage{s}" for s in range(2, 7))}  # fmt: skip


class OpenPoseNet(nn.Module):
    """A multi-stage OpenPose network built from a layout (body: PAFs + heatmaps; hand: heatmaps)."""

    def __init__(self, layout: dict[str, list]) -> None:
        super().__init__()
        self.layout = layout
        for layers in layout.values():
            for layer in layers:
                if layer != "pool":
                    name, cin, cout, k = layer
                    self.add_module(name, nn.Conv2d(cin, cout, k, padding=k // 2))

    def run(self, layers: list, x: torch.Tensor) -> torch.Tensor:
        """Apply a list of layers (conv + ReLU unless in NO_RELU, or a 2x2 max pool)."""
        for layer in layers:
            if layer == "pool":
                x = nn.functional.max_pool2d(x, 2, 2)
                continue
            x = getattr(self, layer[0])(x)
            if layer[0] not in NO_RELU:
                x = nn.functional.relu(x)
        return x

    def forward(self, x: torch.Tensor) -> Any:
        features = self.run(self.layout["trunk"], x)
        if "1_L1" in self.layout:  # body: returns (PAFs, heatmaps)
            pafs = self.run(self.layout["1_L1"], features)
            heat = self.run(self.layout["1_L2"], features)
            for stage in range(2, 7):
                joined = torch.cat([pafs, heat, features], 1)
                pafs = self.run(self.layout[f"{stage}_L1"], joined)
                heat = self.run(self.layout[f"{stage}_L2"], joined)
            return pafs, heat
        heat = self.run(self.layout["1"], features)
        for stage in range(2, 7):
            heat = self.run(self.layout[str(stage)], torch.cat([heat, features], 1))
        return heat


def build_body() -> OpenPoseNet:
    """The body network (bodypose_model): 38 PAF and 19 heatmap channels at stride 8."""
    return OpenPoseNet(body_layout())


def build_hand() -> OpenPoseNet:
    """The hand network (handpose_model): 22 heatmap channels at stride 8."""
    return OpenPoseNet(hand_layout())
