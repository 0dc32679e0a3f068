"""ControlNet training on a tiny random SD base (CPU): zero init, locking, overfit, resume, export."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    from training.tiny_base import write_tiny_base

    return write_tiny_base(tmp_path_factory.mktemp("base") / "sd", seed=0)


@pytest.fixture(scope="session")
def shards(tmp_path_factory, photo_paths) -> Path:
    """A build folder in the GUIDE layout made by hand: 2 shards, one failed key, one map missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds
    from PIL import Image

    import annotators

    out = tmp_path_factory.mktemp("built")
    (out / "shards").mkdir()
    (out / "index").mkdir()
    canny = annotators.create("canny")
    photos = photo_paths[:10]
    for shard in range(2):
        rows = []
        with wds.TarWriter(str(out / "shards" / f"{shard:05d}.tar")) as sink:
            for i, p in enumerate(photos[shard * 5 : shard * 5 + 5]):
                key = f"{shard:05d}{i:04d}"
                img = Image.open(p).convert("RGB").resize((80, 64))
                arr = np.asarray(img)
                edges = canny(arr)
                jpg, png = io.BytesIO(), io.BytesIO()
                img.save(jpg, "JPEG")
                Image.fromarray(edges).save(png, "PNG")
                sample = {"__key__": key, "jpg": jpg.getvalue(), "txt": f"a photo {i}".encode()}
                sample["json"] = json.dumps({"key": key}).encode()
                if not (shard == 1 and i == 4):  # one sample without its map
                    sample["canny.png"] = png.getvalue()
                    seg = io.BytesIO()  # a 3-channel map, to stack with canny
                    img.quantize(4).convert("RGB").save(seg, "PNG")
                    sample["seg.png"] = seg.getvalue()
                sink.write(sample)
                rows.append({"key": key, "status": "failed" if (shard, i) == (0, 0) else "ok"})
        pq.write_table(pa.Table.from_pylist(rows), out / "index" / f"{shard:05d}.parquet")
    return out


def _config(shards, base, out, **kw):
    from training.config import TrainConfig

    args = dict(
        data=str(shards),
        condition="canny",
        base_model=str(base),
        output=str(out),
        steps=2,
        batch_size=2,
        lr=1e-4,
        resolution=64,
        checkpoint_every=0,
        shuffle_buffer=4,
        max_grad_norm=0.0,
    )
    args.update(kw)
    return TrainConfig(**args)


def test_config_json_roundtrip(tmp_path):
    from training.config import TrainConfig

    c = _config("d", "b", tmp_path, ema=True, condition="canny,depth")
    assert TrainConfig.from_json(c.to_json()) == c
    assert c.conditions == ["canny", "depth"]


def test_data_skips_and_ranges(shards):
    from training.data import ShardDataset

    ds = ShardDataset(str(shards), ["canny"], 64, seed=1, shuffle_buffer=2)
    it = iter(ds)
    got = [next(it) for _ in range(16)]
    keys = {s["key"] for s in got}
    assert "000000000" not in keys and "000010004" not in keys  # failed status, missing map
    assert ds.skipped["status"] >= 1 and ds.skipped["missing_map"] >= 1
    s = got[0]
    # one 1-channel map repeated to RGB, as ControlNet 1.0/1.1 prepare hints
    assert s["pixel_values"].shape == (3, 64, 64) and s["conditioning"].shape == (3, 64, 64)
    assert np.array_equal(s["conditioning"][0], s["conditioning"][1])
    assert np.array_equal(s["conditioning"][0], s["conditioning"][2])
    assert s["pixel_values"].min() >= -1 and s["pixel_values"].max() <= 1
    assert 0 <= s["conditioning"].min() and s["conditioning"].max() <= 1
    again = iter(ShardDataset(str(shards), ["canny"], 64, seed=1, shuffle_buffer=2))
    assert [next(again)["key"] for _ in range(16)] == [g["key"] for g in got]


