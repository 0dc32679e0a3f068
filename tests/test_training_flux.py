"""FLUX.1 and SD3 ControlNet training on tiny random bases (CPU): flow matching, zero init,
resume, export, the diffusers pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.test_training import _config, shards  # noqa: E402,F401  (fixture)


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory) -> Path:
    """``hintset tiny-base --family flux`` (through the CLI)."""
    from tests.conftest import run_cli

    base = tmp_path_factory.mktemp("flux") / "base"
    r = run_cli("tiny-base", base, "--family", "flux")
    assert r.returncode == 0 and "tiny flux base written" in r.stdout, r.stderr
    return base


def test_t5_tokenizer_is_offline_and_t5_shaped(tmp_path):
    from transformers import T5TokenizerFast

    from training.tiny_base import write_t5_tokenizer

    write_t5_tokenizer(tmp_path / "tok")
    tok = T5TokenizerFast.from_pretrained(tmp_path / "tok")
    ids = tok(["a red circle", "zebra"], padding="max_length", max_length=8).input_ids
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1 and tok.unk_token_id == 2
    assert ids[0][:3] == [tok.convert_tokens_to_ids(f"\u2581{w}") for w in "a red circle".split()]
    assert ids[0][3:] == [1, 0, 0, 0, 0]  # </s>, then padding
    assert tok.unk_token_id not in ids[1][:5]  # an unknown word falls back to letters


def test_flow_draws_follow_diffusers_density_and_schedule():
    """logit_normal u per sample from its own generator; SD3's static shift is in the sigmas."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.training_utils import compute_density_for_timestep_sampling

    from training.config import TrainConfig
    from training.draws import Draws
    from training.families.flow import density, noisy_and_target, timesteps_and_sigmas

    cfg = TrainConfig()
    u = density(cfg, Draws(0, 3, ["a", "b", "a"]))
    again = density(cfg, Draws(0, 3, ["b"]))
    assert u.shape == (3,) and ((u > 0) & (u < 1)).all() and u[1] == again[0]
    gen = Draws(0, 3, ["a"]).generators[0]
    assert u[0] == compute_density_for_timestep_sampling("logit_normal", 1, 0.0, 1.0, None,
                                                         generator=gen)[0]  # fmt: skip
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    t, s = timesteps_and_sigmas(sched, torch.tensor([0.0, 0.5, 0.999]))
    assert torch.allclose(t, s * 1000) and s[1] == pytest.approx(
        3 * 0.5005 / (1 + 2 * 0.5005), 1e-3
    )
    x, noise = torch.ones(3, 2), torch.zeros(3, 2)
    noisy, target = noisy_and_target(x, noise, s)
    assert torch.allclose(noisy[:, 0], 1 - s) and (target == -1).all()


def test_tiny_flux_and_zero_init(tiny_flux):
    """The base is detected as FLUX; a fresh ControlNet changes nothing (zero-initialised)."""
    from training.config import TrainConfig
    from training.draws import Draws
    from training.families import create, detect

    assert detect(str(tiny_flux)) == "flux"
    base = create(str(tiny_flux), "cpu", torch.float32)
    net = base.make_controlnet(3)
    assert type(net).__name__ == "FluxControlNetModel" and net.config.num_layers == 1
    assert not net.controlnet_x_embedder.weight.any()
    cfg = TrainConfig(resolution=64)
    batch = {
        "pixel_values": torch.rand(2, 3, 64, 64) * 2 - 1,
        "conditioning": torch.rand(2, 3, 64, 64),
    }
    encoded = base.encode(batch, ["a photo", ""], cfg)
    assert encoded["prompt_embeds"].shape[:2] == (2, 32)
    assert encoded["control_mean"].shape == (2, 4, 8, 8)
    with_net = base.loss_from(net, encoded, cfg, Draws(0, 1, ["x", "y"]))
    without = base.loss_from(net, encoded, cfg, Draws(0, 1, ["x", "y"]), control=False)
    assert float(with_net.detach()) == float(without) > 0
    assert create(str(tiny_flux), "cpu", torch.float32, "flux").LOCKED[0] == "text_encoder"
    no_text = type(base)(str(tiny_flux), "cpu", torch.float32, text=False)
    assert getattr(no_text, "text_encoder_2", None) is None and "text_encoder" not in no_text.LOCKED
    with pytest.raises(ValueError, match="stacked"):
        base.make_controlnet(4)
    union = base.make_controlnet(3, num_mode=7)
    assert union.controlnet_mode_embedder.num_embeddings == 7


