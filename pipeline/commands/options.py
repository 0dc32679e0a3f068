"""Options shared by ``hintset annotate`` and ``hintset build``, and turning them into specs."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from pipeline.caption import CaptionSpec

annotators_option = click.option(
    "-a", "--annotators", "names", default="canny", show_default=True,
    help="Comma-separated annotator names (see `hintset annotators`).",
)  # fmt: skip
param_option = click.option(
    "-p", "--param", "params", multiple=True, metavar="NAME.KEY=VALUE",
    help="Annotator parameter, repeatable: --param canny.low=50 --param lines.backend=hough",
)  # fmt: skip
weights_dir_option = click.option(
    "--weights-dir", type=click.Path(file_okay=False), default=None,
    help="Folder with model weights for learned annotators (sets $HINTSET_WEIGHTS_DIR).",
)  # fmt: skip
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
cpus_per_worker_option = click.option(
    "--cpus-per-worker", default=1, show_default=True, type=click.IntRange(min=1),
    help="CPUs each worker uses (build: what each Ray worker asks for). With 2 or more, or a "
    "GPU, that many threads decode, resize and encode beside the model, so the model never "
    "waits for JPEG/PNG work; with 1 and no GPU, one thread does all in turn (reads still run "
    "ahead), so N workers on N cores do not contend.",
)  # fmt: skip

batch_size_option = click.option(
    "--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
    help="Images per annotator call (learned annotators run them as one batch).",
)  # fmt: skip


def filter_option(help: str) -> Callable:
    """``--filter 'STAT OP NUMBER'`` (repeatable, into ``filters``) with the command's help."""
    return click.option("--filter", "filters", multiple=True, metavar="'STAT OP NUMBER'",
                        help=help)  # fmt: skip


caption_max_tokens_option = click.option(
    "--caption-max-tokens", default=40, show_default=True, type=click.IntRange(min=1),
    help="With --caption: longest caption in tokens (greedy decoding).",
)  # fmt: skip


def caption_option(what: str) -> Callable:
    """``--caption MODEL`` (into ``caption_model``); ``what`` says what the command captions."""
    return click.option(
        "--caption", "caption_model", metavar="MODEL",
        help=f"{what} with an image-to-text model: blip-base, blip-large, florence-2-base, "
        "florence-2-large (-detailed for long captions), a hub id or a model folder; weights "
        "are found like --weights-dir models.",
    )  # fmt: skip


def caption_spec(model: str | None, recaption: bool, max_tokens: int, *,
                 check_weights: bool = False) -> CaptionSpec | None:  # fmt: skip
    """The --caption settings (None without --caption; --recaption alone is a usage error).

    ``check_weights``: raise WeightsError (one line) now, before any work, if the model is missing.
    """
    from pipeline.caption import CaptionSpec

    if not model:
        if recaption:
            raise click.UsageError("--recaption needs --caption MODEL")
        return None
    if check_weights:
        from annotators.caption import resolve_caption_model

        resolve_caption_model(model)
    return CaptionSpec(model, recaption=recaption, max_tokens=max_tokens)


def check_annotator_weights(specs: list) -> None:
    """Raise WeightsError (one line naming every missing file) now, before any work."""
    from annotators import create

    for spec in specs:
        create(spec.name, **spec.params).check_weights()


def annotator_options(command: Callable) -> Callable:
    """--annotators, --param and --weights-dir on a command."""
    return annotators_option(param_option(weights_dir_option(command)))


def specs_from(names: str, params: tuple[str, ...], weights_dir: str | None,
               imports: tuple[str, ...] = ()) -> list:  # fmt: skip
    """Annotator specs from the options (a UsageError with one line if they are wrong)."""
    import importlib

    from annotators.weights import ENV_DIR
    from pipeline.worker import parse_specs

    if weights_dir:
        os.environ[ENV_DIR] = os.path.abspath(weights_dir)  # inherited by every worker
    listed = [n.strip() for n in names.split(",") if n.strip()]
    if repeated := sorted({n for n in listed if listed.count(n) > 1}):
        raise click.UsageError(f"--annotators lists {', '.join(repeated)} more than once")
    try:
        for module in imports:
            importlib.import_module(module)
        return parse_specs(names, params)
    except (ValueError, ImportError) as err:
        raise click.UsageError(str(err)) from None
