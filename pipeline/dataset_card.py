"""``OUT/README.md``: a Hugging Face dataset card written at the end of a build.

Its ``configs:`` point the train split at ``shards/*.tar``, so ``datasets.load_dataset(OUT,
split="train")`` reads the shards with the webdataset builder (without it, the Parquet files
of ``plan/`` and ``index/`` are mixed in and loading fails). It lists the columns (image,
caption, one image per map), the annotators with versions, parameters, weights and licences,
and the counts. A README.md hintset did not write is never touched.
"""

from __future__ import annotations

from typing import Any

import yaml

from pipeline.storage import Storage

CARD = "README.md"
#: the line that marks a card as hintset's own (a README.md without it is the user's)
MARK = "<!-- hintset dataset card: rewritten by every build; delete this line to keep edits -->"
#: licence of what made a map, by weights file or model id; maps made by code alone need none
LICENCES = {
    "body_pose_model.pth": "OpenPose (CMU): non-commercial research use only",
    "hand_pose_model.pth": "OpenPose (CMU): non-commercial research use only",
    "nvidia/segformer-b0-finetuned-ade-512-512": "other (NVIDIA SegFormer licence)",
    "depth-anything/Depth-Anything-V2-Small-hf": "apache-2.0",
    "depth-anything/Depth-Anything-V2-Base-hf": "cc-by-nc-4.0",
    "depth-anything/Depth-Anything-V2-Large-hf": "cc-by-nc-4.0",
}
MEDIAPIPE = "apache-2.0 (models bundled in mediapipe)"


def is_own_card(text: str) -> bool:
    """True when ``text`` is a card hintset wrote (it may rewrite it)."""
    return MARK in text


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` samples."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):  # fmt: skip
        if n < limit:
            return name
    return "n>10M"


def map_columns(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(column, annotator) for every PNG map the shards hold, in annotator order."""
    return [(f"{out}.png", a["name"]) for a in manifest.get("annotators", [])
            for out in a.get("outputs", [])]  # fmt: skip


def weights_licence(entry: dict[str, Any]) -> str:
    """Licence of one weights entry of the manifest, or where to look it up."""
    for key in (entry.get("model"), entry.get("file"), entry.get("repo_id")):
        if key in LICENCES:
            return LICENCES[key]
    source = entry.get("repo_id") or entry.get("model") or "its source"
    return f"not recorded: see {source}"


def annotator_licence(info: dict[str, Any]) -> str:
    """Licences of what made an annotator's maps: its weights', MediaPipe's, or none needed."""
    if info.get("weights"):
        return "; ".join(sorted({weights_licence(w) for w in info["weights"]}))
    if info["name"] in ("face",) or info.get("params", {}).get("backend") == "mediapipe":
        return MEDIAPIPE
    return "none needed (no model weights)"


def front_matter(manifest: dict[str, Any]) -> dict[str, Any]:
    """The card's metadata: the config that loads the shards, the declared columns, tags."""
    keep_original = manifest["config"].get("keep_original")
    images = ["jpg", "png", "webp"] if keep_original else ["jpg"]  # originals keep their format
    features = [{"name": "__key__", "dtype": "string"}]
    features += [{"name": ext, "dtype": "image"} for ext in images]
    features += [{"name": "txt", "dtype": "string"}]
    features += [{"name": col, "dtype": "image"} for col, _ in map_columns(manifest)]
    names = sorted({a["name"] for a in manifest.get("annotators", [])})
    return {
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": "shards/*.tar"}]}],
        "dataset_info": {"features": features},
        "license": "other",
        "task_categories": ["text-to-image", "image-to-image"],
        "tags": ["controlnet", "hintset", "webdataset", *names],
        "size_categories": [size_category(manifest.get("totals", {}).get("ok", 0))],
    }  # fmt: skip


def card_text(manifest: dict[str, Any]) -> str:
    """The whole README.md for a finished build."""
    totals = manifest.get("totals", {})
    lines = [
        "---",
        yaml.safe_dump(front_matter(manifest), sort_keys=False, allow_unicode=True).strip(),
        "---",
        MARK,
        "",
        "# ControlNet training data built with hintset",
        "",
        '`datasets.load_dataset("path/to/this/folder", split="train")` reads `shards/*.tar` '
        "(WebDataset): one row per sample with `__key__`, the image, its caption `txt` and one "
        "image per map. The per-sample JSON (`json`, and maps such as `pose.json`) is in the "
        'tars too: `load_dataset("webdataset", data_files="shards/*.tar")` infers every column. '
        "`index/*.parquet` has one row per input, failures included; `manifest.json` has "
        "everything below.",
        "",
        "| samples | ok | failed | filtered | shards | tar bytes |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {totals.get('samples', 0)} | {totals.get('ok', 0)} | {totals.get('failed', 0)} | "
        f"{totals.get('filtered', 0)} | {totals.get('shards', 0)} | {totals.get('tar_bytes', 0)} |",
        "",
        "## Maps",
        "",
        "| column | annotator | version | parameters | weights (sha256) | licence |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    by_name = {a["name"]: a for a in manifest.get("annotators", [])}
    for column, name in map_columns(manifest):
        a = by_name[name]
        params = ", ".join(f"{k}={v}" for k, v in sorted(a.get("params", {}).items()))
        weights = ", ".join(f"{w.get('model') or w.get('repo_id', '')}/{w.get('file', '')} "
                            f"({w.get('sha256', '')[:12]})" for w in a.get("weights", []))  # fmt: skip
        lines.append(f"| `{column}` | {name} | {a.get('version', '')} | {cell(params)} | "
                     f"{cell(weights) or 'none'} | {annotator_licence(a)} |")  # fmt: skip
    config = manifest["config"]
    lines += [
        "",
        f"Images: short side {config.get('resolution')} px"
        + (" (originals kept)" if config.get("keep_original") else ", JPEG quality 95")
        + "; maps are pixel-aligned with the image.",
    ]
    if captioner := manifest.get("captioner"):
        lines.append(f"Captions were generated for {totals.get('captions_generated', 0)} samples "
                     f"by `{captioner.get('model', captioner)}`.")  # fmt: skip
    lines += [
        "",
        "Licence: the photos and captions keep their own licence, which hintset does not "
        "know; the licences above are those of the models that made the maps.",
        "",
    ]
    return "\n".join(lines)


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def write_dataset_card(storage: Storage, manifest: dict[str, Any]) -> bool:
    """Write (atomically) or refresh hintset's card; leave a user's README.md alone (False)."""
    if storage.exists(CARD):
        if not is_own_card(storage.read_bytes(CARD).decode("utf-8", "replace")):
            return False
    storage.write_bytes(CARD, card_text(manifest).encode())
    return True
