"""``hintset build``: annotate inputs on Ray workers into resumable WebDataset shards."""

from __future__ import annotations

import sys

import click

from pipeline.commands.options import annotator_options, quiet_option, specs_from


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    help="Dataset folder or fsspec URL (s3://bucket/ds); all nodes must see it.",
)
@click.option(
    "--captions",
    type=click.Path(exists=True, dir_okay=False),
    help="JSONL/CSV/Parquet with file and caption columns (else sidecar <stem>.txt).",
)
@click.option(
    "--shard-size",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Samples per shard (the unit of work and retry).",
)
@click.option(
    "-r",
    "--resolution",
    default=512,
    show_default=True,
    type=click.IntRange(min=0),
    help="Store images resized to this short side (JPEG q95); maps align with them.",
)
@click.option(
    "--keep-original",
    is_flag=True,
    help="Store the original image bytes and annotate at the original size.",
)
@click.option(
    "-w",
    "--workers",
    default=0,
    type=click.IntRange(min=0),
    help="Worker actors [default: one per CPU (or per GPU with --gpus-per-worker)].",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to join: auto or ray://host:10001 [default: start a local Ray].",
)
@click.option(
    "--gpus-per-worker",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="GPUs each worker asks Ray for (learned annotators then run on cuda).",
)
@click.option(
    "--max-retries",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Times a shard is retried when its worker dies.",
)
@click.option(
    "--batch-size",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images per annotator call (learned annotators batch them).",
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE on every worker first (registers extra annotators).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Delete what hintset wrote in OUT (manifest, plan, shards, index, stats) and start "
    "over; other files stay, and a folder hintset did not make is refused.",
)
@annotator_options
@quiet_option
def build(inputs, out, names, params, captions, shard_size, resolution, keep_original, workers,
          address, gpus_per_worker, max_retries, batch_size, weights_dir, imports, overwrite,
          quiet):  # fmt: skip
    """Build a ControlNet dataset from INPUTS: image folders/files, WebDataset tars (paths,
    globs or brace notation such as 'data/{00000..00009}.tar') or Parquet/CSV lists.

    \b
    Output (OUT):
      manifest.json         config, annotators (params, versions, weights sha256), shards, totals
      shards/00000.tar      {key}.jpg {key}.txt {key}.json {key}.<map>.png ...
      index/00000.parquet   one row per input, failures included (status, error)
      stats/00000.json      written last: the shard is complete
    Rerunning the same command resumes; new inputs go into new shards.

    \b
    Example:
      hintset build photos/ --captions captions.jsonl -o ds/ -a canny,lines --shard-size 1000
    """
    from tqdm import tqdm

    from pipeline.build import run_build
    from pipeline.ray_runner import BuildFailed

    specs = specs_from(names, params, weights_dir, tuple(imports))
    try:
        check_options(inputs, out, address, gpus_per_worker, overwrite)
    except (BuildFailed, ValueError) as err:
        click.echo(f"error: {' '.join(str(err).split())}", err=True)
        sys.exit(2)
    bar = tqdm(total=0, unit="sample", disable=quiet, dynamic_ncols=True, desc="build",
               smoothing=0.1)  # fmt: skip

    def on_plan(total: int, todo: int, samples: int) -> None:
        bar.reset(total=samples)
        if total > todo:
            bar.write(f"{total - todo} of {total} shards already complete; resuming")

    def on_shard(stats: dict) -> None:
        for key, error in stats.get("failures", {}).items():
            bar.write(f"FAILED {key}: {error}", file=sys.stderr)

    try:
        manifest = run_build(
            list(inputs), out, specs, captions=captions, shard_size=shard_size,
            resolution=resolution, keep_original=keep_original, workers=workers,
            address=address, gpus_per_worker=gpus_per_worker, max_retries=max_retries,
            batch_size=batch_size, overwrite=overwrite, imports=tuple(imports),
            on_plan=on_plan, on_samples=bar.update, on_shard=on_shard,
        )  # fmt: skip
    except (BuildFailed, FileNotFoundError, ValueError) as err:
        bar.close()
        click.echo(f"error: {' '.join(str(err).split())}", err=True)
        sys.exit(2)
    bar.close()
    t = manifest["totals"]
    click.echo(f"{t['ok']} ok, {t['failed']} failed, {t['no_caption']} without caption in "
               f"{t['shards']} shards -> {out}", err=True)  # fmt: skip


def check_options(
    inputs: tuple[str, ...], out: str, address: str | None, gpus_per_worker: float, overwrite: bool
) -> None:
    """Refuse, in one line and before any work, options that would hang, fail late or lose data."""
    import os

    from pipeline.ray_runner import check_address, check_resources
    from pipeline.storage import Storage, dataset_entries

    check_address(address)
    check_resources(address, gpus_per_worker)
    storage = Storage(out)
    if overwrite and storage.local:
        owned = [os.path.join(os.path.abspath(storage.base), name) for name in dataset_entries()]
        for item in inputs:
            path = os.path.abspath(item)
            if any(path == o or path.startswith(o + os.sep) for o in owned):
                raise ValueError(f"input {item} lies in what --overwrite would delete in {out}; "
                                 "copy it elsewhere or write to another folder")  # fmt: skip
