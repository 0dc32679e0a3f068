"""``hintset verify``: check a dataset end to end."""

from __future__ import annotations

import sys

import click


@click.command()
@click.argument("out")
def verify(out):
    """Check dataset OUT: every tar reads and every member decodes, counts agree between tars,
    index and stats, and tar checksums match the manifest. Exit 1 and list problems otherwise."""
    from pipeline.verify import verify as run_verify

    problems = run_verify(out)
    for problem in problems:
        click.echo(f"PROBLEM {problem}", err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {out}", err=True)
        sys.exit(1)
    click.echo(f"{out}: OK")