def test_flux_resume_equals_uninterrupted(shards, tiny_flux, tmp_path):  # noqa: F811
    """Three steps in one run equal one step, a resume, another step, a resume of the resumed
    run: the same losses and weights (draws per sample, data position, optimiser state)."""
    from training.trainer import Trainer

    full = Trainer(_config(shards, tiny_flux, tmp_path / "full", steps=3), device="cpu")
    assert full.family.name == "flux"
    full_losses = full.train()
    parts = _config(shards, tiny_flux, tmp_path / "parts", checkpoint_every=1)
    for steps in (1, 2, 3):
        parts.steps, parts.resume = steps, "latest" if steps > 1 else ""
        part = Trainer(parts, device="cpu")
        assert len(part.train()) == 1
    logged = (tmp_path / "parts" / "log.jsonl").read_text().splitlines()
    np.testing.assert_allclose([json.loads(x)["loss"] for x in logged], full_losses,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    want, got = full.controlnet.state_dict(), part.controlnet.state_dict()
    assert want["controlnet_x_embedder.weight"].any()  # the zero-initialised input was trained
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6)


def _hint() -> object:
    from PIL import Image

    edges = np.zeros((64, 64), np.uint8)
    edges[16:48, 32] = 255
    return Image.fromarray(edges).convert("RGB")


@pytest.fixture(scope="session")
def canny_build(tmp_path_factory, photo_paths) -> Path:
    """``hintset build`` shards of 6 photos with canny maps at 64 px."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("flowbuild") / "out"
    r = run_cli("build", *photo_paths[:6], "-o", out, "-a", "canny", "--resolution", "64",
                "--shard-size", "6", "-q")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def _train_and_export(cli, build: Path, base: Path, family: str, tmp_path: Path) -> Path:
    """``hintset train --family F`` (2 steps, 64 px, a validation grid) then ``hintset export``
    (sample grid, single file even for the tiny base); returns the export folder."""
    run, exp = tmp_path / "run", tmp_path / "exp"
    r = cli("train", "--data", build, "--condition", "canny", "--base-model", base,
            "--family", family, "--output", run, "--steps", "2", "--batch-size", "2",
            "--resolution", "64", "--checkpoint-every", "2", "--validate-every", "2",
            "--num-validation", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (run / "validation" / "step-000002.png").is_file()
    r = cli("export", run / "checkpoint-2", "-o", exp, "--samples", "1",
            "--nonstandard-single-file")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (exp / "diffusers" / "samples.png").is_file()
    return exp


@pytest.mark.timeout(1800)  # CLI processes on a loaded 2-core machine
def test_flux_build_train_export_pipeline(tiny_flux, canny_build, cli, tmp_path):
    """build -> train --family flux -> export -> FluxControlNetPipeline samples from a PIL hint;
    the single file holds the diffusers keys ComfyUI's InstantX loader detects."""
    from diffusers import FluxControlNetModel, FluxControlNetPipeline
    from safetensors import safe_open

    exp = _train_and_export(cli, canny_build, tiny_flux, "flux", tmp_path)
    with safe_open(str(exp / "controlnet-checkpoint-2.safetensors"), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    # comfy/controlnet.py load_controlnet_state_dict: these two keys -> load_controlnet_flux_instantx
    assert {"controlnet_blocks.0.weight", "controlnet_x_embedder.weight"} <= keys
    assert meta["hintset.architecture"] == "flux" and meta["hintset.layout"] == "diffusers"
    assert meta["hintset.loads_in"] == "diffusers"  # tiny heads: not what ComfyUI rebuilds
    assert "attention_head_dim=16" in (exp / "diffusers" / "README.md").read_text()
    card = (exp / "diffusers" / "README.md").read_text()
    assert "FluxControlNetPipeline" in card and "control_image=control_image" in card
    net = FluxControlNetModel.from_pretrained(exp / "diffusers")
    assert net.controlnet_x_embedder.weight.any()  # trained away from its zero init
    pipe = FluxControlNetPipeline.from_pretrained(str(tiny_flux), controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a photo", control_image=_hint(), num_inference_steps=2, height=64, width=64,
                  output_type="np").images  # fmt: skip
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory) -> Path:
    from training.tiny_base import write_tiny_sd3

    return write_tiny_sd3(tmp_path_factory.mktemp("sd3") / "base", seed=0)


