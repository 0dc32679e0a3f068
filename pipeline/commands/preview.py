"""``hintset preview``: look at samples of a dataset (HTML page or PNG contact sheet)."""

from __future__ import annotations

import click


@click.command()
@click.argument("out")
@click.option(
    "-o",
    "--output",
    "target",
    required=True,
    help="preview.html (inline thumbnails) or preview.png (contact sheet).",
)
@click.option("-n", "--samples", default=8, show_default=True, type=click.IntRange(min=1))
def preview(out, target, samples):
    """Write a page or sheet showing N samples of dataset OUT: image, caption and every map."""
    from pipeline.preview import read_samples, write_html, write_png

    suffix = target.lower().rpartition(".")[2]
    if suffix not in ("html", "htm", "png"):
        raise click.BadParameter(f"{target}: use a .html or .png file name", param_hint="-o")
    rows = read_samples(out, samples)
    if not rows:
        raise click.ClickException(f"{out} holds no samples")
    try:
        (write_png if suffix == "png" else write_html)(rows, target)  # parent folders are created
    except OSError as err:
        raise click.ClickException(f"cannot write {target}: {err.strerror or err}") from None
    click.echo(f"{len(rows)} samples -> {target}")
