"""``hintset evaluate``: the click command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pipeline.commands.options import weights_dir_option

#: packages generation mode needs (score-only runs in the core install)
GENERATION_NEEDS = ("torch", "diffusers", "transformers")


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {text!r}") from None


@click.command("evaluate")
@click.option("--data", required=True, help="a hintset build (its manifest names the annotator)")
@click.option("--condition", required=True, help="the map to evaluate (canny, depth, seg, ...)")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="report folder: summary.json, samples.csv, report.html (and images/)",
)
@click.option(
    "--generated",
    type=click.Path(exists=True, file_okay=False),
    help="score these images ({key}.png or {key}_{i}.png) instead of generating",
)
@click.option("--model", help="ControlNet: hintset export, diffusers folder, checkpoint or hub id")
@click.option("--base-model", help="base pipeline (folder or hub id) the ControlNet runs on")
@click.option("--limit", type=int, default=0, show_default=True, help="first N samples (0: all)")
@click.option("--steps", type=int, default=20, show_default=True)
@click.option("--guidance", type=float, default=7.5, show_default=True)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="seeds are derived from it, the key and the image index",
)
@click.option(
    "--resolution",
    type=int,
    default=512,
    show_default=True,
    help="short side of the generated images (the map's aspect is kept)",
)
@click.option(
    "--scale",
    "scale",
    default="1.0",
    show_default=True,
    help="ControlNet conditioning scale(s), e.g. 0.5,1.0: one run each",
)
@click.option(
    "--scheduler",
    type=click.Choice(["default", "ddim", "unipc", "euler-a", "dpm"]),
    default="default",
    show_default=True,
    help="sampler (default: the base's)",
)
@click.option("--images-per-key", type=int, default=1, show_default=True)
@click.option("--negative-prompt", default="", help="negative prompt for every image")
@click.option("--batch-size", type=int, default=4, show_default=True, help="images per call")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
    help="auto: fp16 on CUDA, fp32 on CPU",
)
@click.option("--no-baseline", is_flag=True, help="skip the run without control")
@click.option(
    "--protocol",
    type=click.Choice(["controlnet-plus-plus"]),
    help="fixed public settings (steps, sampler, guidance, seed, size, images per key)",
)
@weights_dir_option
@click.pass_context
def evaluate(ctx: click.Context, data: str, condition: str, output: Path, generated: str | None,
             model: str | None, base_model: str | None, limit: int, scale: str,
             no_baseline: bool, protocol: str | None, weights_dir: str | None,
             **options) -> None:  # fmt: skip
    """Measure whether a ControlNet obeys its maps (ControlNet++'s protocol): generate from each
    condition, re-annotate with the dataset's own annotator and weights, compare.

    \b
    Score images made elsewhere:  hintset evaluate --data ds/ --condition canny --generated imgs/ -o rep/
    Generate and score:           hintset evaluate --data ds/ --condition canny --model export/ \\
                                      --base-model runwayml/stable-diffusion-v1-5 -o rep/ --limit 500
    """
    from annotators.weights import WeightsError
    from evaluation.generate import protocol_settings
    from evaluation.run import evaluate as run_evaluate
    from evaluation.run import main_print

    if weights_dir:
        os.environ["HINTSET_WEIGHTS_DIR"] = os.path.abspath(weights_dir)
    if generated is None and not (model and base_model):
        raise click.UsageError("give --generated DIR, or --model and --base-model to generate")
    if generated is not None and model:
        raise click.UsageError("--generated scores existing images; it takes no --model")
    settings = None
    if generated is None:
        from annotators.extras import MissingExtra, check_extras

        try:  # generation runs diffusers pipelines: the train extra
            check_extras("hintset evaluate --model", [(m, "train") for m in GENERATION_NEEDS])
        except MissingExtra as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        explicit = {k for k in options if ctx.get_parameter_source(k).name != "DEFAULT"}
        settings = protocol_settings(protocol, options, explicit)
    try:
        summary = run_evaluate(data, condition, output, generated=generated, model=model,
                               base=base_model, settings=settings, scales=_scales(scale),
                               baseline=not no_baseline, limit=limit, protocol=protocol or "",
                               say=lambda line: click.echo(line, err=True))  # fmt: skip
    except (ValueError, WeightsError) as err:
        raise click.ClickException(str(err)) from None
    main_print(summary)
    click.echo(f"report: {output / 'report.html'}")
