"""Click commands for training: tiny-base, train, export (heavy imports inside)."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import click

from training.tiny_base import TINY


def _config_options(func):
    """One click option per TrainConfig field (help text, default, choices from the field)."""
    from training.config import TrainConfig

    for f in reversed(fields(TrainConfig)):
        flag = "--" + f.name.replace("_", "-")
        extra = {"default": f.default, "show_default": True, "help": f.metadata["help"]}
        if isinstance(f.default, bool):
            decl = [f"{flag}/--no-{flag[2:]}"]
        else:
            decl = [flag]
            extra["type"] = (
                click.Choice(f.metadata["choices"]) if f.metadata["choices"] else type(f.default)
            )
            if f.default == "":
                extra["show_default"] = False
        func = click.option(*decl, f.name, **extra)(func)
    return func


def resolve_config(ctx: click.Context, file: Path | None, values: dict):
    """TrainConfig from defaults, then the ``--config`` file, then options given on the command line."""
    from click.core import ParameterSource

    from training.config import TrainConfig

    merged = dict(values)
    if file is not None:
        merged.update(TrainConfig.from_file(file))
    for name, value in values.items():
        if ctx.get_parameter_source(name) in (
            ParameterSource.COMMANDLINE,
            ParameterSource.ENVIRONMENT,
        ):
            merged[name] = value
    config = TrainConfig.from_dict(merged)
    config.check()
    return config


@click.command("tiny-base")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--prediction-type",
    type=click.Choice(["epsilon", "v_prediction"]),
    default="epsilon",
    show_default=True,
    help="what the U-Net predicts (SD 1.5: epsilon; SD 2.x 768: v_prediction)",
)
@click.option(
    "--family",
    type=click.Choice(list(TINY)),
    default="sd15",
    show_default=True,
    help="model family of the base (training/families)",
)
@click.option("--sdxl", is_flag=True, help="the same as --family sdxl (two text encoders)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the random weights")
def tiny_base(folder: Path, prediction_type: str, family: str, sdxl: bool, seed: int) -> None:
    """Write a tiny random base of a model family (diffusers layout) for CPU smoke runs."""
    family = "sdxl" if sdxl else family
    TINY[family](folder, prediction_type=prediction_type, seed=seed)
    click.echo(f"tiny {family} base written to {folder}")


@click.command("train")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML (or JSON) file of options; options given on the command line override it",
)
@click.option("--print-config", is_flag=True, help="print the resolved options as YAML and exit")
@_config_options
@click.pass_context
def train(ctx: click.Context, config_file: Path | None, print_config: bool, **values) -> None:
    """Train a ControlNet on hintset shards with a locked base: SD 1.x/2.x, SDXL, SD3 or FLUX.1."""
    try:
        config = resolve_config(ctx, config_file, values)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if print_config:
        import yaml

        click.echo(yaml.safe_dump(asdict(config), sort_keys=False), nl=False)
        return
    from training.trainer import train as run_train
    from training.trainer import train_on_ray

    try:
        if config.ray_workers > 0:
            train_on_ray(config)
            click.echo(f"Ray Train run finished: {config.output}")
            return
        losses = run_train(config)  # single process, or one rank under torchrun
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if losses:
        click.echo(f"steps run: {len(losses)}  first loss {losses[0]:.4f}  last {losses[-1]:.4f}")


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="export folder"
)
@click.option("--fp16", is_flag=True, help="store weights as float16")
@click.option("--ema", is_flag=True, help="export the EMA weights when the run kept them")
@click.option(
    "--samples",
    type=int,
    default=2,
    show_default=True,
    help="validation samples rendered into the model card's grid (0: none)",
)
@click.option(
    "--nonstandard-single-file",
    is_flag=True,
    help="write the single file even for a ControlNet AUTOMATIC1111/ComfyUI cannot rebuild "
    "(tiny bases); it then loads only with diffusers' from_single_file(config=...)",
)
@click.option(
    "--evaluation",
    type=click.Path(path_type=Path),
    help="a `hintset evaluate` report (folder or summary.json) whose table goes into the card",
)
def export(
    checkpoint: Path,
    output: Path,
    fp16: bool,
    ema: bool,
    samples: int,
    nonstandard_single_file: bool,
    evaluation: Path | None,
) -> None:
    """Export RUN/checkpoint-N: a diffusers folder with a model card, and one .safetensors
    (original ControlNet layout for SD 1.x/2.x, diffusers layout for SDXL) with metadata."""
    from training.export import export as run_export

    done = run_export(checkpoint, output, fp16=fp16, ema=ema, samples=samples,
                      nonstandard_single_file=nonstandard_single_file,
                      evaluation=evaluation)  # fmt: skip
    click.echo(f"diffusers folder: {done['diffusers']} (model card README.md)")
    if done["single_file"]:
        click.echo(f"single file: {done['single_file']} ({done['tensors']} tensors, "
                   f"{done['metadata']['hintset.layout']} keys)")  # fmt: skip


@click.command("cache")
@click.option("--data", required=True, help="build output folder (OUT) or shard URL pattern")
@click.option("--base-model", required=True, help="diffusers folder or hub id of the base")
@click.option("--condition", required=True, help="map name(s), as for hintset train")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="cache folder")
@click.option("--resolution", type=int, default=512, show_default=True, help="training size")
@click.option(
    "--family",
    type=click.Choice(["auto", "sd15", "sdxl", "sd3", "flux"]),
    default="auto",
    show_default=True,
)
@click.option("--stack-conditions", is_flag=True, help="as for hintset train")
@click.option(
    "--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default="no",
    show_default=True, help="dtype of the encoders and of the stored tensors (the run's)",
)  # fmt: skip
@click.option(
    "--validation-shards", type=int, default=0, show_default=True,
    help="the last N shards are held out (not cached), as for hintset train",
)  # fmt: skip
@click.option("--batch-size", type=int, default=8, show_default=True, help="samples per encode")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1")
def cache(data, base_model, condition, output, resolution, family, stack_conditions,
          mixed_precision, validation_shards, batch_size, device) -> None:  # fmt: skip
    """Encode every sample once (VAE latent mean/std of the image, the control input, the text
    encoders' output) into a cache folder for ``hintset train --cache``.

    Random crops and flips cannot be cached: each sample is stored as its centre square at
    --resolution, unflipped. Rerunning completes a partial cache; a cache made with another
    base (encoder weights), resolution, maps, precision or crop rule is refused."""
    import torch

    from training import families
    from training.cache import Cache, fill
    from training.config import TrainConfig
    from training.data import shard_urls, split_validation
    from training.trainer import DTYPES

    config = TrainConfig(data=data, base_model=base_model, condition=condition, output="-",
                         resolution=resolution, family=family, stack_conditions=stack_conditions,
                         mixed_precision=mixed_precision, validation_shards=validation_shards,
                         cache=str(output))  # fmt: skip
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, DTYPES[mixed_precision])
    try:
        name = families.detect(base_model) if family == "auto" else family
        store = Cache(output, config, name)
        urls, _ = split_validation(shard_urls(data), validation_shards)
        made = fill(store, lambda: families.create(base_model, device, dtype, name), urls, [""],
                    batch_size=batch_size, log=click.echo)  # fmt: skip
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"cache {output}: {len(urls)} shards ({made} samples encoded now), "
               f"fingerprint {store.fingerprint[:12]}")  # fmt: skip
