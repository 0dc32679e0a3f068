"""hintset train's options: TrainConfig is their single source (help, defaults, --config file),
and the training state on disk loads without running code (#13 case 15)."""

from __future__ import annotations

import pickle
from dataclasses import fields
from pathlib import Path

import pytest

pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")

from tests.test_training import _config, shards, tiny_base  # noqa: E402,F401  (fixtures)


def _invoke(*args: str):
    from click.testing import CliRunner

    from training.cli import train

    return CliRunner().invoke(train, [*map(str, args)], catch_exceptions=False)


def _other_value(f):
    """A valid value different from the field's default."""
    if f.metadata["choices"]:
        return next(c for c in f.metadata["choices"] if c != f.default)
    if isinstance(f.default, bool):
        return not f.default
    if isinstance(f.default, int):
        return f.default + 3
    if isinstance(f.default, float):
        return f.default * 2 + 0.25
    return "tensorboard,wandb" if f.name == "report_to" else f"value-of-{f.name}"


def test_every_config_field_is_reachable_from_the_cli(monkeypatch):
    from training.config import TrainConfig

    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())  # "wandb" there
    args, expected = [], {}
    for f in fields(TrainConfig):
        value = _other_value(f)
        expected[f.name] = value
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    expected["validation_data"] = ""  # not both validation sources at once
    args[args.index("--validation-data") + 1] = ""
    expected["stack_conditions"] = False  # not --union and --stack-conditions at once
    args[args.index("--stack-conditions")] = "--no-stack-conditions"
    expected["union_single"] = 0.25  # a share, in [0, 1]
    args[args.index("--union-single") + 1] = "0.25"
    expected["cache"] = ""  # not --cache with --union (the cache holds no per-step map subsets)
    args[args.index("--cache") + 1] = ""
    result = _invoke(*args, "--print-config")
    assert result.exit_code == 0, result.output
    got = yaml.safe_load(result.output)
    assert got == expected
    assert set(got) == {f.name for f in fields(TrainConfig)}


def test_config_file_with_command_line_override(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(
        "data: OUT\ncondition: canny\nbase-model: base/\noutput: RUN\nsteps: 50\nlr: 2e-4\n"
        "num_workers: 2\nema: true\n"  # old name of loader_workers still read
    )
    result = _invoke("--config", run, "--steps", "7", "--print-config")
    assert result.exit_code == 0, result.output
    got = yaml.safe_load(result.output)
    assert got["steps"] == 7  # the command line wins
    assert got["lr"] == 2e-4 and got["ema"] is True and got["loader_workers"] == 2
    assert got["base_model"] == "base/" and got["batch_size"] == 4  # file, then default
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: OUT\nstepz: 3\n")
    result = _invoke("--config", bad, "--print-config")
    assert result.exit_code == 2 and "unknown option(s) in config: stepz" in result.output
    result = _invoke("--data", "OUT", "--print-config")
    assert result.exit_code == 2 and "missing --condition, --base-model, --output" in result.output


def test_wandb_missing_is_one_clear_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    result = _invoke("--data", "D", "--condition", "canny", "--base-model", "B", "--output", "R",
                     "--report-to", "wandb", "--print-config")  # fmt: skip
    assert result.exit_code == 2
    assert "--report-to wandb needs the wandb package: pip install wandb" in result.output


def test_help_texts_and_defaults(cli):
    from training.config import TrainConfig

    train_help = cli("train", "--help").stdout
    for f in fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in train_help, f.name
        assert f.metadata["help"], f.name
    assert "[default: 1000]" in train_help and "[default: tensorboard]" in train_help
    assert "--loader-workers" in train_help and "--ray-workers" in train_help
    assert "--num-workers" not in train_help
    tiny_help = cli("tiny-base", "--help").stdout
    assert "--sdxl" in tiny_help and "[default: epsilon]" in tiny_help
    assert "--family [sd15|sdxl|sd3|flux]" in tiny_help
    assert "seed of the random weights" in tiny_help


def test_state_roundtrip_without_pickle(tmp_path):
    import random

    import numpy as np
    import torch

    from training.state import load_state, save_state
    from training.trainer import _rng_state, _set_rng_state

    state = {"step": 3, "opt": {0: {"exp_avg": torch.ones(2)}}, "groups": [{"lr": 1e-4}],
             "t": (1, 2.5, None), "rng": _rng_state()}  # fmt: skip
    save_state(tmp_path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "training_state.json", "training_state.safetensors"]  # fmt: skip
    back = load_state(tmp_path)
    assert back["opt"][0]["exp_avg"].tolist() == [1.0, 1.0] and back["t"] == (1, 2.5, None)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    _set_rng_state(back["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


class _CreatesFile:
    """Unpickling this opens (creates) a file: what a crafted checkpoint could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_crafted_pickle_state_is_refused_without_running(shards, tiny_base, tmp_path, cli):  # noqa: F811
    """#13 case 15: --resume latest with a crafted training_state.pt must not run its code."""
    from training.trainer import Trainer

    run, marker = tmp_path / "run", tmp_path / "pwned"
    Trainer(_config(shards, tiny_base, run, steps=1, checkpoint_every=1), device="cpu").train()
    ckpt = run / "checkpoint-1"
    for name in ("training_state.json", "training_state.safetensors"):
        (ckpt / name).unlink()
    (ckpt / "training_state.pt").write_bytes(pickle.dumps({"state": _CreatesFile(marker)}))
    r = cli("train", "--data", shards, "--condition", "canny", "--base-model", tiny_base,
            "--output", run, "--steps", "2", "--batch-size", "2", "--resolution", "64",
            "--resume", "latest")  # fmt: skip
    assert r.returncode == 1
    assert not marker.exists()
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ") and "pickled training state refused" in lines[-1]
    assert "Traceback" not in r.stderr
    pickle.loads((ckpt / "training_state.pt").read_bytes())  # the crafted file really would
    assert marker.exists()


def test_gpu_smoke_skips_cleanly_without_a_gpu():
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the smoke run would really run")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_smoke.py")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["gpu_smoke: skipped (no CUDA GPU)"]


def test_tiny_base_family_option(tmp_path):
    """``tiny-base --family sdxl`` and the old ``--sdxl`` write a base read back as SDXL."""
    from click.testing import CliRunner

    from training.cli import tiny_base as command
    from training.families import detect

    for args in (["--family", "sdxl"], ["--sdxl"]):
        folder = tmp_path / args[-1].lstrip("-")
        result = CliRunner().invoke(command, [*args, str(folder)], catch_exceptions=False)
        assert result.exit_code == 0 and "tiny sdxl base" in result.output
        assert detect(str(folder)) == "sdxl"
    result = CliRunner().invoke(command, [str(tmp_path / "sd")], catch_exceptions=False)
    assert result.exit_code == 0 and detect(str(tmp_path / "sd")) == "sd15"
