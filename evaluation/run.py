"""One evaluation: (generate,) re-annotate, score every run, write the report."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.judge import Judge, read_manifest
from evaluation.samples import Sample, read_samples
from evaluation.score import METRICS, kind_of, score

#: image files a generated folder may hold per key: ``{key}.ext`` or ``{key}_{i}.ext``
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
#: best and worst samples shown per run
GRID = 3


@dataclass
class Run:
    """One row of the report: a folder of generated images and what made them."""

    name: str
    folder: Path
    model: str | None = None
    base: str | None = None
    scale: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)  # FID/KID when their weights exist


def find_images(folder: Path, keys: set[str]) -> dict[str, list[tuple[int, Path]]]:
    """Generated images per key: ``{key}.png`` is image 0, ``{key}_{i}.png`` image i (a file
    whose whole stem is a key is that key's, so keys with underscores stay unambiguous)."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.suffix.lower() not in IMAGE_EXTS or path.name.startswith("."):
            continue
        key, index = path.stem, 0
        if key not in keys:
            head, _, tail = key.rpartition("_")
            if head not in keys or not tail.isdigit():
                continue
            key, index = head, int(tail)
        found.setdefault(key, []).append((index, path))
    return {k: sorted(v) for k, v in found.items()}


def load_rgb(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (the project's decoder: EXIF, alpha, 16-bit)."""
    from pipeline.decode import load_image

    return load_image(path)


def score_run(run: Run, judge: Judge, samples: list[Sample], condition: str,
              batch_size: int = 8, say: Callable[[str], None] = print) -> None:  # fmt: skip
    """Score every image of ``run`` against its sample's maps; missing keys and unreadable
    images are counted (one line each for the latter), never fatal."""
    by_key = {s.key: s for s in samples}
    images = find_images(run.folder, set(by_key))
    items = [(by_key[k], i, p) for k, found in images.items() for i, p in found]
    failed = 0
    for start in range(0, len(items), batch_size):
        batch, rgbs = [], []
        for sample, index, path in items[start : start + batch_size]:
            try:
                rgbs.append(load_rgb(path))
                batch.append((sample, index, path))
            except Exception as err:  # noqa: BLE001 - one bad file is one line, not a stop
                failed += 1
                say(f"FAILED {path}: {' '.join(str(err).split())}")
        if not batch:
            continue
        for (sample, index, path), pred in zip(batch, _annotate(judge, batch, rgbs, say),
                                               strict=True):  # fmt: skip
            if pred is None:
                failed += 1
                continue
            row = {"run": run.name, "key": sample.key, "image": index, "file": path.name}
            run.rows.append({**row, **score(condition, sample.maps, pred)})
    scored = {r["key"] for r in run.rows}
    run.counts = {"keys": len(samples), "scored_keys": len(scored), "images": len(run.rows),
                  "missing_keys": len(samples) - len(images), "failed_images": failed}  # fmt: skip


def _annotate(judge: Judge, batch: list, rgbs: list[np.ndarray],
              say: Callable[[str], None]) -> list[dict[str, Any] | None]:  # fmt: skip
    """The judge's maps of a batch; if the batch fails, image by image (None for a failure,
    reported in one line)."""
    try:
        return judge.annotate(rgbs, [s.key for s, _, _ in batch], [s.size for s, _, _ in batch])
    except Exception:  # noqa: BLE001 - find the image that fails, keep the others
        out: list[dict[str, Any] | None] = []
        for (sample, _, path), rgb in zip(batch, rgbs, strict=True):
            try:
                out += judge.annotate([rgb], [sample.key], [sample.size])
            except Exception as err:  # noqa: BLE001
                say(f"FAILED {path}: annotate: {' '.join(str(err).split())}")
                out.append(None)
        return out


def grid(run: Run, judge: Judge, samples: list[Sample], condition: str,
         metric: str, higher: bool) -> list[dict[str, Any]]:  # fmt: skip
    """The best and worst keys of ``run`` by ``metric``: condition | generated | re-annotated."""
    from evaluation.report import per_key, viewable

    keys = list(dict.fromkeys(r["key"] for r in run.rows if r.get(metric) is not None))
    values = per_key(run.rows, metric)
    order = sorted(range(len(keys)), key=lambda i: -values[i] if higher else values[i])
    picks = [("best", i) for i in order[:GRID]]
    picks += [("worst", i) for i in order[::-1][:GRID] if i not in order[:GRID]]
    by_key = {s.key: s for s in samples}
    out = []
    for label, i in picks:
        sample = by_key[keys[i]]
        row = next(r for r in run.rows if r["key"] == keys[i])
        rgb = load_rgb(run.folder / row["file"])
        pred = judge.annotate([rgb], [sample.key], [sample.size])[0]
        tiles = [viewable(sample.maps[condition]), rgb, viewable(pred[condition])]
        out.append({"label": f"{label}: {metric} {values[i]:.3f}", "key": sample.key,
                    "caption": sample.caption, "tiles": tiles})  # fmt: skip
    return out


def evaluate(data: str, condition: str, out: Path, *, generated: str | None = None,
             model: str | None = None, base: str | None = None, settings: Any = None,
             scales: tuple[float, ...] = (1.0,), baseline: bool = True, limit: int = 0,
             protocol: str = "", say: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Evaluate ``condition`` on ``data``: score the images in ``generated``, or generate with
    ``model`` on ``base`` (at each scale, and without control unless ``baseline`` is off) into
    OUT/images/<run>/ first. Writes OUT/summary.json, samples.csv, report.html."""
    from evaluation import quality, report

    kind = kind_of(condition)
    manifest = read_manifest(data)
    judge = Judge(manifest, condition)  # fails before any generation if its weights are missing
    samples = list(read_samples(data, judge.outputs, judge.data_outputs, limit))
    if not samples:
        raise ValueError(f"{data} has no samples with {condition} maps")
    out.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    if generated is not None:
        runs.append(Run("generated", Path(generated)))
    else:
        from evaluation.generate import Generator

        gen = Generator(model, base, settings)
        named = [(f"controlnet@{s:g}" if len(scales) > 1 else "controlnet", s) for s in scales]
        named += [("no-control", None)] if baseline else []
        for name, scale in named:
            run = Run(name, out / "images" / name, model if scale is not None else None, base,
                      scale)  # fmt: skip
            made = gen.run(samples, condition, run.folder, scale)
            say(f"{name}: {made} images generated, "
                f"{len(samples) * settings.images_per_key - made} already there")  # fmt: skip
            runs.append(run)
    metrics = list(METRICS[kind])
    for run in runs:
        score_run(run, judge, samples, condition, say=say)
    extra, notes = quality.measure(runs, samples, say=say)
    metrics += [m for m in extra if m not in metrics]
    rows = [r for run in runs for r in run.rows]
    summary = {
        "data": data, "condition": condition, "kind": kind, "protocol": protocol or None,
        "judge": {"annotator": condition, "params": dict(judge.annotator.config),
                  "weights": judge.annotator.weights_identity()},
        "settings": asdict(settings) if settings is not None else None,
        "metrics": metrics, "notes": notes,
        "runs": [report.summarize({"name": r.name, "model": r.model, "base": r.base,
                                   "scale": r.scale, "counts": r.counts, "quality": r.quality},
                                  r.rows, metrics)
                 for r in runs],
    }  # fmt: skip
    first, higher = metrics[0], METRICS[kind][metrics[0]]
    grids = {r.name: grid(r, judge, samples, condition, first, higher) for r in runs if r.rows}
    report.write_json(out / "summary.json", summary)
    report.write_csv(out / "samples.csv", rows, metrics)
    report.write_html(out / "report.html", summary, rows, grids, notes)
    return summary


def main_print(summary: dict[str, Any]) -> None:
    """The summary table on stdout."""
    from evaluation.report import markdown_table

    print(markdown_table(summary), file=sys.stdout)