def test_tiny_sd3_text_and_zero_init(tiny_sd3):
    """SD3 prompt encoding (CLIP-L + CLIP-G padded to T5's width, then T5), control latents
    scaled without shift (the pipeline's InstantX convention), a zero-initialised ControlNet."""
    from training.config import TrainConfig
    from training.draws import Draws
    from training.families import create, detect

    assert detect(str(tiny_sd3)) == "sd3"
    base = create(str(tiny_sd3), "cpu", torch.float32)
    net = base.make_controlnet(3)
    assert type(net).__name__ == "SD3ControlNetModel" and net.config.num_layers == 1
    assert net.config.force_zeros_for_pooled_projection  # the pipeline then skips the shift
    text = base.text_conditioning(["a red circle", ""])
    assert text["prompt_embeds"].shape == (2, 16 + 32, 64)  # CLIP tokens, then T5 tokens
    assert text["pooled_prompt_embeds"].shape == (2, 64)
    mean = torch.ones(1, 4, 8, 8)
    assert torch.allclose(base.control_latents(mean), mean * 1.5305)
    assert torch.allclose(base.vae_latents(mean), (mean - 0.0609) * 1.5305)
    cfg = TrainConfig(resolution=64)
    batch = {"pixel_values": torch.rand(2, 3, 64, 64) * 2 - 1,
             "conditioning": torch.rand(2, 3, 64, 64)}  # fmt: skip
    encoded = base.encode(batch, ["a photo", ""], cfg)
    with_net = base.loss_from(net, encoded, cfg, Draws(0, 1, ["x", "y"]))
    without = base.loss_from(net, encoded, cfg, Draws(0, 1, ["x", "y"]), control=False)
    assert float(with_net.detach()) == float(without) > 0


@pytest.mark.timeout(1800)  # CLI processes on a loaded 2-core machine
def test_sd3_build_train_export_pipeline(tiny_sd3, canny_build, cli, tmp_path):
    """build -> train --family sd3 -> export -> StableDiffusion3ControlNetPipeline samples from
    a PIL hint; the single file holds the diffusers keys ComfyUI's SD3 loader detects."""
    from diffusers import SD3ControlNetModel, StableDiffusion3ControlNetPipeline
    from safetensors import safe_open

    exp = _train_and_export(cli, canny_build, tiny_sd3, "sd3", tmp_path)
    with safe_open(str(exp / "controlnet-checkpoint-2.safetensors"), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    # comfy/controlnet.py load_controlnet_state_dict: these keys -> load_controlnet_mmdit
    assert {"controlnet_blocks.0.weight", "pos_embed_input.proj.weight"} <= keys
    assert meta["hintset.architecture"] == "sd3" and meta["hintset.layout"] == "diffusers"
    card = (exp / "diffusers" / "README.md").read_text()
    assert "StableDiffusion3ControlNetPipeline" in card and "SD3ControlNetModel" in card
    net = SD3ControlNetModel.from_pretrained(exp / "diffusers")
    assert net.pos_embed_input.proj.weight.any()  # trained away from its zero init
    pipe = StableDiffusion3ControlNetPipeline.from_pretrained(str(tiny_sd3), controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a photo", control_image=_hint(), num_inference_steps=2, height=64, width=64,
                  output_type="np").images  # fmt: skip
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def _export_untrained(family: str, base: Path, folder: Path) -> Path:
    """EXPORT/diffusers with the family's fresh ControlNet, its zero-initialised outputs made
    non-zero so control visibly changes the images."""
    from training.families import create

    net = create(str(base), "cpu", torch.float32, family).make_controlnet(3)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_", "pos_embed_input")):
                param.normal_(0, 0.5)
    net.save_pretrained(folder / "diffusers")
    return folder


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_evaluate_generates_with_flux_and_sd3(family, tiny_flux, tiny_sd3, canny_build, tmp_path):
    """``hintset evaluate --model EXPORT --base-model TINY`` runs the family's ControlNet pipeline
    and the base without control, and scores both (evaluation/generate.py PIPELINES)."""
    from evaluation.generate import PIPELINES
    from tests.conftest import run_cli

    base = {"flux": tiny_flux, "sd3": tiny_sd3}[family]
    assert all(f.tested for f in PIPELINES.values() if f.name == family)
    export = _export_untrained(family, base, tmp_path / "export")
    out = tmp_path / "report"
    proc = run_cli("evaluate", "--data", canny_build, "--condition", "canny", "--model", export,
                   "--base-model", base, "-o", out, "--limit", "2", "--steps", "2",
                   "--resolution", "64", "--device", "cpu", env={"HINTSET_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["controlnet", "no-control"]
    assert all(r["counts"]["scored_keys"] == 2 for r in summary["runs"])
    ctrl = sorted((out / "images" / "controlnet").glob("*.png"))
    plain = sorted((out / "images" / "no-control").glob("*.png"))
    assert [p.name for p in ctrl] == [p.name for p in plain] and len(ctrl) == 2
    assert any(a.read_bytes() != b.read_bytes() for a, b in zip(ctrl, plain, strict=True))
