"""``hintset annotate``: condition maps for files and folders of photos."""

from __future__ import annotations

import sys

import click

from pipeline.commands.options import (
    Progress,
    annotator_options,
    batch_size_option,
    caption_max_tokens_option,
    caption_option,
    caption_spec,
    check_ready,
    cpus_per_worker_option,
    filter_option,
    quiet_option,
    sample_timeout_option,
    specs_from,
)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder; mirrors the input tree as <stem>.<map>.png.",
)
@click.option(
    "-r",
    "--resolution",
    default=512,
    show_default=True,
    type=click.IntRange(min=0),
    help="Resize so the short side is this many pixels (0 keeps the original size). "
    "Maps are pixel-aligned with the resized image.",
)
@click.option(
    "-w",
    "--workers",
    default=0,
    type=click.IntRange(min=0),
    help="Worker processes [default: all cores].",
)
@cpus_per_worker_option
@batch_size_option
@sample_timeout_option
@click.option(
    "--save-image", is_flag=True, help="Also write the resized image as <stem>.image.jpg."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Redo inputs whose outputs already exist (default: skip them). Outputs made with "
    "other settings (annotator parameters, resolution) are never skipped: without "
    "--overwrite the run is refused.",
)
@filter_option(
    "Write outputs only for images whose per-sample stat passes, repeatable: "
    "--filter 'canny_density > 0.01' (as for build); report.json counts the others."
)
@caption_option("Also write a caption per image as <stem>.caption.txt,")
@caption_max_tokens_option
@annotator_options
@quiet_option
def annotate(
    inputs,
    out,
    names,
    preset,
    params,
    resolution,
    workers,
    cpus_per_worker,
    batch_size,
    save_image,
    weights_dir,
    overwrite,
    quiet,
    filters,
    caption_model,
    caption_max_tokens,
    sample_timeout,
):
    """Write condition maps for every image in INPUTS (files or folders, searched recursively).

    Folders contribute .jpg .jpeg .png .webp .bmp .tif .tiff files. Each bad input
    is listed on one line with its reason and recorded in OUT/report.json; all
    other inputs are still done. OUT/made_by.jsonl records the settings that made
    each output. Exit code 1 if any input failed (rerun to retry only those), 2 for
    usage errors.

    \b
    Examples:
      hintset annotate photos/ -o maps/ --annotators canny,lines --param canny.low=50
      hintset annotate photos/ -o maps/ -a canny --caption blip-base --weights-dir models/
    """
    from annotators.extras import MissingExtra
    from annotators.weights import WeightsError
    from pipeline.annotate import REPORT_NAME, SettingsConflict, run_annotate
    from pipeline.filters import parse_filters

    specs = specs_from(names, params, weights_dir, preset=preset)
    try:
        parse_filters(filters, specs)
        caption = caption_spec(caption_model, False, caption_max_tokens)
        # a missing package or weights file stops here, before any output is written
        check_ready(specs, caption, here=True)
    except (ValueError, WeightsError, MissingExtra) as err:
        click.echo(f"error: {' '.join(str(err).split())}", err=True)
        sys.exit(2)

    bar = Progress(unit="img", disable=quiet, desc="annotate")

    def on_plan(total: int, todo: int) -> None:
        bar.start(todo)
        if total > todo:
            bar.write(
                f"{total - todo} of {total} inputs already done; skipping them (--overwrite redoes them)"
            )

    def on_record(rec: dict) -> None:  # setup errors (missing weights) are printed once below
        bar.update(1)
        if rec["status"] == "failed" and not rec["error"].startswith("setup: "):
            bar.write(f"FAILED {rec['source']}: {rec['error']}", file=sys.stderr)

    try:
        report = run_annotate(
            list(inputs),
            out,
            specs,
            resolution=resolution,
            workers=workers,
            cpus_per_worker=cpus_per_worker,
            batch_size=batch_size,
            overwrite=overwrite,
            save_image=save_image,
            on_record=on_record,
            on_plan=on_plan,
            filters=filters,
            caption=caption,
            sample_timeout=sample_timeout,
        )
    except SettingsConflict as err:
        bar.close()
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    finally:
        bar.close()
    counts = report["counts"]
    setup = {f["error"] for f in report["failures"] if f["error"].startswith("setup: ")}
    for line in sorted(setup):
        click.echo(f"error: {line.removeprefix('setup: ')}", err=True)
    filtered = f", {counts['filtered']} filtered" if counts["filtered"] else ""
    click.echo(
        f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed{filtered} "
        f"in {report['timings']['wall_seconds']:.1f}s -> {out}/{REPORT_NAME}",
        err=True,
    )
    sys.exit(1 if counts["failed"] else 0)
