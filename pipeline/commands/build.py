"""``hintset build``: annotate inputs on Ray workers into resumable WebDataset shards."""

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
    input_limits_options,
    limits_from,
    plural,
    preset_from,
    quiet_option,
    sample_timeout_option,
    specs_from,
)


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
    help="JSONL/CSV/Parquet (path or URL) with file and caption columns (else sidecar <stem>.txt).",
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
    "--min-size",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Skip images whose short side is below this (status 'filtered' in the index) "
    "instead of upscaling them; the index records which samples were upscaled.",
)
@filter_option(
    "Keep only samples whose per-sample stat passes, repeatable: --filter 'pose_people >= 1' "
    "(OP: >= > <= < == !=; stat names: `hintset annotators`). Others get status 'filtered'."
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
@cpus_per_worker_option
@click.option(
    "--gpus-per-worker",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="GPUs each worker asks Ray for (learned annotators then run on cuda); "
    "fractions such as 0.5 let several workers share one GPU.",
)
@click.option(
    "--start-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for Ray to place the workers asked for; then the build runs on those "
    "that started (and says so), or stops with exit code 2 if none could.",
)
@click.option(
    "--max-retries",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Times a shard is retried when its worker dies.",
)
@batch_size_option
@sample_timeout_option
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE on every worker first (registers extra annotators).",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Also rebuild finished shards that have failed samples (the others stay as they are).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Delete what hintset wrote in OUT (manifest, plan, shards, index, stats) and start "
    "over; other files stay, and a folder hintset did not make is refused.",
)
@click.option(
    "--storage-option",
    "storage_opts",
    multiple=True,
    metavar="PROTOCOL.KEY=VALUE",
    help="fsspec option, repeatable: --storage-option s3.endpoint_url=http://host:9000 "
    "(AWS_* environment variables work without it).",
)
@click.option(
    "--max-shards",
    default=0,
    type=click.IntRange(min=0),
    help="Stop after building this many shards (a trial run; rerun to continue).",
)
@caption_option(
    "Caption inputs that have no caption (the index column caption_source says input or "
    "generated:<model id>)"
)
@click.option("--recaption", is_flag=True, help="With --caption: replace every caption.")
@caption_max_tokens_option
@input_limits_options
@annotator_options
@quiet_option
def build(inputs, out, names, preset, params, captions, shard_size, resolution, min_size,
          keep_original,
          workers, address, cpus_per_worker, gpus_per_worker, max_retries, batch_size,
          weights_dir, imports, retry_failed, storage_opts, max_shards, overwrite, quiet,
          filters, caption_model, recaption, caption_max_tokens, start_timeout,
          sample_timeout, trust_remote_lists,
          max_object_size, max_caption_size, connect_timeout, read_timeout):  # fmt: skip
    """Build a ControlNet dataset from INPUTS: image folders/files, WebDataset tars (paths,
    globs or brace notation such as 'data/{00000..00009}.tar') or Parquet/CSV/JSONL lists,
    local or any fsspec URL (s3://, gs://, http(s)://). Each tar, each list row range
    of --shard-size rows, and each chunk of --shard-size folder images makes one shard.

    \b
    Output (OUT):
      manifest.json         config, annotators (params, versions, weights sha256), shards, totals
      shards/00000.tar      {key}.jpg {key}.txt {key}.json {key}.<map>.png ...
      index/00000.parquet   one row per input, failures included (status, error)
      stats/00000.json      written last: the shard is complete
      plan/00000.parquet    the units of work (one row per shard)
    Rerunning the same command resumes; new inputs go into new shards.
    Exit code 1 if any input failed (as for annotate; --retry-failed redoes them),
    2 for usage or setup errors.

    \b
    Example:
      hintset build photos/ --captions captions.jsonl -o ds/ -a canny,lines --shard-size 1000
      hintset build photos/ -o ds/ -a canny --caption blip-base --weights-dir models/
    """
    from annotators.extras import MissingExtra
    from annotators.weights import WeightsError
    from pipeline.build import run_build
    from pipeline.filters import parse_filters
    from pipeline.lock import LockHeld
    from pipeline.ray_runner import BuildFailed

    set_storage_options(storage_opts)
    limits = limits_from(trust_remote_lists, max_object_size, max_caption_size,
                         connect_timeout, read_timeout)  # fmt: skip
    specs = specs_from(names, params, weights_dir, tuple(imports), preset)
    try:
        parse_filters(filters, specs)  # a typo'd rule stops here, before Ray starts
        check_options(inputs, out, address, gpus_per_worker, overwrite, cpus_per_worker)
        caption = caption_spec(caption_model, recaption, caption_max_tokens)
        # a cluster's workers may have other packages and weights than this machine: they check there
        check_ready(specs, caption, here=not address)
    except (BuildFailed, ValueError, WeightsError, MissingExtra) as err:
        click.echo(f"error: {' '.join(str(err).split())}", err=True)
        sys.exit(2)
    bar = Progress(unit="sample", disable=quiet, desc="build", smoothing=0.1)

    def on_plan(total: int, todo: int, samples: int) -> None:
        bar.start(samples if samples >= 0 else None)
        if total > todo:
            bar.write(f"{total - todo} of {total} shards already complete; resuming")

    def on_shard(stats: dict) -> None:
        for key, error in stats.get("failures", {}).items():
            bar.write(f"FAILED {key}: {error}", file=sys.stderr)

    try:
        manifest = run_build(
            list(inputs), out, specs, captions=captions, shard_size=shard_size,
            resolution=resolution, min_size=min_size, keep_original=keep_original,
            workers=workers, address=address, cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker, max_retries=max_retries, batch_size=batch_size,
            retry_failed=retry_failed, overwrite=overwrite, imports=tuple(imports),
            on_plan=on_plan, on_samples=bar.update, on_shard=on_shard,
            on_message=lambda text: bar.write(text, file=sys.stderr), max_shards=max_shards,
            filters=filters,
            caption=caption,
            start_timeout=start_timeout,
            sample_timeout=sample_timeout,
            limits=limits,
            preset=preset_from(preset, names).record() if preset else None,
        )  # fmt: skip
    except (BuildFailed, LockHeld, FileNotFoundError, ValueError) as err:
        bar.close()
        click.echo(f"error: {' '.join(str(err).split())}", err=True)
        sys.exit(2)
    bar.close()
    t = manifest["totals"]
    filtered = f", {t['filtered']} filtered" if t.get("filtered") else ""
    generated = f" ({t['captions_generated']} generated)" if t.get("captions_generated") else ""
    click.echo(f"{t['ok']} ok, {t['failed']} failed{filtered}, {t['no_caption']} without caption"
               f"{generated} in {plural(t['shards'], 'shard')} -> {out}", err=True)  # fmt: skip
    if manifest["status"] != "complete":
        click.echo(
            f"stopped after {plural(max_shards, 'shard')} (--max-shards); rerun to continue",
            err=True,
        )
    sys.exit(1 if t["failed"] else 0)  # as a full build: 1 when any sample built so far failed


