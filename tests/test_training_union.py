"""Union ControlNet slot tables (xinsir SDXL, InstantX FLUX) as data."""

from __future__ import annotations

import pytest


def test_union_slot_ids_follow_the_published_models():
    from training.families.union import INSTANTX_FLUX, XINSIR_SDXL, control_type, slot_id

    assert XINSIR_SDXL == {"openpose": 0, "depth": 1, "thick_line": 2, "thin_line": 3,
                           "normal": 4, "segment": 5, "tile": 6, "inpaint": 7}  # fmt: skip
    assert INSTANTX_FLUX == {"canny": 0, "tile": 1, "depth": 2, "blur": 3, "pose": 4, "gray": 5,
                             "low_quality": 6}  # fmt: skip
    assert [slot_id("sdxl", m) for m in ("pose", "depth", "hed", "canny", "seg")] == [0, 1, 2, 3, 5]
    assert [slot_id("flux", m) for m in ("canny", "depth", "pose")] == [0, 2, 4]
    assert control_type("sdxl", ["depth", "canny"]) == [0, 1, 0, 1, 0, 0, 0, 0]
    assert control_type("flux", ["pose"]) == [0, 0, 0, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="map 'normal' has no slot"):
        slot_id("flux", "normal")
    with pytest.raises(ValueError, match="no union ControlNet for family 'sd15'"):
        control_type("sd15", ["canny"])
