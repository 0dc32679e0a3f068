"""Click commands for training: tiny-base, train, export (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("tiny-base")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--prediction-type", type=click.Choice(["epsilon", "v_prediction"]), default="epsilon"
)
@click.option("--seed", type=int, default=0)
def tiny_base(folder: Path, prediction_type: str, seed: int) -> None:
    """Write a tiny random Stable Diffusion (diffusers layout) for CPU smoke runs."""
    from training.tiny_base import write_tiny_base

    write_tiny_base(folder, prediction_type=prediction_type, seed=seed)
    click.echo(f"tiny base written to {folder}")


@click.command("train")
@click.option("--data", required=True, help="build output folder (OUT) or shard URL pattern")
@click.option("--condition", required=True, help="map name(s), comma separated: canny,depth")
@click.option("--base-model", required=True, help="diffusers folder or hub id of the SD base")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="run folder")
@click.option("--steps", type=int, default=1000)
@click.option("--batch-size", type=int, default=4)
@click.option("--lr", type=float, default=1e-5)
@click.option("--resolution", type=int, default=512)
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default="no")
@click.option("--gradient-checkpointing", is_flag=True)
@click.option("--grad-accum", type=int, default=1)
@click.option("--ema", is_flag=True)
@click.option("--max-grad-norm", type=float, default=1.0)
@click.option("--seed", type=int, default=0)
@click.option("--checkpoint-every", type=int, default=500)
@click.option("--keep-checkpoints", type=int, default=3)
@click.option("--resume", default="", help='"latest" or a checkpoint folder')
@click.option("--validate-every", type=int, default=0)
@click.option(
    "--timestep-sampling",
    type=click.Choice(["uniform", "cubic"]),
    default="uniform",
    help="cubic draws more high-noise timesteps, where layout is decided (T2I-Adapter)",
)
@click.option("--loader-workers", type=int, default=0, help="DataLoader worker processes")
@click.option("--num-workers", type=int, default=0, help="Ray Train workers (0: no Ray)")
@click.option("--address", default="", help="Ray address (auto, ray://host:10001)")
@click.option("--use-gpu", is_flag=True, help="one GPU per Ray Train worker")
def train(
    output: Path, loader_workers: int, num_workers: int, address: str, use_gpu: bool, **kwargs
) -> None:
    """Train a ControlNet on hintset shards with a locked Stable Diffusion base."""
    from training.config import TrainConfig
    from training.trainer import train as run_train
    from training.trainer import train_on_ray

    config = TrainConfig(output=str(output), num_workers=loader_workers, **kwargs)
    if num_workers > 0:
        train_on_ray(config, num_workers=num_workers, use_gpu=use_gpu, address=address)
        click.echo(f"Ray Train run finished: {output}")
        return
    losses = run_train(config)  # single process, or one rank under torchrun
    if losses:
        click.echo(f"steps run: {len(losses)}  first loss {losses[0]:.4f}  last {losses[-1]:.4f}")


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
@click.option("--fp16", is_flag=True, help="store weights as float16")
@click.option("--ema", is_flag=True, help="export the EMA weights when the run kept them")
def export(checkpoint: Path, output: Path, fp16: bool, ema: bool) -> None:
    """Export RUN/checkpoint-N: a diffusers folder and an original-layout .safetensors file."""
    from training.export import export as run_export

    done = run_export(checkpoint, output, fp16=fp16, ema=ema)
    click.echo(f"diffusers folder: {done['diffusers']}")
    click.echo(f"single file: {done['single_file']} ({done['tensors']} tensors)")
