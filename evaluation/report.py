"""REPORT/summary.json, REPORT/samples.csv and REPORT/report.html (static, images embedded)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import atomic_write


def interval(values: list[float], resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean and its 95% bootstrap interval (percentile, ``resamples`` draws, fixed seed)."""
    a = np.asarray(values, np.float64)
    if not len(a):  # nothing scored: no numbers (JSON has no NaN)
        return {"mean": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, len(a), (resamples, len(a)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(a.mean()), "low": float(low), "high": float(high), "n": len(a)}


def per_key(rows: list[dict[str, Any]], metric: str) -> list[float]:
    """One value per key (the mean over its images): keys, not seeds, are the sampled unit."""
    by_key: dict[str, list[float]] = {}
    for row in rows:
        if row.get(metric) is not None:
            by_key.setdefault(row["key"], []).append(row[metric])
    return [float(np.mean(v)) for v in by_key.values()]


def summarize(run: dict[str, Any], rows: list[dict[str, Any]], metrics: list[str]) -> dict:
    """One run of summary.json: what ran, counts, mean and 95% interval of each metric."""
    return {**run, "metrics": {m: interval(per_key(rows, m)) for m in metrics}}


def fmt(stat: dict[str, float]) -> str:
    """``0.523 [0.488, 0.561]``."""
    if not stat.get("n"):
        return "-"
    return f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def markdown_table(summary: dict[str, Any]) -> str:
    """The runs side by side as a Markdown table (what a model card can include)."""
    metrics = summary["metrics"]
    lines = ["| run | samples | " + " | ".join(metrics) + " |",
             "| --- | ---: |" + " ---: |" * len(metrics)]  # fmt: skip
    for run in summary["runs"]:
        cells = [fmt(run["metrics"].get(m, {})) for m in metrics]
        lines.append(
            f"| {run['name']} | {run['counts']['scored_keys']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=False).encode() + b"\n")


def write_csv(path: Path, rows: list[dict[str, Any]], metrics: list[str]) -> None:
    """One line per generated image and run: run, key, image index, file, each metric."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["run", "key", "image", "file", *metrics], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, out.getvalue().encode())


def png_uri(rgb: np.ndarray, max_side: int = 192) -> str:
    """A data: URI of a small PNG of ``rgb`` (longest side at most ``max_side``)."""
    from PIL import Image

    img = Image.fromarray(rgb)
    img.thumbnail((max_side, max_side), Image.BOX)  # averages: thin edges stay visible
    data = io.BytesIO()
    img.save(data, format="PNG")
    return "data:image/png;base64," + base64.b64encode(data.getvalue()).decode()


def viewable(a: np.ndarray) -> np.ndarray:
    """A map as 8-bit RGB to look at (16-bit scaled, grey repeated)."""
    a = np.asarray(a)
    if a.dtype == np.uint16:
        a = (a // 257).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a[..., :3]


def histogram_uri(values: dict[str, list[float]], metric: str) -> str:
    """A PNG histogram (data: URI) of ``metric`` per run, overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 2.8))
    finite = [v for vs in values.values() for v in vs if np.isfinite(v)]
    bins = np.histogram_bin_edges(finite or [0, 1], bins=20)
    for name, vs in values.items():
        ax.hist(vs, bins=bins, alpha=0.5, label=name)
    ax.set_xlabel(metric)
    ax.set_ylabel("keys")
    ax.legend(fontsize=7)
    fig.tight_layout()
    data = io.BytesIO()
    fig.savefig(data, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(data.getvalue()).decode()


def write_html(path: Path, summary: dict[str, Any], rows: list[dict[str, Any]],
               grids: dict[str, list[dict[str, Any]]], notes: list[str]) -> None:  # fmt: skip
    """report.html: the runs side by side, best and worst samples per run (condition |
    generated | re-annotated), one histogram per metric."""
    e = html.escape
    metrics = summary["metrics"]
    parts = ["<!doctype html><meta charset='utf-8'><title>hintset evaluate</title>",
             "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px}img{vertical-align:top;margin:1px}"
             "</style>",
             f"<h1>hintset evaluate: {e(summary['condition'])}</h1>",
             f"<p>data {e(summary['data'])}; mean [95% interval] over keys</p>"]  # fmt: skip
    parts += [f"<p>{e(n)}</p>" for n in notes]
    parts.append("<table><tr><th>run</th><th>model</th><th>scored keys</th><th>missing</th>"
                 + "".join(f"<th>{e(m)}</th>" for m in metrics) + "</tr>")  # fmt: skip
    for run in summary["runs"]:
        c = run["counts"]
        parts.append(f"<tr><td>{e(run['name'])}</td><td>{e(str(run.get('model') or '-'))}</td>"
                     f"<td>{c['scored_keys']}</td><td>{c['missing_keys']}</td>"
                     + "".join(f"<td>{fmt(run['metrics'].get(m, {}))}</td>" for m in metrics)
                     + "</tr>")  # fmt: skip
    parts.append("</table><h2>Histograms</h2>")
    for metric in metrics:
        values = {r["name"]: per_key([x for x in rows if x["run"] == r["name"]], metric)
                  for r in summary["runs"]}  # fmt: skip
        try:
            parts.append(f"<img alt='{e(metric)}' src='{histogram_uri(values, metric)}'>")
        except ImportError:  # the core install has no matplotlib: the tables still come out
            parts.append("<p>histograms need matplotlib: pip install 'hintset[train]'</p>")
            break
    for name, items in grids.items():
        parts.append(f"<h2>{e(name)}: best and worst samples</h2>"
                     "<p>condition | generated | re-annotated</p><table>")  # fmt: skip
        for item in items:
            tiles = "".join(f"<img src='{png_uri(t)}'>" for t in item["tiles"])
            parts.append(f"<tr><td>{e(item['label'])}<br>{e(item['key'])}<br>"
                         f"{e(item['caption'][:80])}</td><td>{tiles}</td></tr>")  # fmt: skip
        parts.append("</table>")
    atomic_write(path, "\n".join(parts).encode())
