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
        by_backend = {
            backend: [
                {"file": f.filename, "present": find_local(f, weights_dir) is not None}
                for f in files
            ]
            for backend, files in cls.weights_by_backend().items()
        }
        rows.append(
            {
                "name": name,
                "version": cls.version,
                "description": cls.description,
                "outputs": [f"{s}.png" for s in cls.outputs]
                + [f"{s}.json" for s in cls.data_outputs],
                "params": {p.name: p.default for p in cls.params},
                "stats": list(cls.stats),
                "weights": [
                    {"file": f.filename, "present": find_local(f, weights_dir) is not None}
                    for f in cls.weights_files()
                ],
                "weights_by_backend": by_backend,
                "reference": cls.reference,
                # per backend / model: weights file names, hub repos, licence, reference
                "backends": cls.catalogue(),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        status = weights_status(row["weights_by_backend"])
        click.secho(f"{row['name']}", bold=True, nl=False)
        click.echo(f"  v{row['version']}  {row['description']}  [{status}]")
        click.echo(f"    outputs: {', '.join(row['outputs'])}")
        if row["stats"]:
            click.echo(f"    stats (--filter): {', '.join(row['stats'])}")
        if row["reference"]:
            click.echo(f"    reference: {row['reference']}")
        if any(b["files"] for b in row["backends"].values()):
            licences = "; ".join(
                f"{name + ': ' if name else ''}{entry['licence']}"
                for name, entry in row["backends"].items()
            )
            click.echo(f"    licence: {licences}")
        for cls_param in get(row["name"]).params:
            choices = f" {{{'|'.join(map(str, cls_param.choices))}}}" if cls_param.choices else ""
            click.echo(f"    {cls_param.name}={cls_param.default!r}{choices}  {cls_param.help}")


def weights_status(by_backend: dict[str, list[dict]]) -> str:
    """One line: each backend's weights and whether they are here, the default backend first."""
    parts = []
    for i, (backend, files) in enumerate(by_backend.items()):
        text = ", ".join(f"{w['file']} {'present' if w['present'] else 'MISSING'}" for w in files)
        label = (
            f"{backend}{' (default)' if i == 0 and len(by_backend) > 1 else ''}: "
            if backend
            else ""
        )
        parts.append(label + (text or "no weights needed"))
    return "; ".join(parts)
