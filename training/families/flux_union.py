"""FLUX.1 union ControlNet (``FluxControlNetModel`` with ``num_mode``, InstantX's mode ids): one
ControlNet, several condition types. Each sample gets a random non-empty subset of its maps per
step (training/families/union.py); each chosen map runs through the ControlNet with its
``controlnet_mode`` and the block samples of a sample's maps are summed, as diffusers'
``FluxMultiControlNetModel`` combines several control images at sampling."""

from __future__ import annotations

from training.families.flux import Flux, pack
from training.families.union import TABLES, draw_subsets, union_slots

#: ControlNet keyword arguments that hold one entry per sample (first dim); the others
#: (``txt_ids``, ``img_ids``) are shared by the batch
PER_SAMPLE = ("hidden_states", "timestep", "guidance", "encoder_hidden_states",
              "pooled_projections")  # fmt: skip


def _add_rows(total, parts, index, n: int):
    """``total`` (a list per block, or None) plus ``parts`` placed at rows ``index`` of ``n``."""
    if parts is None:
        return total
    import torch

    full = [torch.zeros((n, *p.shape[1:]), dtype=p.dtype, device=p.device).index_add(0, index, p)
            for p in parts]  # fmt: skip
    return full if total is None else [a + b for a, b in zip(total, full, strict=True)]


class UnionCalls:
    """Calls a union ``FluxControlNetModel`` once per map in use, on the samples whose subset
    holds it, with that map's mode; returns the per-sample sums (block, single-block samples)."""

    def __init__(self, controlnet, subsets: list[list[int]], modes: list[int]) -> None:
        self.controlnet, self.subsets, self.modes = controlnet, subsets, modes

    def __call__(self, controlnet_cond, controlnet_mode=None, **kwargs):
        import torch

        n = len(self.subsets)
        blocks = singles = None
        for k in sorted({k for s in self.subsets for k in s}):
            rows = [i for i, s in enumerate(self.subsets) if k in s]
            index = torch.tensor(rows, device=controlnet_cond.device)
            part = {name: value[index] if name in PER_SAMPLE and value is not None else value
                    for name, value in kwargs.items()}  # fmt: skip
            mode = torch.full((len(rows), 1), self.modes[k], dtype=torch.long,
                              device=controlnet_cond.device)  # fmt: skip
            b, s = self.controlnet(controlnet_cond=controlnet_cond[index, k],
                                   controlnet_mode=mode, **part)  # fmt: skip
            blocks, singles = _add_rows(blocks, b, index, n), _add_rows(singles, s, index, n)
        return blocks, singles


class FluxUnion(Flux):
    """The locked parts of a FLUX.1 base training a union ``FluxControlNetModel``."""

    name = "flux-union"
    UNION = "flux"  # key of the slot table in training/families/union.py
    #: the control arguments the model card shows (one map, its mode)
    CARD_CONTROL = "control_image=control_image, control_mode={mode}"

    def make_controlnet(self, channels: int, num_mode: int | None = None):
        """A FLUX ControlNet with InstantX's mode embedding, one mode per slot of the table."""
        return super().make_controlnet(channels, num_mode=num_mode or len(TABLES[self.UNION][0]))

    @classmethod
    def slot_ids(cls, config) -> list[int]:
        """Mode id of each ``--condition`` map, in order (the dataset's preset, else the table)."""
        return list(union_slots(cls.UNION, config.conditions, config.data).values())

    def encode(self, batch: dict, captions: list[str], config) -> dict:
        """As FLUX, each map VAE-encoded on its own: ``control_mean`` is (samples, maps, C, h, w);
        ``control_present`` (samples, maps) says which maps each sample has."""
        cond = batch["conditioning"]
        encoded = super().encode({**batch, "conditioning": cond.flatten(0, 1)}, captions, config)
        mean = encoded["control_mean"]
        encoded["control_mean"] = mean.reshape(*cond.shape[:2], *mean.shape[1:])
        encoded["control_present"] = batch["present"].to(self.device)
        return encoded

    def pack(self, latents):
        """FLUX's 2x2 packing, per map for (samples, maps, C, h, w) control latents."""
        import torch

        if latents.ndim == 5:
            return torch.stack([pack(latents[:, k]) for k in range(latents.shape[1])], 1)
        return pack(latents)

    def loss_from(self, controlnet, encoded: dict, config, draws, control: bool = True):
        """FLUX's loss with each sample's subset of maps drawn first (from ``draws``)."""
        rows = encoded["control_present"].tolist()
        present = [[k for k, p in enumerate(row) if p] for row in rows]
        subsets = draw_subsets(draws, present, config.union_single)
        return super().loss_from(controlnet, {**encoded, "union_subsets": subsets}, config, draws,
                                 control=control)  # fmt: skip

    def predict(self, controlnet, noisy, timesteps, cond, encoded: dict, config):
        if controlnet is not None:
            controlnet = UnionCalls(controlnet, encoded["union_subsets"], self.slot_ids(config))
        return super().predict(controlnet, noisy, timesteps, cond, encoded, config)

    @classmethod
    def control_args(cls, sample: dict, config) -> dict:
        """Pipeline inputs for a validation sample: its first map, with its mode (one
        ``FluxControlNetModel`` takes one control image)."""
        import numpy as np
        import torch

        k = int(np.flatnonzero(sample["present"])[0])
        return {"control_image": torch.from_numpy(sample["conditioning"][k])[None],
                "control_mode": cls.slot_ids(config)[k]}  # fmt: skip
