"""Backends added for issue 25: Depth Anything V1 (depth), with their published layouts and licences.

Tiny configs of the published transformers classes are written in the published folder layout
(``DIR/<hub id>/``) and loaded offline through the same code a user runs; the real sizes are
checked on the meta device (no memory, no time).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from annotators import create, depth
from annotators.learned import clear_cache
from tests.weights import depth_anything_v2_config, write_depth

pytestmark = pytest.mark.usefixtures("offline_weights")

V1 = ("depth-anything-v1-small", "depth-anything-v1-base", "depth-anything-v1-large")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("more-models")
    write_depth(folder, tiny=True, models=["depth-anything-v1-small"])
    yield folder
    clear_cache()


@pytest.mark.parametrize(
    ("size", "params", "taps"),
    [("small", 24_785_089, [9, 10, 11, 12]), ("base", 97_470_785, [9, 10, 11, 12]),
     ("large", 335_315_649, [21, 22, 23, 24])],
)  # fmt: skip
def test_depth_anything_v1_published_layout(size, params, taps):
    """The published sizes (24.8M / 97.5M / 335.3M parameters) and the last-four-layer taps of
    transformers' V1 conversion; hub ids LiheYoung/depth-anything-<size>-hf."""
    from transformers import DepthAnythingForDepthEstimation

    spec = depth.MODELS[f"depth-anything-v1-{size}"]
    assert spec.repo_id == f"LiheYoung/depth-anything-{size}-hf" and spec.licence == "Apache-2.0"
    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(depth_anything_v2_config(size, v1=True))
    state = model.state_dict()
    assert sum(v.numel() for v in state.values()) == params
    assert model.config.backbone_config.out_indices == taps
    assert tuple(state["backbone.embeddings.position_embeddings"].shape)[1] == 1370  # 37x37 + cls


def test_depth_anything_v1_runs_batched_and_records_licence(tiny_dir, photos):
    annotator = create("depth", model="depth-anything-v1-small", resolution=70,
                       weights_dir=str(tiny_dir), device="cpu")  # fmt: skip
    batch = annotator.annotate_batch(photos, keys=["a", "b"])
    for image, result in zip(photos, batch, strict=True):
        single = annotator.annotate_batch([image])[0].maps["depth"]
        assert result.maps["depth"].shape == image.shape[:2]
        assert np.abs(single.astype(int) - result.maps["depth"].astype(int)).max() <= 1
        assert result.maps["depth"].std() > 0
    info = annotator.info()
    assert info["licence"] == "Apache-2.0"
    assert info["weights"][0]["model"] == "LiheYoung/depth-anything-small-hf"


def test_licences_differ_per_model():
    assert create("depth", model="depth-anything-v2-base").licence() == "CC-BY-NC-4.0"
    assert create("depth", model="depth-anything-v2-small").licence() == "Apache-2.0"
    assert "not known" in create("depth", model="someone/other-depth").licence()


def test_cli_lists_models_with_licence(cli, photo_paths, tmp_path):
    rows = {r["name"]: r for r in json.loads(cli("annotators", "--json", check=True).stdout)}
    backends = rows["depth"]["backends"]
    assert list(backends)[0] == "dpt-hybrid"  # the default first
    large = backends["depth-anything-v1-large"]
    assert large["repos"] == ["LiheYoung/depth-anything-large-hf"]
    assert large["licence"] == "Apache-2.0" and "model.safetensors" in large["files"]
    assert backends["depth-anything-v2-large"]["licence"] == "CC-BY-NC-4.0"
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo_paths[0], src / "a.jpg")
    proc = cli("annotate", src, "-o", tmp_path / "out", "-a", "depth",
               "--param", "depth.model=depth-anything-v1-large", "--weights-dir", tmp_path / "none",
               env={"HINTSET_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf")})  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "depth-anything-large-hf" in line]
    assert len(errors) == 1 and "model.safetensors" in errors[0]
