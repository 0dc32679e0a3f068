"""SDXL ControlNet-Union (``ControlNetUnionModel``, xinsir's slot ids): one ControlNet, several
condition types. Each map enters as its own RGB image with its slot id (``control_type_idx``)
and the control-type vector, as diffusers' union pipeline passes them; per step each sample
gets a random non-empty subset of the maps it has (training/families/union.py)."""

from __future__ import annotations

from training.families.sd15 import _fp32
from training.families.sdxl import SDXL
from training.families.union import TABLES, draw_subsets, union_slots

#: U-Net parts a union ControlNet starts from (as ``ControlNetModel.from_unet`` copies them)
FROM_UNET = ("conv_in", "time_proj", "time_embedding", "class_embedding", "add_embedding",
             "down_blocks", "mid_block")  # fmt: skip


def _rows(value, index):
    """Tensors (also inside dicts) restricted to the samples ``index`` (first dim)."""
    if isinstance(value, dict):
        return {k: _rows(v, index) for k, v in value.items()}
    return value[index] if hasattr(value, "index_select") else value


class SDXLUnion(SDXL):
    """The locked parts of an SDXL base training a ``ControlNetUnionModel``."""

    name = "sdxl-union"
    UNION = "sdxl"  # key of the slot table in training/families/union.py
    #: the control arguments the model card shows (one map, its slot)
    CARD_CONTROL = "control_image=[control_image], control_mode=[{mode}]"

    @staticmethod
    def controlnet_class():
        from diffusers import ControlNetUnionModel

        return ControlNetUnionModel

    def make_controlnet(self, channels: int):
        """A union ControlNet, one control type per slot of the table, initialised from the
        base's U-Net encoder (zero-initialised outputs and fuser projection).

        diffusers' ``from_unet`` keeps the union layers at SDXL's 320 channels
        (``num_trans_channel``/``num_proj_channel`` must equal the U-Net's first width) and does
        not copy SDXL's ``add_embedding``: so the model is built from the config ``from_unet``
        derives (made on the meta device: no memory), those widths set to the U-Net's, and the
        U-Net's encoder weights are copied."""
        import torch

        cls = self.controlnet_class()
        with torch.device("meta"):
            template = cls.from_unet(self.unet, load_weights_from_unet=False)
        config = {k: v for k, v in template.config.items() if not k.startswith("_")}
        width = self.unet.config.block_out_channels[0]
        config.update(conditioning_channels=channels, num_control_type=len(TABLES[self.UNION][0]),
                      num_trans_channel=width, num_proj_channel=width)  # fmt: skip
        controlnet = cls.from_config(config)
        for part in FROM_UNET:
            source, target = getattr(self.unet, part, None), getattr(controlnet, part, None)
            if source is not None and target is not None:
                target.load_state_dict(source.state_dict())
        return controlnet

    @classmethod
    def slot_ids(cls, config) -> list[int]:
        """Slot id of each ``--condition`` map, in order (the dataset's preset, else the table)."""
        return list(union_slots(cls.UNION, config.conditions, config.data).values())

    def encode(self, batch: dict, captions: list[str], config) -> dict:
        """As SDXL; ``controlnet_cond`` is (samples, maps, 3, H, W) and ``control_present``
        (samples, maps) says which maps each sample has."""
        encoded = super().encode(batch, captions, config)
        encoded["control_present"] = batch["present"].to(self.device)
        return encoded

    def control_residuals(self, controlnet, noisy, timesteps, encoded: dict, kwargs: dict,
                          config, draws) -> tuple:  # fmt: skip
        """Residuals with each sample's drawn subset of maps: samples drawing the same subset
        run together (the model takes one list of slots per call), outputs in sample order."""
        import torch

        ids = self.slot_ids(config)
        present = [
            [k for k, p in enumerate(row) if p] for row in encoded["control_present"].tolist()
        ]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, subset in enumerate(draw_subsets(draws, present, config.union_single)):
            groups.setdefault(tuple(subset), []).append(i)
        slots = len(TABLES[self.UNION][0])
        downs, mids, order = [], [], []
        for subset, rows in groups.items():
            index = torch.tensor(rows, device=noisy.device)
            modes = [ids[k] for k in subset]
            control_type = torch.zeros(len(rows), slots, device=noisy.device)
            control_type[:, modes] = 1.0
            down, mid = controlnet(
                noisy[index].float(), timesteps[index],
                controlnet_cond=[encoded["controlnet_cond"][index, k] for k in subset],
                control_type=control_type, control_type_idx=modes, return_dict=False,
                **_fp32(_rows(kwargs, index)),
            )  # fmt: skip
            downs.append(down)
            mids.append(mid)
            order += rows
        back = torch.argsort(torch.tensor(order, device=noisy.device))
        return [torch.cat(parts)[back] for parts in zip(*downs, strict=True)], torch.cat(mids)[back]

    @classmethod
    def control_args(cls, sample: dict, config) -> dict:
        """Pipeline inputs for a validation sample: all the maps it has, with their slots."""
        import numpy as np
        import torch

        ids = cls.slot_ids(config)
        have = np.flatnonzero(sample["present"]).tolist()
        return {"control_image": [torch.from_numpy(sample["conditioning"][k])[None] for k in have],
                "control_mode": [ids[k] for k in have]}  # fmt: skip

    @staticmethod
    def pipeline_class():
        from diffusers import StableDiffusionXLControlNetUnionPipeline

        return StableDiffusionXLControlNetUnionPipeline
