"""Union ControlNet control types as data: the slot (mode) ids the published union models were
trained with, and which hintset map fills which slot. One place; exports record the table used."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

#: xinsir ControlNet-Union SDXL (ProMax): slot -> id of ``ControlNetUnionModel``'s control type
XINSIR_SDXL = {"openpose": 0, "depth": 1, "thick_line": 2, "thin_line": 3, "normal": 4,
               "segment": 5, "tile": 6, "inpaint": 7}  # fmt: skip
#: InstantX FLUX.1 union: mode -> id of ``FluxControlNetModel``'s ``controlnet_mode``
INSTANTX_FLUX = {"canny": 0, "tile": 1, "depth": 2, "blur": 3, "pose": 4, "gray": 5,
                 "low_quality": 6}  # fmt: skip

#: family -> (slot table, hintset map -> slot name); xinsir: thick line = hed, pidinet
#: (softedge), scribble, teed; thin line = canny, lineart, lineart_anime, mlsd (lines)
TABLES = {
    "sdxl": (XINSIR_SDXL, {"pose": "openpose", "depth": "depth", "hed": "thick_line",
                           "softedge": "thick_line", "scribble": "thick_line",
                           "teed": "thick_line", "canny": "thin_line", "lines": "thin_line",
                           "lineart": "thin_line", "lineart_anime": "thin_line",
                           "normal": "normal", "seg": "segment", "tile": "tile",
                           "inpaint": "inpaint"}),
    "flux": (INSTANTX_FLUX, {"canny": "canny", "depth": "depth", "pose": "pose",
                             "tile": "tile"}),
}  # fmt: skip

#: share of training draws in which a sample gets one of its maps (the rest: two or more).
#: xinsir published no figure; union models are mostly used with one condition.
P_SINGLE = 0.7


def slot_id(family: str, condition: str) -> int:
    """The union slot (mode) id a hintset map trains, or ValueError naming what exists."""
    if family not in TABLES:
        raise ValueError(f"no union ControlNet for family {family!r} (union: {', '.join(TABLES)})")
    slots, maps = TABLES[family]
    if condition not in maps:
        raise ValueError(
            f"--union {family}: map {condition!r} has no slot; maps with one: {', '.join(maps)}"
        )
    return slots[maps[condition]]


def control_type(family: str, conditions: list[str]) -> list[float]:
    """The control-type vector (one entry per slot, 1 where a map is given) of a sample."""
    vector = [0.0] * len(TABLES[family][0]) if family in TABLES else []
    for condition in conditions:
        vector[slot_id(family, condition)] = 1.0
    return vector


@lru_cache(maxsize=32)
def recorded_slots(data: str) -> dict:
    """The union preset a build recorded in its manifest (``config.preset``: union family and
    map -> slot id), or {} (no local manifest, no union preset)."""
    try:
        manifest = json.loads((Path(data) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    preset = (manifest.get("config") or {}).get("preset") or {}
    return preset if preset.get("union") else {}


def union_slots(family: str, conditions: list[str], data: str = "") -> dict[str, int]:
    """Map -> slot id for a union run: the ids the dataset's preset recorded when it was built
    for this family's union model, else this module's table."""
    preset = recorded_slots(str(data)) if data else {}
    given = preset.get("slots", {}) if preset.get("union") == family else {}
    return {c: int(given[c]) if c in given else slot_id(family, c) for c in conditions}


def union_record(family: str, conditions: list[str], data: str = "") -> dict:
    """What an export records of a union model: its family, map -> slot id and the full table."""
    return {"family": family, "slots": union_slots(family, conditions, data),
            "slot_table": dict(TABLES[family][0])}  # fmt: skip


def draw_subsets(draws, present: list[list[int]], p_single: float = P_SINGLE) -> list[list[int]]:
    """Per sample, a random non-empty subset (sorted) of the map indices it has: one map with
    probability ``p_single`` (always when it has one), else 2 to all of them, uniformly; every
    draw comes from ``draws`` (per sample: the same whichever rank or batch carries it)."""
    single, size = draws.rand().tolist(), draws.rand().tolist()
    orders = draws.randperm([len(p) for p in present])
    out = []
    for have, u, v, order in zip(present, single, size, orders, strict=True):
        n = len(have)
        if n == 0:
            raise ValueError("a union sample without any of its maps")
        k = 1 if n == 1 or u < p_single else 2 + min(int(v * (n - 1)), n - 2)
        out.append(sorted(have[j] for j in order[:k]))
    return out
