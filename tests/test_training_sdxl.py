"""SDXL ControlNet training on a tiny random SDXL: build -> train -> export -> pipeline, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.test_training import _config, shards  # noqa: E402,F401  (fixture)


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory) -> Path:
    from training.tiny_base import write_tiny_sdxl

    return write_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "base", seed=0)


def test_tiny_sdxl_is_sdxl(tiny_sdxl):
    from training.families import create, detect

    assert detect(str(tiny_sdxl)) == "sdxl"
    base = create(str(tiny_sdxl), "cpu", torch.float32)
    assert base.unet.config.addition_embed_type == "text_time"
    assert type(base.text_encoder_2).__name__ == "CLIPTextModelWithProjection"


@pytest.mark.timeout(1800)  # four CLI processes; slow on a loaded 2-core machine
def test_sdxl_time_ids_use_true_original_size_and_crop(tiny_sdxl, cli, photo_paths, tmp_path):
    """build -> train (CLI) -> export -> StableDiffusionXLControlNetPipeline samples; the time ids
    carry each photo's true size (index) and the crop actually taken."""
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline
    from PIL import Image
    from safetensors import safe_open

    from pipeline import cli as hcli
    from pipeline.layout import read_index
    from training.data import ShardDataset, collate
    from training.families.sdxl import sdxl_time_ids

    if "build" not in hcli.COMMANDS:
        pytest.skip("hintset build not merged yet")
    out, run, exp = tmp_path / "out", tmp_path / "run", tmp_path / "exp"
    r = cli("build", *photo_paths[:6], "-o", out, "-a", "canny", "--resolution", "64",
            "--shard-size", "6", "-q")  # fmt: skip
    assert r.returncode == 0, r.stderr
    recorded = {  # what the build recorded as each photo's original size
        row["key"]: (row["original_height"], row["original_width"])
        for p in sorted((out / "index").glob("*.parquet"))
        for row in read_index(p.read_bytes())
    }
    dataset = ShardDataset(str(out), ["canny"], 64, seed=0, shuffle_buffer=1)
    stream = iter(dataset)
    batch = collate([next(stream) for _ in range(6)])
    pairs = zip(batch["key"], batch["original_size"], batch["crop_top_left"], strict=True)
    for key, (h, w), (top, left) in pairs:
        assert (h, w) == recorded[key] and min(h, w) > 64  # not the 64 px image in the tar
        assert min(top, left) == 0 and max(top, left) <= 64  # short side resized to 64
    ids = sdxl_time_ids(batch, 64, "cpu", torch.float32)
    assert ids.shape == (6, 6) and ids[:, 4:].eq(64).all()
    assert ids[:, :2].tolist() == [list(map(float, s)) for s in batch["original_size"]]
    r = cli("train", "--data", out, "--condition", "canny", "--base-model", tiny_sdxl,
            "--output", run, "--steps", "2", "--batch-size", "2", "--resolution", "64",
            "--checkpoint-every", "2", "--validate-every", "2", "--num-validation", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (run / "validation" / "step-000002.png").is_file()
    r = cli(
        "export", run / "checkpoint-2", "-o", exp, "--samples", "1", "--nonstandard-single-file"
    )
    assert r.returncode == 0, r.stderr
    single = exp / "controlnet-checkpoint-2.safetensors"
    with safe_open(str(single), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    # ComfyUI's load_controlnet takes a file holding this key for the diffusers layout
    assert "controlnet_cond_embedding.conv_in.weight" in keys
    assert meta["hintset.architecture"] == "sdxl" and meta["hintset.layout"] == "diffusers"
    assert "add_embedding.linear_1.weight" in keys  # SDXL's pooled text + time-id embedding
    model = ControlNetModel.from_pretrained(exp / "diffusers")
    assert model.config.addition_embed_type == "text_time"
    assert model.config.conditioning_channels == 3
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(str(tiny_sdxl), controlnet=model)
    pipe.set_progress_bar_config(disable=True)
    edges = np.zeros((64, 64), np.uint8)
    edges[16:48, 32] = 255
    images = pipe("a photo", image=Image.fromarray(edges), num_inference_steps=2, height=64,
                  width=64, output_type="np").images  # fmt: skip
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    assert "stable-diffusion-xl" in (exp / "diffusers" / "README.md").read_text()


def test_sdxl_resume_equals_uninterrupted(shards, tiny_sdxl, tmp_path):  # noqa: F811
    from training.trainer import Trainer

    full = Trainer(_config(shards, tiny_sdxl, tmp_path / "full", steps=2), device="cpu")
    assert full.family.name == "sdxl"
    full_losses = full.train()
    half = _config(shards, tiny_sdxl, tmp_path / "half", steps=1, checkpoint_every=1)
    Trainer(half, device="cpu").train()
    half.steps, half.resume = 2, "latest"
    resumed = Trainer(half, device="cpu")
    assert len(resumed.train()) == 1
    lines = (tmp_path / "half" / "log.jsonl").read_text().splitlines()
    log = [json.loads(x)["loss"] for x in lines]
    np.testing.assert_allclose(log, full_losses, rtol=1e-5, atol=1e-6)
    a, b = full.controlnet.state_dict(), resumed.controlnet.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
