"""``hintset inspect``: totals, failures by reason and per-annotator statistics of a dataset."""

from __future__ import annotations

import json

import click


@click.command("inspect")
@click.argument("out")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_cmd(out, as_json):
    """Show totals, failures grouped by reason, and per-annotator statistics of dataset OUT
    (e.g. mean edge density; images with no person found for pose)."""
    from pipeline.verify import summary

    info = summary(out)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    t = info["totals"]
    click.echo(f"{out}  [{info['status']}]")
    click.echo(f"  samples {t.get('samples', 0)}  ok {t.get('ok', 0)}  failed {t.get('failed', 0)}"
               f"  filtered {t.get('filtered', 0)}  upscaled {t.get('upscaled', 0)}"
               f"  no caption {t.get('no_caption', 0)}  shards {t.get('shards', 0)}"
               f"  {t.get('tar_bytes', 0) / 1e6:.1f} MB")  # fmt: skip
    if info["failures_by_reason"]:
        click.echo("  failures by reason:")
        for reason, count in info["failures_by_reason"].items():
            click.echo(f"    {count:6d}  {reason}")
    if info["filtered_by_rule"]:
        click.echo("  filtered by rule:")
        for rule, count in info["filtered_by_rule"].items():
            click.echo(f"    {count:6d}  {rule}")
    click.echo("  per-sample statistics (mean over ok samples; zeros = samples where it is 0):")
    for key, agg in t.get("stats", {}).items():
        click.echo(f"    {key:<24} mean {agg['mean']:.4g}  zeros {agg['zeros']}/{agg['count']}")
