"""ControlNet-Union training (SDXL ``ControlNetUnionModel``): samples with several maps, a random
subset per sample and step, export with the slot table, union pipeline, exact resume."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.test_evaluate import built, depth_weights, weights_env  # noqa: E402,F401  (fixtures)
from tests.test_training import _config  # noqa: E402
from tests.test_training_flux import tiny_flux  # noqa: E402,F401  (fixture)
from tests.test_training_sdxl import tiny_sdxl  # noqa: E402,F401  (fixture)


@pytest.fixture(scope="module")
def union_shards(tmp_path_factory, photo_paths) -> Path:
    """A build folder made by hand: 8 samples with canny and hed (also stored as depth, for
    FLUX's table) maps, except key 00000002 (canny only), 00000005 (hed only) and 00000007
    (neither: skipped)."""
    import webdataset as wds
    from PIL import Image, ImageFilter

    import annotators

    out = tmp_path_factory.mktemp("union-built")
    (out / "shards").mkdir()
    canny = annotators.create("canny")
    with wds.TarWriter(str(out / "shards" / "00000.tar")) as sink:
        for i, p in enumerate(photo_paths[:8]):
            img = Image.open(p).convert("RGB").resize((80, 64))
            edges = Image.fromarray(canny(np.asarray(img)))
            soft = edges.filter(ImageFilter.GaussianBlur(2))  # stands in for HED soft edges
            sample = {"__key__": f"0000{i:04d}", "txt": f"a photo {i}".encode()}
            jpg = io.BytesIO()
            img.save(jpg, "JPEG")
            sample["jpg"] = jpg.getvalue()
            maps = (("canny", edges, (5, 7)), ("hed", soft, (2, 7)), ("depth", soft, (2, 7)))
            for name, im, skip in maps:
                if i not in skip:
                    png = io.BytesIO()
                    im.save(png, "PNG")
                    sample[f"{name}.png"] = png.getvalue()
            sink.write(sample)
    return out


def _union(shards, base, out, **kw):
    kw = {"condition": "canny,hed", "union": True, "family": "sdxl", **kw}
    return _config(shards, base, out, **kw)


def test_union_dataset_yields_the_maps_each_sample_has(union_shards):
    from training.data import ShardDataset, collate

    ds = ShardDataset(str(union_shards), ["canny", "hed"], 64, shuffle_buffer=1, union=True)
    samples = {s["key"]: s for s in (s for _, s in zip(range(7), iter(ds), strict=False))}
    assert set(samples) == {f"0000{i:04d}" for i in range(7)}  # 00000007 has no map
    assert ds.skipped["missing_map"] == 1
    for key, s in samples.items():
        want = [key != "00000005", key != "00000002"]
        assert s["present"].tolist() == want
        assert s["conditioning"].shape == (2, 3, 64, 64)
        for k, has in enumerate(want):  # each map its own RGB image; a missing one all zero
            assert (s["conditioning"][k].max() > 0) == has
            assert np.array_equal(s["conditioning"][k][0], s["conditioning"][k][2])
    batch = collate(list(samples.values()))
    assert batch["present"].shape == (7, 2) and batch["conditioning"].shape == (7, 2, 3, 64, 64)
    with pytest.raises(ValueError, match="need --union or --stack-conditions"):
        ShardDataset(str(union_shards), ["canny", "hed"], 64)


def test_union_subsets_are_per_sample_mostly_single_and_never_empty():
    from training.draws import Draws
    from training.families.union import draw_subsets

    keys = [f"k{i}" for i in range(400)]
    present = [[0, 1, 2] if i % 2 else [1] for i in range(400)]
    subsets = draw_subsets(Draws(0, 3, keys), present, 0.7)
    assert all(
        s and set(s) <= set(p) and s == sorted(s) for s, p in zip(subsets, present, strict=True)
    )
    assert all(s == [1] for s in subsets[::2])  # one map: always that one
    multi = subsets[1::2]
    single = sum(len(s) == 1 for s in multi) / len(multi)
    assert 0.6 < single < 0.8  # P(single) = 0.7
    assert {len(s) for s in multi} == {1, 2, 3}
    assert {s[0] for s in multi if len(s) == 1} == {0, 1, 2}
    # the same sample draws the same subset in another batch (other rank, micro-batch, resume)
    alone = draw_subsets(Draws(0, 3, keys[7:8]), present[7:8], 0.7)
    assert alone == subsets[7:8]
    assert draw_subsets(Draws(0, 4, keys), present, 0.7) != subsets  # a new step, new draws
    assert all(len(s) == 1 for s in draw_subsets(Draws(0, 3, keys), present, 1.0))


def test_slot_ids_come_from_the_manifest_preset_else_the_table(tmp_path):
    from training.families.union import recorded_slots, union_record, union_slots

    assert union_slots("sdxl", ["canny", "hed"]) == {"canny": 3, "hed": 2}
    data = tmp_path / "ds"
    data.mkdir()
    preset = {"name": "p", "union": "sdxl", "slots": {"canny": 6}}  # a preset's own id wins
    (data / "manifest.json").write_text(json.dumps({"config": {"preset": preset}}))
    recorded_slots.cache_clear()
    assert union_slots("sdxl", ["canny", "hed"], str(data)) == {"canny": 6, "hed": 2}
    assert union_slots("flux", ["canny"], str(data)) == {"canny": 0}  # another family's preset
    record = union_record("sdxl", ["canny", "hed"], str(data))
    assert record["slots"] == {"canny": 6, "hed": 2} and record["slot_table"]["inpaint"] == 7


def test_union_controlnet_starts_from_the_unet_and_adds_nothing(tiny_sdxl):  # noqa: F811
    from training.families import create

    family = create(str(tiny_sdxl), "cpu", torch.float32, "sdxl", union=True)
    assert family.name == "sdxl-union"
    net = family.make_controlnet(3)
    assert type(net).__name__ == "ControlNetUnionModel"
    assert net.config.num_control_type == 8 and net.task_embedding.shape == (8, 32)
    unet = family.unet.state_dict()
    for name, value in net.state_dict().items():
        head = name.split(".")[0]
        if head in ("conv_in", "time_embedding", "add_embedding", "down_blocks", "mid_block"):
            assert torch.equal(value, unet[name]), name  # SDXL's add_embedding copied too
    outputs = [p for n, p in net.named_parameters() if n.startswith(("controlnet_down_blocks",
               "controlnet_mid_block", "spatial_ch_projs"))]  # fmt: skip
    assert outputs and all(p.abs().sum() == 0 for p in outputs)
    with pytest.raises(ValueError, match="no union ControlNet for family 'sd15'"):
        create(str(tiny_sdxl), "cpu", torch.float32, "sd15", union=True)


def test_union_residuals_per_sample_do_not_depend_on_the_batch(union_shards, tiny_sdxl, tmp_path):  # noqa: F811
    """Samples drawing different subsets run in separate calls; each sample's residuals (and
    so its loss) equal those it gets alone, in sample order."""
    from training.data import ShardDataset, collate
    from training.draws import Draws
    from training.families import create
    from training.families.union import draw_subsets

    config = _union(union_shards, tiny_sdxl, tmp_path / "r", union_single=0.3)
    family = create(str(tiny_sdxl), "cpu", torch.float32, "sdxl", union=True)
    torch.manual_seed(0)
    net = family.make_controlnet(3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("controlnet_down", "controlnet_mid", "spatial_ch")):
                p.normal_(0, 0.1)  # non-zero outputs, so the comparison means something
    stream = iter(ShardDataset(str(union_shards), ["canny", "hed"], 64, shuffle_buffer=1,
                               union=True))  # fmt: skip
    batch = collate([next(stream) for _ in range(6)])
    encoded = family.encode(batch, batch["caption"], config)
    noisy = torch.randn(6, 4, 8, 8)
    steps = torch.arange(6) * 100
    kwargs = family.model_kwargs(encoded)

    def residuals(rows):
        index = torch.tensor(rows)
        part = {k: v[index] if torch.is_tensor(v) else v for k, v in encoded.items()}
        kw = {
            "encoder_hidden_states": kwargs["encoder_hidden_states"][index],
            "added_cond_kwargs": {k: v[index] for k, v in kwargs["added_cond_kwargs"].items()},
        }
        draws = Draws(0, 1, [batch["key"][i] for i in rows])
        with torch.no_grad():
            return family.control_residuals(net, noisy[index], steps[index], part, kw, config,
                                            draws)  # fmt: skip

    down, mid = residuals(list(range(6)))
    present = [np.flatnonzero(p).tolist() for p in batch["present"]]
    sizes = {len(s) for s in draw_subsets(Draws(0, 1, batch["key"]), present, 0.3)}
    assert sizes == {1, 2}  # the batch mixes single and double draws
    for i in range(6):
        d1, m1 = residuals([i])
        torch.testing.assert_close(m1[0], mid[i], rtol=1e-4, atol=1e-5)
        for a, b in zip(d1, down, strict=True):
            torch.testing.assert_close(a[0], b[i], rtol=1e-4, atol=1e-5)


def _resumed_equals_uninterrupted(config, tmp_path) -> dict:
    """Run 1 step, checkpoint, resume to 2 == 2 uninterrupted steps: losses and weights (the
    subset draws are keyed per sample and step, so the resumed run draws the same ones).
    ``config(out, **options)`` makes the run's config; returns the uninterrupted weights."""
    from training.trainer import Trainer

    full = Trainer(config(tmp_path / "full", steps=2), device="cpu")
    full_losses = full.train()
    half = config(tmp_path / "half", steps=1, checkpoint_every=1)
    Trainer(half, device="cpu").train()
    half.steps, half.resume = 2, "latest"
    resumed = Trainer(half, device="cpu")
    assert len(resumed.train()) == 1
    lines = (tmp_path / "half" / "log.jsonl").read_text().splitlines()
    np.testing.assert_allclose([json.loads(x)["loss"] for x in lines], full_losses, rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    a, b = full.controlnet.state_dict(), resumed.controlnet.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    return a


def test_sdxl_union_resume_equals_uninterrupted(union_shards, tiny_sdxl, tmp_path):  # noqa: F811
    from training.families import family_class

    assert family_class("sdxl-union").controlnet_class().__name__ == "ControlNetUnionModel"
    weights = _resumed_equals_uninterrupted(
        lambda out, **kw: _union(union_shards, tiny_sdxl, out, **kw), tmp_path)  # fmt: skip
    assert weights["controlnet_mid_block.weight"].abs().sum() > 0  # trained away from zero


@pytest.mark.timeout(1800)  # four CLI processes; slow on a loaded 2-core machine
def test_sdxl_union_build_train_export_pipeline(tiny_sdxl, cli, photo_paths, tmp_path):  # noqa: F811
    """tiny SDXL -> ``hintset build`` (xinsir preset, canny + HED with random weights in the
    published layout) -> ``hintset train --union`` -> ``hintset export`` ->
    ``StableDiffusionXLControlNetUnionPipeline`` samples with ``control_mode`` from a PIL hint."""
    from diffusers import ControlNetUnionModel, StableDiffusionXLControlNetUnionPipeline
    from PIL import Image

    from tests.weights import write_hed

    write_hed(tmp_path / "weights")
    out, run, exp = tmp_path / "out", tmp_path / "run", tmp_path / "exp"
    r = cli("build", *photo_paths[:4], "-o", out, "--preset", "xinsir-union-sdxl", "-a",
            "canny,hed", "--weights-dir", tmp_path / "weights", "--resolution", "64", "-q",
            env={"HINTSET_OFFLINE": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    preset = json.loads((out / "manifest.json").read_text())["config"]["preset"]
    assert preset["slots"] == {"canny": 3, "hed": 2}
    r = cli("train", "--data", out, "--condition", "canny,hed", "--union", "--family", "sdxl",
            "--base-model", tiny_sdxl, "--output", run, "--steps", "2", "--batch-size", "2",
            "--resolution", "64", "--checkpoint-every", "2", "--validate-every", "2",
            "--num-validation", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (run / "validation" / "step-000002.png").is_file()
    r = cli("export", run / "checkpoint-2", "-o", exp, "--samples", "1")
    assert r.returncode == 0, r.stderr
    assert (exp / "diffusers" / "samples.png").is_file()
    config = json.loads((exp / "diffusers" / "config.json").read_text())
    assert config["_class_name"] == "ControlNetUnionModel" and config["num_control_type"] == 8
    assert config["_hintset_union"]["slots"] == {"canny": 3, "hed": 2}
    assert config["_hintset_union"]["slot_table"]["openpose"] == 0
    card = (exp / "diffusers" / "README.md").read_text()
    assert "StableDiffusionXLControlNetUnionPipeline" in card and "control_mode=[3]" in card
    assert "`hed` 2" in card
    model = ControlNetUnionModel.from_pretrained(exp / "diffusers")
    pipe = StableDiffusionXLControlNetUnionPipeline.from_pretrained(str(tiny_sdxl),
                                                                     controlnet=model)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    edges = np.zeros((64, 64), np.uint8)
    edges[16:48, 32] = 255
    hint = Image.fromarray(edges).convert("RGB")
    kw = dict(num_inference_steps=2, height=64, width=64, output_type="np")
    one = pipe("a photo", control_image=[hint], control_mode=[3], **kw).images
    two = pipe("a photo", control_image=[hint, hint], control_mode=[3, 2], **kw).images
    assert one.shape == two.shape == (1, 64, 64, 3) and np.isfinite(one).all()


def test_evaluate_sdxl_union(built, tiny_sdxl, tmp_path, weights_env):  # noqa: F811
    """``hintset evaluate`` runs a union ControlNet with the condition's control_mode: the slot
    its export recorded in config.json, else union.py's table (no second table in evaluation)."""
    from evaluation.generate import PIPELINES, Generator, Settings
    from evaluation.run import evaluate
    from training.families import create

    assert PIPELINES[("StableDiffusionXLPipeline", "ControlNetUnionModel")].tested
    net = create(str(tiny_sdxl), "cpu", torch.float32, "sdxl", union=True).make_controlnet(3)
    net.save_pretrained(tmp_path / "plain")
    net.register_to_config(_hintset_union={"family": "sdxl", "slots": {"canny": 6}})
    net.save_pretrained(tmp_path / "recorded")
    settings = Settings(steps=2, resolution=64, device="cpu")
    assert Generator(str(tmp_path / "plain"), str(tiny_sdxl), settings).control_mode("canny") == 3
    summary = evaluate(str(built), "canny", tmp_path / "report", model=str(tmp_path / "recorded"),
                       base=str(tiny_sdxl), limit=2, say=lambda _: None,
                       settings=settings)  # fmt: skip
    assert [(r["name"], r["counts"]["images"]) for r in summary["runs"]] == [
        ("controlnet", 2), ("no-control", 2)]  # fmt: skip
    gen = Generator(str(tmp_path / "recorded"), str(tiny_sdxl), settings)
    assert gen.family.name == "sdxl-union" and gen.control_mode("canny") == 6


def test_flux_union_resume_equals_uninterrupted(union_shards, tiny_flux, tmp_path):  # noqa: F811
    """FLUX union (``FluxControlNetModel`` with ``num_mode`` 7): resume is exact; the control
    embedder trains."""

    def config(out, **kw):
        return _union(union_shards, tiny_flux, out, family="flux", condition="canny,depth",
                      union_single=0.5, **kw)  # fmt: skip

    weights = _resumed_equals_uninterrupted(config, tmp_path)
    assert weights["controlnet_mode_embedder.weight"].shape[0] == 7
    assert weights["controlnet_x_embedder.weight"].any()  # the zero-initialised input trained


def test_flux_union_sums_each_samples_maps_like_the_multi_controlnet(tiny_flux):  # noqa: F811
    """A sample drawing two maps gets the sum of the ControlNet's outputs for each map with its
    mode (``FluxMultiControlNetModel``'s rule); one drawing one map gets that map's output."""
    from training.families.flux_union import UnionCalls

    torch.manual_seed(0)
    calls = []

    def net(controlnet_cond, controlnet_mode, hidden_states, txt_ids):
        calls.append((controlnet_mode[:, 0].tolist(), len(txt_ids)))
        out = (
            hidden_states * controlnet_cond.sum((1, 2))[:, None, None] + controlnet_mode[:, :, None]
        )
        return [out], None

    cond = torch.randn(3, 2, 4, 8)
    hidden = torch.randn(3, 4, 8)
    txt = torch.zeros(5, 3)
    blocks, singles = UnionCalls(net, [[0], [0, 1], [1]], [0, 2])(
        cond, hidden_states=hidden, txt_ids=txt)  # fmt: skip
    assert singles is None and calls == [([0, 0], 5), ([2, 2], 5)]  # txt_ids shared, not cut
    one = [net(cond[i : i + 1, k], torch.tensor([[m]]), hidden[i : i + 1], txt)[0][0]
           for i, k, m in ((0, 0, 0), (1, 0, 0), (1, 1, 2), (2, 1, 2))]  # fmt: skip
    torch.testing.assert_close(blocks[0][0], one[0][0])
    torch.testing.assert_close(blocks[0][1], one[1][0] + one[2][0])
    torch.testing.assert_close(blocks[0][2], one[3][0])


@pytest.mark.timeout(1800)  # CLI processes on a loaded 2-core machine
def test_flux_union_train_export_pipeline(built, tiny_flux, cli, tmp_path):  # noqa: F811
    """``hintset build`` (canny + depth, tiny DPT weights) -> ``hintset train --family flux
    --union`` -> ``hintset export`` -> ``FluxControlNetPipeline`` samples with ``control_mode``."""
    from diffusers import FluxControlNetModel, FluxControlNetPipeline
    from PIL import Image

    run, exp = tmp_path / "run", tmp_path / "exp"
    r = cli("train", "--data", built, "--condition", "canny,depth", "--union", "--family",
            "flux", "--base-model", tiny_flux, "--output", run, "--steps", "2", "--batch-size",
            "2", "--resolution", "64", "--checkpoint-every", "2", "--validate-every", "2",
            "--num-validation", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (run / "validation" / "step-000002.png").is_file()
    r = cli("export", run / "checkpoint-2", "-o", exp, "--samples", "1")
    assert r.returncode == 0, r.stderr
    config = json.loads((exp / "diffusers" / "config.json").read_text())
    assert config["num_mode"] == 7
    assert config["_hintset_union"]["slots"] == {"canny": 0, "depth": 2}
    card = (exp / "diffusers" / "README.md").read_text()
    assert "FluxControlNetPipeline" in card and "control_mode=0" in card
    net = FluxControlNetModel.from_pretrained(exp / "diffusers")
    pipe = FluxControlNetPipeline.from_pretrained(str(tiny_flux), controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    edges = np.zeros((64, 64), np.uint8)
    edges[16:48, 32] = 255
    kw = dict(num_inference_steps=2, height=64, width=64, output_type="np")
    hint = Image.fromarray(edges).convert("RGB")
    images = pipe("a photo", control_image=hint, control_mode=2, **kw).images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_evaluate_flux_union(built, tiny_flux, tmp_path, weights_env):  # noqa: F811
    """A FLUX ControlNet with ``num_mode`` runs in ``hintset evaluate`` with the condition's
    ``control_mode`` (InstantX's id); one without stays a plain FLUX ControlNet."""
    from evaluation.generate import Generator, Settings
    from evaluation.run import evaluate
    from training.families import create

    family = create(str(tiny_flux), "cpu", torch.float32, "flux", union=True)
    family.make_controlnet(3).save_pretrained(tmp_path / "union")
    settings = Settings(steps=2, resolution=64, device="cpu")
    summary = evaluate(str(built), "depth", tmp_path / "report", model=str(tmp_path / "union"),
                       base=str(tiny_flux), limit=1, baseline=False, say=lambda _: None,
                       settings=settings)  # fmt: skip
    assert [(r["name"], r["counts"]["images"]) for r in summary["runs"]] == [("controlnet", 1)]
    gen = Generator(str(tmp_path / "union"), str(tiny_flux), settings)
    assert gen.union == "flux" and gen.control_mode("depth") == 2
    plain = create(str(tiny_flux), "cpu", torch.float32, "flux").make_controlnet(3)
    plain.save_pretrained(tmp_path / "plain")
    assert Generator(str(tmp_path / "plain"), str(tiny_flux), settings).union == ""
