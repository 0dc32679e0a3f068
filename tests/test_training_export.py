"""Exports that load everywhere: 3-channel hints, the original cldm key set (checked against
cldm_v15.yaml's numbers), metadata, model card, offline ``from_single_file``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.test_training import _config, shards, tiny_base  # noqa: E402,F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]


def cldm_shapes(
    *,
    model_channels: int = 320,
    channel_mult: tuple[int, ...] = (1, 2, 4, 4),
    num_res_blocks: int = 2,
    attention_resolutions: tuple[int, ...] = (4, 2, 1),
    context_dim: int = 768,
    hint_channels: int = 3,
    in_channels: int = 4,
    transformer_depth: int = 1,
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of lllyasviel's ``cldm.ControlNet`` (cldm/cldm.py with ldm's ResBlock,
    SpatialTransformer with conv proj_in/out, GEGLU feed-forward, Downsample ``op``), worked out
    from the config numbers alone; defaults are cldm_v15.yaml's."""
    shapes: dict[str, tuple[int, ...]] = {}

    def put(name: str, *shape: int) -> None:
        shapes[f"control_model.{name}"] = shape

    def conv(name: str, cin: int, cout: int, k: int) -> None:
        put(f"{name}.weight", cout, cin, k, k)
        put(f"{name}.bias", cout)

    def linear(name: str, cin: int, cout: int, bias: bool = True) -> None:
        put(f"{name}.weight", cout, cin)
        if bias:
            put(f"{name}.bias", cout)

    def norm(name: str, c: int) -> None:
        put(f"{name}.weight", c)
        put(f"{name}.bias", c)

    emb = 4 * model_channels

    def resblock(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.in_layers.0", cin)
        conv(f"{name}.in_layers.2", cin, cout, 3)
        linear(f"{name}.emb_layers.1", emb, cout)
        norm(f"{name}.out_layers.0", cout)
        conv(f"{name}.out_layers.3", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.skip_connection", cin, cout, 1)

    def transformer(name: str, ch: int) -> None:
        norm(f"{name}.norm", ch)
        conv(f"{name}.proj_in", ch, ch, 1)
        for d in range(transformer_depth):
            block = f"{name}.transformer_blocks.{d}"
            for attn, ctx in (("attn1", ch), ("attn2", context_dim)):
                linear(f"{block}.{attn}.to_q", ch, ch, bias=False)
                linear(f"{block}.{attn}.to_k", ctx, ch, bias=False)
                linear(f"{block}.{attn}.to_v", ctx, ch, bias=False)
                linear(f"{block}.{attn}.to_out.0", ch, ch)
            linear(f"{block}.ff.net.0.proj", ch, ch * 8)
            linear(f"{block}.ff.net.2", ch * 4, ch)
            for i in (1, 2, 3):
                norm(f"{block}.norm{i}", ch)
        conv(f"{name}.proj_out", ch, ch, 1)

    linear("time_embed.0", model_channels, emb)
    linear("time_embed.2", emb, emb)
    conv("input_blocks.0.0", in_channels, model_channels, 3)
    conv("zero_convs.0.0", model_channels, model_channels, 1)
    hint = [hint_channels, 16, 16, 32, 32, 96, 96, 256, model_channels]
    for i in range(len(hint) - 1):
        conv(f"input_hint_block.{2 * i}", hint[i], hint[i + 1], 3)
    ch, ds, index = model_channels, 1, 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            resblock(f"input_blocks.{index}.0", ch, mult * model_channels)
            ch = mult * model_channels
            if ds in attention_resolutions:
                transformer(f"input_blocks.{index}.1", ch)
            conv(f"zero_convs.{index}.0", ch, ch, 1)
            index += 1
        if level != len(channel_mult) - 1:
            conv(f"input_blocks.{index}.0.op", ch, ch, 3)
            conv(f"zero_convs.{index}.0", ch, ch, 1)
            index += 1
            ds *= 2
    resblock("middle_block.0", ch, ch)
    transformer("middle_block.1", ch)
    resblock("middle_block.2", ch, ch)
    conv("middle_block_out.0", ch, ch, 1)
    return shapes


def test_export_layout_matches_cldm_v15_at_sd15_size():
    """The export's key mapping on an SD1.5-size ControlNet (meta device: no memory, no
    network) gives exactly cldm_v15.yaml's 340 keys and shapes, hint input 3 channels."""
    from diffusers import ControlNetModel

    from training.export import to_original

    expected = cldm_shapes()
    assert len(expected) == 340
    with torch.device("meta"):
        model = ControlNetModel(cross_attention_dim=768, attention_head_dim=8,
                                conditioning_channels=3)  # fmt: skip
    got = to_original(model.state_dict(), dict(model.config))
    assert {k: tuple(v.shape) for k, v in got.items()} == expected
    assert expected["control_model.input_hint_block.0.weight"] == (16, 3, 3, 3)


@pytest.fixture(scope="module")
def exported(shards, tiny_base, tmp_path_factory):  # noqa: F811
    """A canny ControlNet trained 2 steps by the Trainer and exported with a model card."""
    from training.export import export
    from training.trainer import Trainer

    tmp = tmp_path_factory.mktemp("exp")
    (shards / "manifest.json").write_text('{"fake": "manifest"}')
    cfg = _config(shards, tiny_base, tmp / "run", steps=2, checkpoint_every=2)
    Trainer(cfg, device="cpu").train()
    return export(
        tmp / "run" / "checkpoint-2", tmp / "export", samples=2, nonstandard_single_file=True
    )  # fmt: skip  (a tiny base: diffusers only)


def test_tiny_export_has_cldm_keys_and_runs_with_a_pil_image(exported, tiny_base):  # noqa: F811
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image
    from safetensors.torch import load_file

    single = load_file(str(exported["single_file"]))
    tiny = cldm_shapes(
        model_channels=32, channel_mult=(1, 2), attention_resolutions=(1,), context_dim=32
    )  # fmt: skip  (the tiny base's numbers)
    assert {k: tuple(v.shape) for k, v in single.items()} == tiny
    assert tuple(single["control_model.input_hint_block.0.weight"].shape) == (16, 3, 3, 3)
    model = ControlNetModel.from_pretrained(exported["diffusers"])
    assert model.config.conditioning_channels == 3
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        str(tiny_base), controlnet=model, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    edges = np.zeros((64, 64), np.uint8)
    edges[20:44, 20] = edges[20, 20:44] = 255
    out = pipe("a photo", image=Image.fromarray(edges), num_inference_steps=2, height=64,
               width=64, output_type="np").images  # fmt: skip
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_export_metadata_model_card_and_yaml(exported, shards, tiny_base):  # noqa: F811
    import hashlib

    import yaml
    from safetensors import safe_open

    with safe_open(str(exported["single_file"]), "pt") as f:
        meta = f.metadata()
    assert meta["hintset.base_model"] == str(tiny_base)
    assert meta["hintset.conditions"] == "canny" and meta["hintset.steps"] == "2"
    assert meta["hintset.resolution"] == "64" and meta["hintset.architecture"] == "sd"
    sha = hashlib.sha256((shards / "manifest.json").read_bytes()).hexdigest()
    assert meta["hintset.dataset_manifest_sha256"] == sha
    card = (exported["diffusers"] / "README.md").read_text()
    assert "base_model:" not in card and "ControlNet (canny)" in card  # a local path: omitted
    assert "| steps | 2 |" in card and "![samples" in card
    grid = np.asarray(__import__("PIL.Image").Image.open(exported["diffusers"] / "samples.png"))
    assert grid.shape[1] == 3 * 64 and grid.shape[0] > 2 * 64  # 2 rows + caption strips
    original = yaml.safe_load(exported["single_file"].with_suffix(".yaml").read_text())
    params = original["model"]["params"]["control_stage_config"]["params"]
    assert params["hint_channels"] == 3 and params["model_channels"] == 32
    assert params["channel_mult"] == [1, 2] and params["context_dim"] == 32


def test_from_single_file_loads_offline(exported):
    """``ControlNetModel.from_single_file(path, config=EXPORT/diffusers)`` with the hub off."""
    code = (
        "import sys, torch\n"
        "from diffusers import ControlNetModel\n"
        "m = ControlNetModel.from_single_file(sys.argv[1], config=sys.argv[2])\n"
        "ref = ControlNetModel.from_pretrained(sys.argv[2])\n"
        "a, b = m.state_dict(), ref.state_dict()\n"
        "assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)\n"
        "print('loaded', m.config.conditioning_channels)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(exported["single_file"]), str(exported["diffusers"])],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "loaded 3"


def test_export_json_config_records_three_channels(exported):
    config = json.loads((exported["diffusers"] / "config.json").read_text())
    assert config["conditioning_channels"] == 3


def test_export_puts_the_evaluation_table_in_the_card(exported, tmp_path):
    """``--evaluation REPORT``: the runs of a ``hintset evaluate`` summary, side by side with their
    intervals, go into the model card; a file that is not such a summary is refused before any
    output is written."""
    import json

    from evaluation.report import summarize
    from training.export import export

    checkpoint = exported["diffusers"].parents[1] / "run" / "checkpoint-2"
    rows = [{"key": f"k{i}", "run": "controlnet", "f1": 0.4 + i / 100} for i in range(5)]
    base_rows = [{"key": f"k{i}", "run": "no-control", "f1": 0.1 + i / 100} for i in range(5)]
    counts = {"scored_keys": 5}
    summary = {
        "data": "ds", "condition": "canny", "metrics": ["f1"],
        "settings": {"steps": 20, "guidance": 7.5},
        "runs": [summarize({"name": "controlnet", "counts": counts}, rows, ["f1"]),
                 summarize({"name": "no-control", "counts": counts}, base_rows, ["f1"])],
    }  # fmt: skip
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "summary.json").write_text(json.dumps(summary))
    done = export(checkpoint, tmp_path / "out", samples=0, evaluation=tmp_path / "report")
    card = (done["diffusers"] / "README.md").read_text()
    assert "## Evaluation" in card and "steps 20, guidance 7.5" in card
    assert "| controlnet | 5 | 0.420 [" in card and "| no-control | 5 | 0.120 [" in card

    (tmp_path / "bad.json").write_text('{"loss": 1}')
    with pytest.raises(ValueError, match="not a hintset evaluate summary"):
        export(checkpoint, tmp_path / "out2", evaluation=tmp_path / "bad.json")
    assert not (tmp_path / "out2").exists()
