"""Union ControlNet control types as data: the slot (mode) ids the published union models were
trained with, and which hintset map fills which slot. One place; exports record the table used."""

from __future__ import annotations

#: xinsir ControlNet-Union SDXL (ProMax): slot -> id of ``ControlNetUnionModel``'s control type
XINSIR_SDXL = {"openpose": 0, "depth": 1, "thick_line": 2, "thin_line": 3, "normal": 4,
               "segment": 5, "tile": 6, "inpaint": 7}  # fmt: skip
#: InstantX FLUX.1 union: mode -> id of ``FluxControlNetModel``'s ``controlnet_mode``
INSTANTX_FLUX = {"canny": 0, "tile": 1, "depth": 2, "blur": 3, "pose": 4, "gray": 5,
                 "low_quality": 6}  # fmt: skip

#: family -> (slot table, hintset map -> slot name)
TABLES = {
    "sdxl": (XINSIR_SDXL, {"pose": "openpose", "depth": "depth", "hed": "thick_line",
                           "scribble": "thick_line", "canny": "thin_line", "lines": "thin_line",
                           "normal": "normal", "seg": "segment"}),
    "flux": (INSTANTX_FLUX, {"canny": "canny", "depth": "depth", "pose": "pose"}),
}  # fmt: skip


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