def check_options(inputs: tuple[str, ...], out: str, address: str | None, gpus_per_worker: float,
                  overwrite: bool, cpus_per_worker: int = 1) -> None:  # fmt: skip
    """Refuse, in one line and before any work, options that would hang, fail late or lose data."""
    import os

    from pipeline.ray_runner import check_address, check_resources
    from pipeline.storage import Storage, dataset_entries

    check_address(address)
    check_resources(address, gpus_per_worker, cpus_per_worker)
    storage = Storage(out)
    storage.check_reachable()
    if overwrite and storage.local:
        owned = [os.path.join(os.path.abspath(storage.base), name) for name in dataset_entries()]
        for item in inputs:
            path = os.path.abspath(item)
            if any(path == o or path.startswith(o + os.sep) for o in owned):
                raise ValueError(f"input {item} lies in what --overwrite would delete in {out}; "
                                 "copy it elsewhere or write to another folder")  # fmt: skip


def set_storage_options(pairs: tuple[str, ...]) -> None:
    """``s3.endpoint_url=URL`` pairs into $HINTSET_STORAGE_OPTIONS (read here and by workers)."""
    import json
    import os

    options = json.loads(os.environ.get("HINTSET_STORAGE_OPTIONS") or "{}")
    for pair in pairs:
        target, sep, value = pair.partition("=")
        protocol, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise click.UsageError(f"bad --storage-option {pair!r}: expected PROTOCOL.KEY=VALUE")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        options.setdefault(protocol, {})[key] = parsed
    if options:
        os.environ["HINTSET_STORAGE_OPTIONS"] = json.dumps(options)
