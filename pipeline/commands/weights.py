"""``hintset weights``: every weights file / model each annotator needs, its source, and whether it is here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click


def _size(path: Path) -> int:
    return path.stat().st_size


def file_rows(name: str, cls: Any, weights_dir: str | None, skip_repos: set[str]) -> list[dict]:
    """One row per checkpoint file of every backend (``weights_by_backend()``), found locally or
    in the HF cache; files of model folders (``skip_repos``) are listed per folder instead."""
    from annotators.weights import find_local, sha256_file

    specs = [spec for files in cls.weights_by_backend().values() for spec in files]
    rows = []
    for spec in dict.fromkeys(specs):  # a file shared by two backends once
        if spec.repo_id in skip_repos:
            continue
        path = find_local(spec, weights_dir)
        row = {
            "annotator": name,
            "kind": "file",
            "name": spec.filename,
            "repo_id": spec.repo_id,
            "source": spec.url,
            "present": path is not None,
            "path": str(path) if path else None,
            "size": _size(path) if path else None,
            "sha256": sha256_file(path) if path else None,
            "expected_sha256": spec.sha256,
        }
        if path and spec.sha256:
            row["sha256_ok"] = row["sha256"] == spec.sha256.lower()
        rows.append(row)
    return rows


def model_rows(name: str, cls: Any, weights_dir: str | None) -> list[dict]:
    """One row per model folder an annotator can load (``model_folders()``), looked up offline."""
    default = next((p.default for p in cls.params if p.name == "model"), None)
    return models_rows(name, cls.model_folders(), default, weights_dir)


def caption_rows(weights_dir: str | None) -> list[dict]:
    """The captioning models of ``build --caption`` (they need tokenizer files too)."""
    from annotators import caption

    models = {s: spec for s, spec in caption.MODELS.items() if not s.endswith("-detailed")}
    return models_rows("caption (build --caption)", models, None, weights_dir,
                       extra=caption.TOKENIZER_FILES, processor=caption.PROCESSOR_FILES)  # fmt: skip


def models_rows(name: str, models: dict[str, Any], default: str | None,
                weights_dir: str | None, extra: tuple[str, ...] = (),
                processor: tuple[str, ...] = ("preprocessor_config.json",)) -> list[dict]:  # fmt: skip
    """One row per model (short name -> spec with ``repo_id``): where it is, or what it needs."""
    from annotators.weights import WeightsError, find_folder, folder_files, sha256_file

    rows = []
    for short, spec in models.items():
        row = {
            "annotator": name,
            "kind": "model",
            "name": short,
            "default": short == default,
            "source": f"https://huggingface.co/{spec.repo_id}",
            "repo_id": spec.repo_id,
            "needs": folder_files(spec, extra, processor),
        }
        try:
            folder, weights = find_folder(spec, weights_dir, extra, processor)
        except WeightsError as err:
            row.update(present=False, path=None, size=None, sha256=None, error=str(err))
        else:
            row.update(
                present=True,
                path=str(folder),
                file=str(weights.relative_to(folder)),
                size=_size(weights),
                sha256=sha256_file(weights),
            )
        rows.append(row)
    return rows


def collect(weights_dir: str | None) -> list[dict]:
    """Rows for every registered annotator that needs weights: each backend's files and each
    model folder, as the annotator declares them (so ``hintset annotators`` lists the same)."""
    from annotators import get, list_annotators

    classes = {name: get(name) for name in list_annotators()}
    folders = {s.repo_id for cls in classes.values() for s in cls.model_folders().values()}
    rows: list[dict] = []
    for name, cls in classes.items():
        rows += file_rows(name, cls, weights_dir, folders)
        rows += model_rows(name, cls, weights_dir)
    return rows + caption_rows(weights_dir)


def _human(size: int | None) -> str:
    return "" if size is None else f"{size / 1e6:.1f} MB"


@click.command()
@click.option(
    "--weights-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder to look for weights in (also $HINTSET_WEIGHTS_DIR); never downloads.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def weights(weights_dir, as_json):
    """List every weights file and model each annotator needs, its source, and whether it is here.

    Files are looked for in --weights-dir, $HINTSET_WEIGHTS_DIR and the Hugging Face cache.
    A transformers model is a folder DIR/<hub id>/ holding config.json, model.safetensors
    and preprocessor_config.json (as `huggingface-cli download <hub id> --local-dir` makes);
    a Marigold model is a diffusers pipeline folder (model_index.json, unet/, vae/, ...).
    """
    rows = collect(weights_dir)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    where = weights_dir or os.environ.get("HINTSET_WEIGHTS_DIR") or "(none set)"
    click.echo(f"weights dir: {where}; also the Hugging Face cache")
    current = None
    for row in rows:
        if row["annotator"] != current:
            current = row["annotator"]
            click.secho(current, bold=True)
        status = "present" if row["present"] else "MISSING"
        if row["kind"] == "model":
            label = f"model {row['name']}{' (default)' if row['default'] else ''}"
            detail = (
                f"{row['path']}  {row['file']} {_human(row['size'])} sha256 {row['sha256']}"
                if row["present"]
                else f"needs {', '.join(row['needs'])}"
            )
            click.echo(f"  {label:<40} {row['repo_id']:<44} {status:<8} {detail}")
        else:
            detail = (
                f"{row['path']}  {_human(row['size'])} sha256 {row['sha256']}"
                + ("" if row.get("sha256_ok", True) else "  HASH MISMATCH")
                if row["present"]
                else row["source"]
            )
            click.echo(f"  {row['name']:<40} {status:<8} {detail}")
    missing = sum(not r["present"] for r in rows)
    click.echo(f"{len(rows) - missing} present, {missing} missing")
