"""The loop on accelerate: 2 processes equal 1 process with twice the accumulation
(``--data-order exact``), and the data order that makes it so."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from tests.test_training import _config, shards, tiny_base  # noqa: E402,F401  (fixtures)


def _keys(ds_args: dict, monkeypatch, rank: int, world: int, batches: int, workers: int = 0):
    """Keys of the first ``batches`` batches rank ``rank`` of ``world`` gets from the loader."""
    from training.data import ShardDataset, make_loader

    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    ds = ShardDataset(**ds_args)
    it = iter(make_loader(ds, ds_args["batch_size"], workers))
    return [next(it)["key"] for _ in range(batches)]


def test_exact_order_is_the_global_stream_split_by_batch(shards, monkeypatch):  # noqa: F811
    """Rank r of w at local batch k gets global batch k * w + r, also with loader workers; the
    default shards order does not (it splits shards, so 2 ranks see other batches)."""
    args = dict(data=str(shards), conditions=["canny"], resolution=64, seed=3, shuffle_buffer=4,
                batch_size=2, order="exact")  # fmt: skip
    one = _keys(args, monkeypatch, 0, 1, 8)
    assert len({k for b in one for k in b}) > 2  # a real stream, not one repeated batch
    ranks = [_keys(args, monkeypatch, r, 2, 4) for r in range(2)]
    assert [ranks[k % 2][k // 2] for k in range(8)] == one
    assert _keys(args, monkeypatch, 0, 1, 8, workers=2) == one  # worker j keeps its own batches
    assert _keys({**args, "order": "shards"}, monkeypatch, 0, 1, 8) == one  # 1 process: same
    split = [_keys({**args, "order": "shards"}, monkeypatch, r, 2, 4) for r in range(2)]
    assert [split[k % 2][k // 2] for k in range(8)] != one


def test_two_processes_equal_one_with_twice_the_accumulation(shards, tiny_base, tmp_path):  # noqa: F811
    """``accelerate launch`` with 2 CPU processes (gloo, DDP averages the ranks' gradients) and
    grad_accum 1 ends with the weights of 1 process with grad_accum 2 (each micro-batch's loss
    divided by 2): same batches (exact order), same draws (keyed by sample), clipping acting
    (--max-grad-norm 0.1 under the gradient norm of ~0.22).

    Tolerance: the runs differ only in float32 summation order ((g0 + g1) / 2 after the
    all-reduce vs g0 / 2 + g1 / 2): losses agree to 1e-6 and grad norms to ~1e-7. Adam's
    second step divides by the root of the squared gradients, which magnifies rounding where
    the two steps' gradients nearly cancel or are tiny (the ControlNet body, reached only
    through the zero convolutions): measured largest weight difference 3.1e-7 for a largest
    update of 2.0e-4 (1.6e-3 of it; 5.0e-7 with clipping off). The bound is 1e-2 of the
    largest update. With ``--data-order shards`` (each rank its own shards, the old order)
    the difference is 4.0e-4, twice the update (measured), far outside it."""
    from safetensors.torch import load_file

    from training.trainer import Trainer

    common = dict(steps=2, batch_size=2, lr=1e-4, max_grad_norm=0.1, data_order="exact",
                  checkpoint_every=0, report_to="none")  # fmt: skip
    single = Trainer(_config(shards, tiny_base, tmp_path / "one", grad_accum=2, **common),
                     device="cpu")  # fmt: skip
    before = {k: v.detach().clone() for k, v in single.controlnet.state_dict().items()}
    single.train()
    after = single.controlnet.state_dict()
    run = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "0", "-m", "pipeline", "train", "--data", str(shards),
           "--condition", "canny", "--base-model", str(tiny_base), "--output", str(run),
           "--steps", "2", "--batch-size", "2", "--grad-accum", "1", "--lr", "1e-4",
           "--resolution", "64", "--shuffle-buffer", "4", "--max-grad-norm", "0.1",
           "--data-order", "exact", "--checkpoint-every", "0", "--report-to", "none"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    two = load_file(
        str(run / "checkpoint-2" / "controlnet" / "diffusion_pytorch_model.safetensors")
    )
    update = max(float((after[k] - before[k]).abs().max()) for k in after)
    diff = max(float((two[k] - after[k]).abs().max()) for k in after)
    print(f"largest update {update:.3e}, largest 2-vs-1-process difference {diff:.3e}")
    assert update > 1e-5  # the runs trained
    assert diff < 1e-2 * update
    logs = [[json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
            for out in (tmp_path / "one", run)]  # fmt: skip
    assert [r["loss"] for r in logs[0]] == pytest.approx([r["loss"] for r in logs[1]], rel=1e-6)
    norms = [[r["grad_norm"] for r in log] for log in logs]
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)  # the synchronised gradient's norm
    assert min(norms[0]) > 0.1  # above --max-grad-norm: clipping acted in both runs
