"""Options shared by ``hintset annotate`` and ``hintset build``, and turning them into specs."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from pipeline.budget import DEFAULT_SECONDS

if TYPE_CHECKING:
    from pipeline.caption import CaptionSpec

annotators_option = click.option(
    "-a", "--annotators", "names", default=None,
    help="Comma-separated annotator names (see `hintset annotators`) [default: canny].",
)  # fmt: skip
preset_option = click.option(
    "--preset", default=None, metavar="NAME",
    help="Annotators and settings of a public checkpoint (see `hintset presets`); --param "
    "overrides them, --annotators picks some of the preset's annotators.",
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

sample_timeout_option = click.option(
    "--sample-timeout", default=DEFAULT_SECONDS, show_default=True, type=click.FloatRange(min=0),
    help="Seconds the annotators may take per image; an image over it fails alone (its "
    "error says so), the rest go on. 0: no limit.",
)  # fmt: skip

batch_size_option = click.option(
    "--batch-size", default=None, type=click.IntRange(min=1),
    help="Images per annotator call [default: auto: 1 on CPU when a learned annotator runs, as "
    "batches are slower per image there; with a GPU the largest GPU batch of the learned "
    "annotators (16, or 8 for depth, normal, seg); 8 when all annotators are classical]. "
    "Learned annotators split a call into network batches of images of equal size, at most "
    "their batch_size param (auto: 1 on CPU; on CUDA their GPU batch, halved on out-of-memory "
    "errors). Recorded in the manifest (build) or report.json (annotate).",
)  # fmt: skip


def plural(count: int, noun: str) -> str:
    """``1 shard``, ``2 shards``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


class Progress:
    """A tqdm bar drawn only once the work is known (:meth:`start`), so a command that stops
    with an error before that prints no empty bar; :meth:`write` prints above it."""

    def __init__(self, **options) -> None:
        self.options, self.bar = options, None

    def start(self, total: int | None) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, dynamic_ncols=True, **self.options)
        else:
            self.bar.reset(total=total)

    def update(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def write(self, text: str, file=None) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=file)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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


def caption_spec(model: str | None, recaption: bool, max_tokens: int) -> CaptionSpec | None:
    """The --caption settings (None without --caption; --recaption alone is a usage error)."""
    from pipeline.caption import CaptionSpec

    if not model:
        if recaption:
            raise click.UsageError("--recaption needs --caption MODEL")
        return None
    return CaptionSpec(model, recaption=recaption, max_tokens=max_tokens)


def check_ready(specs: list, caption: CaptionSpec | None, *, here: bool) -> None:
    """Raise MissingExtra or WeightsError (one line) now, before any work or output, when an
    annotator or the captioning model lacks a package or weights. The one rule for both:
    checked when the workers run on this machine (``here``: annotate, build without
    --address); a cluster's workers may have their own packages and weights."""
    if not here:
        return
    from annotators import create
    from annotators.caption import resolve_caption_model
    from annotators.extras import TRANSFORMERS, MissingExtra, check_extras
    from annotators.weights import WeightsError

    checks = [create(spec.name, **spec.params).check_ready for spec in specs]
    if caption is not None:
        checks.append(lambda: check_extras(f"--caption {caption.model}", TRANSFORMERS))
        checks.append(lambda: resolve_caption_model(caption.model))
    problems: list[Exception] = []
    for check in checks:
        try:
            check()
        except (MissingExtra, WeightsError) as err:
            problems.append(err)
    if problems:  # every missing package and file at once, in one line
        raise type(problems[0])("; ".join(dict.fromkeys(str(p) for p in problems)))


def annotator_options(command: Callable) -> Callable:
    """--annotators, --preset, --param and --weights-dir on a command."""
    return annotators_option(preset_option(param_option(weights_dir_option(command))))


def specs_from(names: str | None, params: tuple[str, ...], weights_dir: str | None,
               imports: tuple[str, ...] = (), preset: str | None = None) -> list:  # fmt: skip
    """Annotator specs from the options (a UsageError with one line if they are wrong).
    A preset gives the annotators and their settings (--annotators picks some of them);
    --param values override its settings."""
    import importlib

    if preset:
        chosen = preset_from(preset, names)
        names, params = ",".join(chosen.annotators), (*chosen.params(), *params)
    names = names or "canny"

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


def preset_from(name: str, names: str | None):
    """The --preset NAME (narrowed to --annotators if given), or a one-line UsageError."""
    from annotators.presets import get_preset

    try:
        preset = get_preset(name)
        return preset.only([n.strip() for n in names.split(",") if n.strip()]) if names else preset
    except ValueError as err:
        raise click.UsageError(str(err)) from None


class ByteSize(click.ParamType):
    """A size in bytes: ``1048576``, ``64KiB``, ``256MiB``, ``2GiB`` (K/M/G are binary too)."""

    name = "SIZE"
    _UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
        number, unit = text.rstrip("kmg"), text[len(text.rstrip("kmg")) :]
        try:
            size = int(float(number) * self._UNITS[unit])
        except (ValueError, KeyError):
            self.fail(f"{value!r} is not a size (e.g. 1048576, 64KiB, 256MiB)", param, ctx)
        if size < 1:
            self.fail(f"{value!r} must be at least 1 byte", param, ctx)
        return size


def input_limits_options(command: Callable) -> Callable:
    """--trust-remote-lists, --max-object-size, --max-caption-size, --connect-timeout,
    --read-timeout: what remote inputs may name and the caps on reading them."""
    options = [
        click.option(
            "--trust-remote-lists", is_flag=True,
            help="Let rows of remote (http, s3, ...) lists name local files, other stores "
            "and private/loopback addresses, as a local list may. Without it such rows fail. "
            "Link-local/cloud-metadata addresses are never read.",
        ),
        click.option(
            "--max-object-size", type=ByteSize(), default="256MiB", show_default=True,
            help="Largest remote object (image, sidecar) read; bigger ones, or HTTP bodies "
            "that inflate past it, fail their sample.",
        ),
        click.option(
            "--max-caption-size", type=ByteSize(), default="64KiB", show_default=True,
            help="Longest caption (UTF-8 bytes) from any source; longer ones fail their sample.",
        ),
        click.option(
            "--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
            show_default=True, help="Seconds to connect to an HTTP server.",
        ),
        click.option(
            "--read-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0,
            show_default=True, help="Seconds to wait for the next bytes of an HTTP answer.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def limits_from(trust_remote_lists: bool, max_object_size: int, max_caption_size: int,
                connect_timeout: float, read_timeout: float):  # fmt: skip
    """The :class:`~pipeline.trust.Limits` of the options, also used by this process."""
    from pipeline.trust import Limits, configure

    limits = Limits(max_object_bytes=max_object_size, max_caption_bytes=max_caption_size,
                    connect_timeout=connect_timeout, read_timeout=read_timeout,
                    trust_remote_lists=trust_remote_lists)  # fmt: skip
    configure(limits)
    return limits