def test_timestep_sampling():
    """cubic favours high noise (mean 0.75 T against 0.5 T), both stay in [0, T)."""
    from training.families.sd15 import sample_timesteps

    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    uniform = sample_timesteps("uniform", 1000, u).float()
    cubic = sample_timesteps("cubic", 1000, u).float()
    for t in (uniform, cubic):
        assert 0 <= t.min() and t.max() <= 999
    assert abs(uniform.mean() - 500) < 15 and abs(cubic.mean() - 750) < 15
    with pytest.raises(ValueError, match="unknown timestep sampling"):
        sample_timesteps("log", 1000, u[:4])


def test_draws_follow_the_sample_not_its_position():
    """A sample's draws depend on (seed, step, key) only: the same in any batch, at any position,
    on any rank; another step, seed or key draws differently; a repeated key gets its own."""
    from training.draws import Draws

    a = Draws(0, 3, ["x", "y"]).randn((2, 2))
    b = Draws(0, 3, ["y", "z", "x"]).randn((2, 2))
    assert torch.equal(a[0], b[2]) and torch.equal(a[1], b[0])
    assert not torch.equal(a[0], Draws(0, 4, ["x"]).randn((2, 2))[0])
    assert not torch.equal(a[0], Draws(1, 3, ["x"]).randn((2, 2))[0])
    twice = Draws(0, 3, ["x", "x"]).randn((2, 2))
    assert torch.equal(twice[0], a[0]) and not torch.equal(twice[1], twice[0])


def test_stacked_conditions_train(shards, tiny_base, tmp_path):
    """canny (1 channel) + seg (3 channels) stack in order to a 4-channel ControlNet input."""
    from training.data import ShardDataset
    from training.trainer import Trainer

    with pytest.raises(ValueError, match="--stack-conditions"):
        ShardDataset(str(shards), ["canny", "seg"], 64)
    both = next(iter(ShardDataset(str(shards), ["canny", "seg"], 64, seed=3, shuffle_buffer=1,
                                  stack=True)))  # fmt: skip
    seg = next(iter(ShardDataset(str(shards), ["seg"], 64, seed=3, shuffle_buffer=1)))
    assert both["key"] == seg["key"] and both["conditioning"].shape == (4, 64, 64)
    np.testing.assert_array_equal(both["conditioning"][1:], seg["conditioning"])
    assert set(np.unique(both["conditioning"][0])) <= {0.0, 1.0}  # canny stays binary
    cfg = _config(shards, tiny_base, tmp_path / "run", condition="canny,seg", stack_conditions=True)
    t = Trainer(cfg, device="cpu")
    assert t.controlnet.config.conditioning_channels == 4
    losses = t.train()
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_ranks_get_endless_distinct_streams(shards, monkeypatch):
    """More ranks than shards: resampling gives every rank an endless stream (no rank starves)."""
    import threading

    from training.data import ShardDataset

    streams: dict[int, list[str]] = {}

    def take(rank: int) -> None:
        ds = ShardDataset(str(shards), ["canny"], 64, seed=0, shuffle_buffer=2)
        it = iter(ds)
        streams[rank] = [next(it)["key"] for _ in range(24)]

    monkeypatch.setenv("WORLD_SIZE", "3")
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        thread = threading.Thread(target=take, args=(rank,), daemon=True)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive(), f"rank {rank} of 3 hangs with 2 shards"
    assert len(streams) == 3 and all(len(s) == 24 for s in streams.values())
    assert len({tuple(s) for s in streams.values()}) == 3  # ranks draw different samples


