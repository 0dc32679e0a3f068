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
