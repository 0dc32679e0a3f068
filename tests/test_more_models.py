"""Backends added for issue 25: Depth Anything V1 (depth), OneFormer ADE20K (seg) and SAM (sam),
with their published layouts and licences.

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

from annotators import ade20k, create, depth, seg
from annotators.learned import clear_cache
from annotators.sam import colour_masks
from annotators.weights import WeightsError
from tests.weights import depth_anything_v2_config, write_depth, write_oneformer, write_sam

pytestmark = pytest.mark.usefixtures("offline_weights")

V1 = ("depth-anything-v1-small", "depth-anything-v1-base", "depth-anything-v1-large")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("more-models")
    write_depth(folder, tiny=True, models=["depth-anything-v1-small"])
    write_oneformer(folder)
    write_sam(folder)
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
    assert proc.returncode == 2  # checked before any work
    errors = [line for line in proc.stderr.splitlines() if "depth-anything-large-hf" in line]
    assert len(errors) == 1 and "model.safetensors" in errors[0]


def test_oneformer_published_folder_and_layout(tiny_dir):
    spec = seg.MODELS["oneformer-ade20k-swin-large"]
    assert spec.repo_id == "shi-labs/oneformer_ade20k_swin_large" and spec.licence == "MIT"
    folder = tiny_dir / spec.repo_id
    for name in ("config.json", "pytorch_model.bin", "preprocessor_config.json", *spec.extra):
        assert (folder / name).is_file(), name
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    for key in ("model.task_encoder.task_mlp.layers.0.0.weight",
                "model.transformer_module.decoder.query_transformer.decoder.layers.0."
                "self_attn.out_proj.weight", "model.transformer_module.decoder.class_embed.weight"):  # fmt: skip
        assert key in state, key
    assert any(k.startswith("model.pixel_level_module.encoder.") for k in state)
    # 150 classes + no-object
    assert tuple(state["model.transformer_module.decoder.class_embed.weight"].shape) == (151, 32)
    assert tuple(state["model.task_encoder.task_mlp.layers.0.0.weight"].shape)[1] == 77


def test_oneformer_equals_transformers_post_processing(tiny_dir, photos):
    """The seg map is transformers' OneFormer semantic post-processing of the network output
    (task prompt "the task is semantic"), and batches equal single images."""
    from transformers import OneFormerImageProcessor

    annotator = create("seg", model="oneformer-ade20k-swin-large", resolution=64,
                       weights_dir=str(tiny_dir), device="cpu")  # fmt: skip
    results = annotator.annotate_batch(photos, keys=["a", "b"])
    processor = OneFormerImageProcessor(num_labels=150)
    for image, result in zip(photos, results, strict=True):
        _, pixels, _ = next(annotator.batches([image]))
        tasks = annotator._task_inputs
        with torch.no_grad():
            out = annotator._model(pixel_values=pixels, task_inputs=tasks)
        (expected,) = processor.post_process_semantic_segmentation(
            out, target_sizes=[image.shape[:2]]
        )
        labels = result.maps["seglabel"]
        assert labels.shape == image.shape[:2]
        assert np.mean(labels == expected.numpy()) > 0.99
        assert np.array_equal(result.maps["seg"], ade20k.PALETTE[labels])
        assert len(np.unique(labels)) > 1  # the random network separates regions
        single = annotator.annotate_batch([image])[0].maps["seglabel"]
        assert np.mean(single == labels) > 0.99
    info = annotator.info()
    assert info["licence"] == "MIT" and info["weights"][0]["file"] == "pytorch_model.bin"


def test_oneformer_without_tokenizer_fails_with_one_line(tiny_dir, tmp_path):
    source = tiny_dir / "shi-labs/oneformer_ade20k_swin_large"
    target = tmp_path / "shi-labs/oneformer_ade20k_swin_large"
    shutil.copytree(source, target)
    (target / "vocab.json").unlink()
    annotator = create("seg", model="oneformer-ade20k-swin-large", weights_dir=str(tmp_path),
                       device="cpu")  # fmt: skip
    for check in (annotator.check_ready, annotator.load):  # before work, and when loading
        with pytest.raises(WeightsError) as err:
            check()
        assert "\n" not in str(err.value) and "vocab.json" in str(err.value)


def test_sam_published_layout():
    """transformers' SamModel at the default (ViT-B) config: sam-vit-base's 93.7M parameters
    and key names; the hub ids are facebook/sam-vit-{huge,large,base} (Apache-2.0)."""
    from transformers import SamConfig, SamModel

    with torch.device("meta"):
        state = SamModel(SamConfig()).state_dict()
    assert sum(v.numel() for v in state.values()) == 93_735_984
    assert tuple(state["vision_encoder.patch_embed.projection.weight"].shape) == (768, 3, 16, 16)
    assert tuple(state["mask_decoder.iou_prediction_head.proj_out.weight"].shape) == (4, 256)
    assert create("sam").licence() == "Apache-2.0"
    assert create("sam").model_id() == "facebook/sam-vit-huge"


def test_colour_masks_smaller_on_top():
    big = np.zeros((4, 6), bool)
    big[:, :4] = True
    small = np.zeros((4, 6), bool)
    small[1:3, 2:5] = True
    out = colour_masks([small, big], (4, 6))
    assert (out[0, 0] == ade20k.PALETTE[0]).all() and (out[1, 3] == ade20k.PALETTE[1]).all()
    assert (out[0, 5] == 0).all()


def test_sam_masks_map_and_count(tiny_dir, photos):
    annotator = create("sam", points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                       weights_dir=str(tiny_dir), device="cpu")  # fmt: skip
    results = annotator.annotate_batch(photos)
    again = annotator.annotate_batch(photos[:1])[0]
    assert np.array_equal(again.maps["sam"], results[0].maps["sam"])  # deterministic
    for image, result in zip(photos, results, strict=True):
        rgb = result.maps["sam"]
        assert rgb.shape == (*image.shape[:2], 3) and rgb.dtype == np.uint8
        count = int(result.stats["sam_masks"])
        colours = {tuple(c) for c in rgb.reshape(-1, 3)} - {(0, 0, 0)}
        assert count > 1 and 1 < len(colours) <= count  # masks may hide smaller-ranked ones
        assert colours <= {tuple(c) for c in ade20k.PALETTE[:count]}
    assert annotator.info()["weights"][0]["model"] == "facebook/sam-vit-huge"
