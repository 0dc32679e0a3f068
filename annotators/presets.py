"""Presets named after public ControlNet checkpoints: the annotators and settings each was
trained with, as plain data, so a user never reverse-engineers thresholds. Union presets also
carry the slot (mode) ids of their maps, read from the one table in training.families.union."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from training.families.union import TABLES


@dataclass(frozen=True)
class Preset:
    """One checkpoint's recipe: annotator -> parameters, and for union models the family whose
    slot table the maps fill."""

    name: str
    checkpoint: str
    description: str
    annotators: dict[str, dict[str, Any]]
    union: str = ""  # family in training.families.union.TABLES, or "" (not a union model)
    notes: str = field(default="")

    def only(self, names: list[str]) -> Preset:
        """This preset narrowed to ``names`` (``--preset X --annotators a,b``), in that order;
        ValueError naming any the preset does not have."""
        if unknown := [n for n in names if n not in self.annotators]:
            raise ValueError(f"preset {self.name} has no annotator {', '.join(unknown)} "
                             f"(it has: {', '.join(self.annotators)})")  # fmt: skip
        return replace(self, annotators={n: self.annotators[n] for n in names})

    def params(self) -> list[str]:
        """The preset's settings as ``--param`` strings (``canny.low=50``)."""
        return [f"{a}.{k}={v}" for a, ps in self.annotators.items() for k, v in ps.items()]

    def slots(self) -> dict[str, int]:
        """Map name -> union slot (mode) id for this preset's maps ({} if not a union model)."""
        if not self.union:
            return {}
        table, maps = TABLES[self.union]
        return {m: table[maps[m]] for m in self.annotators if m in maps}

    def record(self) -> dict[str, Any]:
        """What ``hintset presets --json`` prints and the build manifest stores."""
        record = {"name": self.name, "checkpoint": self.checkpoint,
                  "description": self.description, "annotators": self.annotators}  # fmt: skip
        if self.union:
            record.update(union=self.union, slots=self.slots(), slot_table=TABLES[self.union][0])
        if self.notes:
            record["notes"] = self.notes
        return record


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "flux-canny", "black-forest-labs/FLUX.1-Canny-dev",
            "BFL FLUX.1 Canny: cv2.Canny(rgb, 50, 200) on the RGB image, no blur",
            {"canny": {"low": 50, "high": 200, "blur": 0.0, "random_thresholds": False}},
        ),
        Preset(
            "flux-depth", "black-forest-labs/FLUX.1-Depth-dev",
            "BFL FLUX.1 Depth: Depth Anything V1 large",
            {"depth": {"model": "depth-anything-v1-large"}},
        ),
        Preset(
            "sd15-v11", "lllyasviel/ControlNet-v1-1",
            "ControlNet 1.1 annotator set with its gradio defaults",
            {
                "canny": {"low": 100, "high": 200},
                "depth": {"model": "dpt-hybrid"},
                "normal": {"backend": "bae"},
                "lineart": {"coarse": False},
                "lineart_anime": {},
                "lines": {"backend": "mlsd", "score_threshold": 0.1, "distance_threshold": 0.1},
                "pose": {"backend": "openpose", "hands": True, "face": False},
                "seg": {"model": "oneformer-ade20k-swin-large"},
                "softedge": {"safe": False},
                "scribble": {},
                "shuffle": {},
                "tile": {},
                "inpaint": {},
            },
        ),
        Preset(
            "xinsir-union-sdxl", "xinsir/controlnet-union-sdxl-1.0",
            "xinsir ControlNet-Union SDXL ProMax: its maps, with their control-type slot ids",
            {
                "pose": {"backend": "dwpose", "hands": True, "face": True, "stick_rule": "xinsir"},
                "depth": {"model": "depth-anything-v1-large"},
                "hed": {"safe": False},
                "canny": {"low": 100, "high": 200},
                "lines": {"backend": "mlsd"},
                "normal": {"backend": "bae"},
                "seg": {"model": "oneformer-ade20k-swin-large"},
            },
            union="sdxl",
            notes="tile and inpaint slots take the image itself (no annotator); pose sticks "
            "and joints scale with resolution as xinsir's draw_bodypose (x3 at 1024 px)",
        ),
        Preset(
            "instantx-union-flux", "InstantX/FLUX.1-dev-Controlnet-Union",
            "InstantX FLUX.1 union: canny, depth and pose maps with their controlnet_mode ids",
            {
                "canny": {"low": 100, "high": 200},
                "depth": {"model": "depth-anything-v1-large"},
                "pose": {"backend": "openpose", "hands": False, "face": False},
            },
            union="flux",
            notes="tile, blur, gray and low_quality modes are made from the image at train time",
        ),
    )
}  # fmt: skip


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or ValueError listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]
