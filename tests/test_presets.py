"""Presets named after public checkpoints: exact flux-canny maps, the listing, the manifest."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from annotators.presets import PRESETS
from pipeline.decode import load_image, resize_short_side
from pipeline.worker import parse_specs
from tests.conftest import run_cli
from training.families.union import slot_id


@pytest.fixture(scope="module")
def three_photos(photo_paths, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for path in photo_paths[:3]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("resolution", [0, 512])
def test_flux_canny_is_cv2_canny_50_200_of_the_rgb_image(three_photos, tmp_path, resolution):
    out = tmp_path / "maps"
    run_cli("annotate", three_photos, "-o", out, "--preset", "flux-canny",
            "--resolution", resolution, "--workers", "1", "-q", check=True)  # fmt: skip
    photos = sorted(three_photos.glob("*.jpg"))
    for path in photos:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # decoded here, not by hintset
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if resolution:
            rgb = resize_short_side(load_image(path), resolution)
        made = cv2.imread(str(out / f"{path.stem}.canny.png"), cv2.IMREAD_UNCHANGED)
        assert made.shape == rgb.shape[:2]
        np.testing.assert_array_equal(made, cv2.Canny(rgb, 50, 200))
        # and it is not the default (100, 200): the preset's thresholds were used
        assert not np.array_equal(made, cv2.Canny(rgb, 100, 200))


def test_presets_json_lists_every_preset_with_valid_settings():
    proc = run_cli("presets", "--json", check=True)
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert set(rows) == set(PRESETS) >= {
        "flux-canny", "flux-depth", "sd15-v11", "xinsir-union-sdxl", "instantx-union-flux"
    }  # fmt: skip
    assert rows["flux-canny"]["annotators"]["canny"]["low"] == 50
    assert rows["flux-depth"]["annotators"]["depth"]["model"] == "depth-anything-v1-large"
    for row in rows.values():  # every preset names real annotators with valid values
        parse_specs(",".join(row["annotators"]), PRESETS[row["name"]].params())
    for name in ("xinsir-union-sdxl", "instantx-union-flux"):  # ids from the union table
        row = rows[name]
        assert row["slots"] == {m: slot_id(row["union"], m) for m in row["annotators"]}


def test_build_records_the_presets_slot_ids_and_param_overrides_win(three_photos, tmp_path):
    out = tmp_path / "ds"
    run_cli("build", three_photos, "-o", out, "--preset", "xinsir-union-sdxl", "-a", "canny",
            "--param", "canny.low=60", "--resolution", "64", "--workers", "1", "-q",
            check=True)  # fmt: skip
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["preset"]["name"] == "xinsir-union-sdxl"
    assert config["preset"]["union"] == "sdxl"
    assert config["preset"]["slots"] == {"canny": 3}
    params = {"high": "200", "low": "60"}  # stored as given, as --param values are
    assert config["annotators"] == [{"name": "canny", "params": params}]


@pytest.mark.parametrize("args, message", [
    (("--preset", "nope"), "unknown preset 'nope'"),
    (("--preset", "flux-canny", "-a", "hed"), "preset flux-canny has no annotator hed"),
])  # fmt: skip
def test_bad_preset_is_one_line_exit_2(three_photos, tmp_path, args, message):
    proc = run_cli("annotate", three_photos, "-o", tmp_path / "m", *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "m").exists()
