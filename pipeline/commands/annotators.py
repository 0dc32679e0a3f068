"""``hintset annotators``: list annotators, their parameters and whether their weights are here."""

from __future__ import annotations

import json

import click


@click.command()
@click.option(
    "--weights-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder to look for weights in (also $HINTSET_WEIGHTS_DIR).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def annotators(weights_dir, as_json):
    """List every annotator with its parameters, defaults, outputs and weights status."""
    from annotators import get, list_annotators
    from annotators.weights import find_local

    rows = []
    for name in list_annotators():
        cls = get(name)
        files = cls.weights_files()
        rows.append(
            {
                "name": name,
                "version": cls.version,
                "description": cls.description,
                "outputs": [f"{s}.png" for s in cls.outputs]
                + [f"{s}.json" for s in cls.data_outputs],
                "params": {p.name: p.default for p in cls.params},
                "weights": [
                    {"file": f.filename, "present": find_local(f, weights_dir) is not None}
                    for f in files
                ],
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        if not row["weights"]:
            status = "no weights needed"
        else:
            status = ", ".join(
                f"{w['file']} {'present' if w['present'] else 'MISSING'}" for w in row["weights"]
            )
        click.secho(f"{row['name']}", bold=True, nl=False)
        click.echo(f"  v{row['version']}  {row['description']}  [{status}]")
        click.echo(f"    outputs: {', '.join(row['outputs'])}")
        for cls_param in get(row["name"]).params:
            choices = f" {{{'|'.join(map(str, cls_param.choices))}}}" if cls_param.choices else ""
            click.echo(f"    {cls_param.name}={cls_param.default!r}{choices}  {cls_param.help}")