def test_zero_init_output_unchanged(shards, tiny_base, tmp_path):
    from training.trainer import Trainer

    t = Trainer(_config(shards, tiny_base, tmp_path / "run"), device="cpu")
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 16, 32, generator=g)
    cond = torch.rand(2, 3, 64, 64, generator=g)
    ts = torch.tensor([10, 500])
    with torch.no_grad():
        down, mid = t.controlnet(latents, ts, text, controlnet_cond=cond, return_dict=False)
        plain = t.family.unet(latents, ts, text).sample
        ctrl = t.family.unet(
            latents,
            ts,
            text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
    assert torch.equal(plain, ctrl)


def test_locked_unchanged_zero_convs_trained(shards, tiny_base, tmp_path):
    from training.trainer import Trainer

    t = Trainer(_config(shards, tiny_base, tmp_path / "run", steps=2), device="cpu")
    locked = {
        f"{n}.{k}": v.detach().clone()
        for n, m in t.family.locked().items()
        for k, v in m.state_dict().items()
    }
    zero = {
        k: v.detach().clone()
        for k, v in t.controlnet.named_parameters()
        if "controlnet_down_blocks" in k or "controlnet_mid_block" in k
    }
    assert all(float(v.abs().sum()) == 0 for v in zero.values() if v.ndim == 4)
    t.train()
    for n, m in t.family.locked().items():
        assert not any(p.requires_grad for p in m.parameters())
        for k, v in m.state_dict().items():
            assert torch.equal(v, locked[f"{n}.{k}"]), k
    params = dict(t.controlnet.named_parameters())
    for k, before in zero.items():
        assert not torch.equal(params[k].detach(), before), k
        assert params[k].grad is not None and float(params[k].grad.abs().sum()) > 0, k


def test_overfit_eight_samples_loss_falls(shards, tiny_base, tmp_path):
    """The fixture holds exactly 8 usable samples; the ControlNet must fit them."""
    from training.data import collate, read_samples
    from training.trainer import Trainer

    cfg = _config(shards, tiny_base, tmp_path / "run", steps=40, batch_size=8, lr=1e-3)
    cfg.prompt_dropout = 0.0
    t = Trainer(cfg, device="cpu")
    batch = collate(read_samples(str(shards), ["canny"], 64, 8))
    assert len(batch["key"]) == 8

    def fixed_loss() -> float:  # same noise and timesteps every time
        state = torch.get_rng_state()
        torch.manual_seed(123)
        with torch.no_grad():
            value = float(sum(t.loss(batch) for _ in range(4)) / 4)
        torch.set_rng_state(state)
        return value

    before = fixed_loss()
    losses = t.train()
    after = fixed_loss()
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(
        f"overfit 8 samples: fixed-noise loss {before:.4f} -> {after:.4f}; "
        f"train loss first5 {first:.4f} last5 {last:.4f}"
    )
    assert after < 0.75 * before  # measured 1.09 -> 0.69 in 40 steps
    assert last < first


def test_resume_equals_uninterrupted(shards, tiny_base, tmp_path):
    from training.trainer import Trainer, checkpoints

    full = Trainer(_config(shards, tiny_base, tmp_path / "full", steps=4), device="cpu")
    full_losses = full.train()
    half = _config(shards, tiny_base, tmp_path / "half", steps=2, checkpoint_every=2)
    Trainer(half, device="cpu").train()
    half.steps, half.resume = 4, "latest"
    resumed = Trainer(half, device="cpu")
    rest = resumed.train()
    log = [
        json.loads(x)["loss"] for x in (tmp_path / "half" / "log.jsonl").read_text().splitlines()
    ]
    np.testing.assert_allclose(log, full_losses, rtol=1e-5, atol=1e-6)
    assert len(rest) == 2
    a, b = full.controlnet.state_dict(), resumed.controlnet.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert [p.name for p in checkpoints(tmp_path / "half")][-1] == "checkpoint-4"


def test_grad_clipping_limits_the_update_and_logs_the_norm(shards, tiny_base, tmp_path):
    """#21.15: a tiny --max-grad-norm changes the weights far less than no clipping, and
    log.jsonl records the real (pre-clipping) gradient norm, not 0."""
    from training.trainer import Trainer

    moved, norms = {}, {}
    for name, limit in [("free", 0.0), ("clipped", 1e-9)]:
        t = Trainer(_config(shards, tiny_base, tmp_path / name, steps=1, max_grad_norm=limit),
                    device="cpu")  # fmt: skip
        before = {k: v.detach().clone() for k, v in t.controlnet.named_parameters()}
        t.train()
        moved[name] = sum(float((p.detach() - before[k]).abs().sum())
                          for k, p in t.controlnet.named_parameters())  # fmt: skip
        log = (tmp_path / name / "log.jsonl").read_text().splitlines()
        norms[name] = json.loads(log[0])["grad_norm"]
    assert norms["free"] > 0 and norms["clipped"] > 0
    assert norms["clipped"] == pytest.approx(norms["free"], rel=1e-4)  # same data, same grads
    assert moved["clipped"] < 0.2 * moved["free"], moved


def test_resume_refuses_a_changed_run_defining_option(shards, tiny_base, tmp_path):
    """#21.17: --resume with another condition, resolution or base is refused, naming the
    option; steps, batch size and learning rate may change."""
    import shutil

    from training.config import RUN_DEFINING
    from training.trainer import Trainer

    run = tmp_path / "run"
    Trainer(_config(shards, tiny_base, run, steps=1, checkpoint_every=1), device="cpu").train()
    other_base = tmp_path / "other-base"
    shutil.copytree(tiny_base, other_base)
    assert {"base_model", "condition", "resolution"} <= set(RUN_DEFINING)
    for change, named in [({"condition": "seg"}, "--condition 'canny' -> 'seg'"),
                          ({"resolution": 32}, "--resolution 64 -> 32"),
                          ({"base_model": str(other_base)}, "--base-model")]:  # fmt: skip
        cfg = _config(shards, tiny_base, run, steps=2, resume="latest", **change)
        with pytest.raises(ValueError, match="--resume checkpoint-1: ") as err:
            Trainer(cfg, device="cpu").train()
        assert named in str(err.value) and "start a new --output" in str(err.value)
        assert len(str(err.value).splitlines()) == 1
    same = str(tiny_base) + "/."  # another spelling of the same folder is the same base
    cfg = _config(shards, tiny_base, run, steps=2, resume="latest", batch_size=1, lr=3e-4,
                  base_model=same)  # fmt: skip
    assert len(Trainer(cfg, device="cpu").train()) == 1


@pytest.fixture(scope="session")
def bad_shard(tmp_path_factory, photo_paths) -> Path:
    """One real shard (TarWriter) of 10 samples: the first has a truncated JPEG, the second a
    caption that is not UTF-8; no index, so nothing filters them out before decoding."""
    import webdataset as wds
    from PIL import Image

    import annotators

    out = tmp_path_factory.mktemp("bad") / "shard.tar"
    canny = annotators.create("canny")
    with wds.TarWriter(str(out)) as sink:
        for i, p in enumerate(photo_paths[:10]):
            img = Image.open(p).convert("RGB").resize((80, 64))
            jpg, png = io.BytesIO(), io.BytesIO()
            img.save(jpg, "JPEG")
            Image.fromarray(canny(np.asarray(img))).save(png, "PNG")
            image = jpg.getvalue()[: len(jpg.getvalue()) // 2] if i == 0 else jpg.getvalue()
            caption = b"caf\xe9 \xff" if i == 1 else f"a photo {i}".encode()
            sink.write({"__key__": f"s{i:03d}", "jpg": image, "txt": caption,
                        "canny.png": png.getvalue()})  # fmt: skip
    return out


def test_bad_samples_are_skipped_and_counted(bad_shard, tiny_base, tmp_path):
    """#21.16: a corrupt JPEG and a non-UTF-8 caption skip their samples; the run goes on and
    log.jsonl (and TensorBoard) count them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from training.trainer import Trainer

    cfg = _config(str(bad_shard), tiny_base, tmp_path / "run", shuffle_buffer=32,
                  max_bad_fraction=0.5)  # fmt: skip
    losses = Trainer(cfg, device="cpu").train()
    assert len(losses) == 2 and all(np.isfinite(losses))
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["bad_samples"] >= 2  # both bad samples, once per pass over the shard
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert "train/bad_samples" in events.Tags()["scalars"]


def test_too_many_bad_samples_stop_with_one_line(bad_shard, tiny_base, tmp_path, cli):
    """#21.16: 2 bad of every 10 is over the default --max-bad-fraction 0.05: one line, exit 1."""
    r = cli("train", "--data", bad_shard, "--condition", "canny", "--base-model", tiny_base,
            "--output", tmp_path / "run", "--steps", "2", "--batch-size", "2",
            "--resolution", "64", "--shuffle-buffer", "32")  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and "more than --max-bad-fraction 0.05" in lines[-1]
    assert sum("skipped bad sample" in line for line in lines) == 2  # once per key
    assert any("s000: OSError" in line for line in lines)
    assert any("s001: UnicodeDecodeError" in line for line in lines)


@pytest.fixture(scope="session")
def trained_checkpoint(shards, tiny_base, tmp_path_factory) -> Path:
    from training.trainer import Trainer

    run = tmp_path_factory.mktemp("run")
    Trainer(_config(shards, tiny_base, run, steps=2, checkpoint_every=2), device="cpu").train()
    return run / "checkpoint-2"


def test_export_folder_runs_in_pipeline_and_single_file_roundtrips(
    trained_checkpoint, tiny_base, tmp_path
):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from training.export import export

    done = export(trained_checkpoint, tmp_path / "exp", nonstandard_single_file=True)
    keys = set(__import__("safetensors.torch").torch.load_file(str(done["single_file"])))
    for part in ["input_hint_block.14.", "zero_convs.0.0.", "middle_block_out.0.", "time_embed.0."]:
        assert any(k.startswith("control_model." + part) for k in keys), part
    folder = ControlNetModel.from_pretrained(done["diffusers"])
    single = ControlNetModel.from_single_file(
        str(done["single_file"]), config=str(done["diffusers"]), local_files_only=True
    )
    a, b = folder.state_dict(), single.state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(float(v.abs().sum()) > 0 for k, v in a.items() if "controlnet_down_blocks" in k)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        str(tiny_base), controlnet=folder, safety_checker=None, requires_safety_checker=False
    )
    # an edge map repeated to 3 channels, as a tensor in [0, 1] (PIL: test_training_export.py)
    cond = (torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.8).float()
    cond = cond.repeat(1, 3, 1, 1)
    out = pipe(
        "a photo",
        image=cond,
        num_inference_steps=2,
        height=64,
        width=64,
        output_type="np",
    ).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_cli_build_train_export(cli, photos_dir, tmp_path):
    from pipeline import cli as hcli

    if "build" not in hcli.COMMANDS:
        pytest.skip("hintset build not merged yet")
    out, run, exp = tmp_path / "out", tmp_path / "run", tmp_path / "exp"
    base = tmp_path / "base"
    photos = sorted(photos_dir.glob("*.jpg"))[:8]
    r = cli(
        "build",
        *photos,
        "-o",
        out,
        "--annotators",
        "canny",
        "--resolution",
        "64",
        "--shard-size",
        "8",
    )
    assert r.returncode == 0, r.stderr
    assert cli("tiny-base", base).returncode == 0
    r = cli(
        "train",
        "--data",
        out,
        "--condition",
        "canny",
        "--base-model",
        base,
        "--output",
        run,
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--resolution",
        "64",
        "--checkpoint-every",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    r = cli("export", run / "checkpoint-2", "-o", exp, "--nonstandard-single-file")
    assert r.returncode == 0, r.stderr
    assert (exp / "diffusers" / "config.json").exists()
    assert (exp / "controlnet-checkpoint-2.safetensors").stat().st_size > 0


def test_validation_held_out_labelled_and_tensorboard(shards, tiny_base, tmp_path):
    """--validation-shards 1: validation samples come only from the held-out shard, training
    never sees it; the grid is labelled; TensorBoard gets the scalars and the grid image."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from training.trainer import Trainer

    cfg = _config(shards, tiny_base, tmp_path / "run", steps=2, validate_every=2,
                  validation_shards=1, num_validation=2)  # fmt: skip
    t = Trainer(cfg, device="cpu")
    t.train()
    info = json.loads((tmp_path / "run" / "validation" / "step-000002.json").read_text())
    held = {s["key"] for s in info["samples"]}
    assert info["held_out"] and len(held) == 2 and all(k.startswith("00001") for k in held)
    stream = iter(t.dataset)
    trained = {next(stream)["key"] for _ in range(24)}
    assert trained and not trained & held
    assert all(k.startswith("00000") for k in trained)
    grid = np.asarray(Image.open(tmp_path / "run" / "validation" / "step-000002.png"))
    assert grid.shape == (3 * 12 + 2 * 64, 3 * 64, 3)  # header + a caption strip per row
    assert grid[:12].min() < 128  # the header has text in it
    assert grid[24:88, 64:128].std() > 0  # generated column is an image, not blank
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s"} <= scalars
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert events.Tags()["images"] == ["validation"]


def _train_two_steps_in_a_process(launcher: list[str], shards, tiny_base, run, *extra: str):
    """Run ``LAUNCHER hintset train`` for 2 steps; check its log and checkpoint."""
    import subprocess

    cmd = [*launcher, "-m", "pipeline", "train", "--data", str(shards), "--condition", "canny",
           "--base-model", str(tiny_base), "--output", str(run), "--steps", "2",
           "--batch-size", "2", "--resolution", "64", "--checkpoint-every", "0", *extra]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) for r in log)
    assert all(r["processes"] == 2 for r in log)  # one process group, not two lone runs
    assert (run / "checkpoint-2" / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()


def test_torchrun_two_ranks(shards, tiny_base, tmp_path):
    """DDP on 2 CPU ranks (gloo) through torchrun: both ranks step, rank 0 logs the mean loss."""
    import sys

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2"]  # fmt: skip
    _train_two_steps_in_a_process(torchrun, shards, tiny_base, tmp_path / "run")


def test_accelerate_launch_two_processes(shards, tiny_base, tmp_path):
    """The same loop under ``accelerate launch`` with 2 CPU processes: one gloo process group."""
    import sys

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", "0"]  # fmt: skip
    _train_two_steps_in_a_process(launch, shards, tiny_base, tmp_path / "run")


def test_pretrain_base_learns_and_saves(shards, tiny_base, tmp_path):
    """The demo's base pretraining: VAE reconstruction improves, the result loads as SD."""
    from diffusers import StableDiffusionPipeline

    from training.pretrain import pretrain_base

    out = tmp_path / "pretrained"
    done = pretrain_base(str(shards), str(tiny_base), out, resolution=64, vae_steps=40,
                         unet_steps=3, lr=2e-3)  # fmt: skip
    vae = done["vae_losses"]
    print(f"VAE loss {np.mean(vae[:5]):.4f} -> {np.mean(vae[-5:]):.4f}")
    assert np.mean(vae[-5:]) < 0.7 * np.mean(vae[:5])
    assert len(done["unet_losses"]) == 3 and all(np.isfinite(done["unet_losses"]))
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    assert pipe.vae.config.scaling_factor == pytest.approx(done["scaling_factor"])
    before = StableDiffusionPipeline.from_pretrained(tiny_base, safety_checker=None)
    key = "conv_in.weight"
    assert not torch.equal(pipe.unet.state_dict()[key], before.unet.state_dict()[key])


def test_ray_train_two_workers(shards, tiny_base, tmp_path):
    """The same loop on Ray Train (TorchTrainer, 2 CPU workers, DDP on gloo), own local Ray."""
    import sys

    _train_two_steps_in_a_process([sys.executable], shards, tiny_base, tmp_path / "run",
                                  "--ray-workers", "2")  # fmt: skip
