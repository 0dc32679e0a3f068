"""``hintset presets``: presets named after public checkpoints and what each sets."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def presets(as_json):
    """List the presets (--preset NAME on annotate and build): the checkpoint each feeds, its
    annotators and parameters, and for union models the slot (mode) id of each map."""
    from annotators.presets import PRESETS

    rows = [preset.record() for preset in PRESETS.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.secho(row["name"], bold=True, nl=False)
        click.echo(f"  {row['checkpoint']}  {row['description']}")
        for name, params in row["annotators"].items():
            settings = " ".join(f"{k}={v}" for k, v in params.items())
            slot = f"  [slot {row['slots'][name]}]" if name in row.get("slots", {}) else ""
            click.echo(f"    {name} {settings}{slot}".rstrip())
        if row.get("notes"):
            click.echo(f"    note: {row['notes']}")
