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
    """One row per checkpoint file (``weights_files()``), found locally or in the HF cache."""
    from annotators.weights import find_local, sha256_file

    rows = []
    for spec in cls.weights_files():
        if spec.repo_id in skip_repos:  # listed as a whole model folder instead
            continue
        path = find_local(spec, weights_dir)
        row = {
            "annotator": name,
            "kind": "file",
            "name": spec.filename,
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
    """One row per transformers model an annotator can use (``model_ids()``), looked up offline."""
    default = next((p.default for p in cls.params if p.name == "model"), None)
    return models_rows(name, cls.model_ids(), default, weights_dir)


def caption_rows(weights_dir: str | None) -> list[dict]:
    """The captioning models of ``build --caption`` (they need tokenizer files too)."""
    from annotators import caption

    models = {short: spec.repo_id for short, spec in caption.MODELS.items()}
    models = {s: r for s, r in models.items() if not s.endswith("-detailed")}  # same repos
    return models_rows("caption (build --caption)", models, None, weights_dir,
                       extra=caption.TOKENIZER_FILES, processor=caption.PROCESSOR_FILES)  # fmt: skip


def models_rows(name: str, models: dict[str, str], default: str | None,
                weights_dir: str | None, extra: tuple[str, ...] = (),
                processor: tuple[str, ...] = ("preprocessor_config.json",)) -> list[dict]:  # fmt: skip
    """One row per model (short name -> hub id): where it is, or the files it needs."""
    from annotators.weights import (
        WeightsError,
        model_files,
        model_weights_file,
        resolve_model_dir,
        sha256_file,
    )

    rows = []
    for short, repo in models.items():
        row = {
            "annotator": name,
            "kind": "model",
            "name": short,
            "default": short == default,
            "source": f"https://huggingface.co/{repo}",
            "repo_id": repo,
            "needs": model_files(extra, processor),
        }
        try:
            folder = resolve_model_dir(repo, weights_dir, offline=True, extra=extra,
                                       processor=processor)  # fmt: skip
        except WeightsError as err:
            row.update(present=False, path=None, size=None, sha256=None, error=str(err))
        else:
            weights = model_weights_file(folder)
            row.update(
                present=True,
                path=str(folder),
                file=weights.name,
                size=_size(weights),
                sha256=sha256_file(weights),
            )
        rows.append(row)
    return rows


def collect(weights_dir: str | None) -> list[dict]:
    """Rows for every registered annotator that needs weights."""
    from annotators import get, list_annotators

    rows: list[dict] = []
    for name in list_annotators():
        cls = get(name)
        models = cls.model_ids() if hasattr(cls, "model_ids") else {}
        rows += file_rows(name, cls, weights_dir, set(models.values()))
        if models:
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
    and preprocessor_config.json (as `huggingface-cli download <hub id> --local-dir` makes).
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
