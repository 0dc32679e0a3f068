"""The mirrored folder of ``hintset annotate``: ``OUT/<rel dir>/<stem>.<map>.png`` per input.

For this writer a sample's key is its output base relative to OUT (``sub/dog``), made
unique by :func:`output_bases`. ``made_by.jsonl`` records which settings made each
output, so a rerun with other settings redoes or refuses, never mislabels old maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from annotators import create
from pipeline.atomic import atomic_write
from pipeline.encode import encode_jpeg, encode_json, encode_text

if TYPE_CHECKING:
    from pipeline.caption import CaptionSpec
    from pipeline.worker import AnnotatorSpec
    from pipeline.writers import Sample

MADE_BY = "made_by.jsonl"
IMAGE = "image"  # the --save-image output group
CAPTION = "caption"  # the --caption output group


def output_bases(rels: list[Path]) -> list[str]:
    """A distinct output base per input (posix, relative to OUT), in the order given.

    ``dog.jpg`` -> ``dog``; inputs sharing a stem keep their extension (``dog_jpg``,
    ``dog_png``); a base still taken by another input (``x_jpg.png`` beside ``x.jpg`` and
    ``x.png``) gets a short hash of the input's relative path.
    """
    stems = Counter(rel.with_suffix("").as_posix() for rel in rels)
    wanted = []
    for rel in rels:
        base = rel.with_suffix("")
        if stems[base.as_posix()] > 1:
            base = rel.with_name(rel.name.replace(".", "_"))
        wanted.append(base.as_posix())
    taken = Counter(wanted)
    return [
        f"{base}_{hashlib.sha1(rel.as_posix().encode()).hexdigest()[:8]}"
        if taken[base] > 1
        else base
        for base, rel in zip(wanted, rels, strict=True)
    ]


def output_groups(specs: list[AnnotatorSpec], resolution: int, save_image: bool,
                  filters: list[str] | tuple[str, ...] = (), caption: CaptionSpec | None = None,
                  ) -> dict[str, tuple[dict[str, Any], list[str]]]:  # fmt: skip
    """Output group (annotator name, ``image`` or ``caption``) -> (the settings that make it,
    its suffixes).

    ``--filter`` rules, when given, are part of every group's settings: which inputs have
    outputs depends on them.
    """
    only = {"filters": list(filters)} if filters else {}
    groups = {}
    for spec in specs:
        annotator = create(spec.name, **spec.params)
        info = annotator.info()
        settings = {"annotator": annotator.name, "version": info["version"],
                    "params": info["params"], "resolution": resolution, **only}  # fmt: skip
        suffixes = [f"{s}.png" for s in annotator.outputs]
        suffixes += [f"{s}.json" for s in annotator.data_outputs]
        groups[annotator.name] = (settings, suffixes)
    if save_image:
        groups[IMAGE] = ({"image": "jpg q95", "resolution": resolution, **only},
                         [f"{IMAGE}.jpg"])  # fmt: skip
    if caption:
        groups[CAPTION] = ({"caption": caption.config(), "resolution": resolution, **only},
                           [f"{CAPTION}.txt"])  # fmt: skip
    return groups


def settings_id(settings: dict[str, Any]) -> str:
    """A short stable id of one group's settings."""
    return hashlib.sha256(encode_json(settings)).hexdigest()[:16]


class MadeBy:
    """``OUT/made_by.jsonl``: for each output base, the settings id of each output group.

    Lines are appended as outputs are written (a killed run keeps what it recorded; a
    torn last line is ignored) and the file is compacted at the end of a run.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out) / MADE_BY
        self.settings: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, str]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if "settings" in entry:
                    self.settings[entry["id"]] = entry["settings"]
                elif "output" in entry:
                    self.outputs.setdefault(entry["output"], {}).update(entry["made"])
        self.handle: Any = None

    def state(self, base: str, out: Path, groups: dict[str, tuple[dict, list[str]]],
              ids: dict[str, str]) -> tuple[str, str]:  # fmt: skip
        """("done" | "todo" | "conflict", the group in conflict) for one output base."""
        made = self.outputs.get(base, {})
        done = True
        for group, (_, suffixes) in groups.items():
            exists = all((out / f"{base}.{s}").exists() for s in suffixes)
            if exists and made.get(group) not in (None, ids[group]):
                return "conflict", group
            done = done and exists and made.get(group) == ids[group]
        return ("done" if done else "todo"), ""

    def describe_change(self, group: str, settings: dict[str, Any]) -> str:
        """What differs between the recorded settings of ``group`` and ``settings``."""
        old_ids = {m[group] for m in self.outputs.values() if group in m}
        for old in (self.settings.get(i) for i in sorted(old_ids)):
            if old and old != settings:
                diffs = [f"{k} was {old.get(k)!r}, now {settings.get(k)!r}"
                         for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]  # fmt: skip
                return "; ".join(diffs)
        return "other settings"

    def start(self, groups: dict[str, tuple[dict, list[str]]], ids: dict[str, str]) -> None:
        """Open the file for appending and record this run's settings."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a")  # noqa: SIM115 - closed by finish()
        for group, (settings, _) in groups.items():
            if ids[group] not in self.settings:
                self.settings[ids[group]] = settings
                self._append({"id": ids[group], "settings": settings})

    def record(self, base: str, made: dict[str, str]) -> None:
        """Outputs of ``base`` were just written by these settings ids."""
        self.outputs.setdefault(base, {}).update(made)
        self._append({"output": base, "made": made})

    def _append(self, entry: dict[str, Any]) -> None:
        self.handle.write(json.dumps(entry, sort_keys=True) + "\n")
        self.handle.flush()

    def finish(self) -> None:
        """Close and compact the file (one line per settings id and per output)."""
        if self.handle:
            self.handle.close()
            self.handle = None
        used = {i for made in self.outputs.values() for i in made.values()}
        lines = [json.dumps({"id": i, "settings": s}, sort_keys=True)
                 for i, s in sorted(self.settings.items()) if i in used]  # fmt: skip
        lines += [json.dumps({"output": base, "made": made}, sort_keys=True)
                  for base, made in sorted(self.outputs.items())]  # fmt: skip
        atomic_write(self.path, ("\n".join(lines) + "\n").encode() if lines else b"")


def record(source: str, status: str, error: str = "", **extra: Any) -> dict[str, Any]:
    """One line of the annotate report for one input."""
    return {"source": source, "status": status, "error": error, **extra}


class FilesWriter:
    """Writes each sample's maps (and ``--save-image`` JPEG, ``--caption`` text) beside its
    output base under OUT."""

    def __init__(self, out: str | os.PathLike, save_image: bool = False,
                 caption: bool = False) -> None:  # fmt: skip
        self.out, self.save_image, self.caption = Path(out), save_image, caption
        self.records: list[dict[str, Any]] = []

    def encode(self, sample: Sample) -> None:
        if self.save_image:
            sample.stored[f"{IMAGE}.jpg"] = encode_jpeg(sample.result.image)
        if self.caption:  # empty when the model generated nothing: the file still says so
            sample.stored[f"{CAPTION}.txt"] = encode_text(sample.caption or "", "caption")

    def write(self, sample: Sample) -> None:
        result, ref = sample.result, sample.ref
        if result.status != "ok":
            self.records.append(record(ref.source, result.status, result.error))
            return
        start = time.perf_counter()
        try:
            for suffix, data in [*result.files.items(), *sample.stored.items()]:
                atomic_write(self.out / f"{ref.key}.{suffix}", data, fsync=False)
        except OSError as err:
            self.records.append(record(ref.source, "failed", f"write: {err}"))
            return
        result.timings["write"] = time.perf_counter() - start
        self.records.append(record(ref.source, "ok", timings=result.timings, stats=result.stats,
                                   size=list(result.size), output=ref.key))  # fmt: skip

    def close(self) -> list[dict[str, Any]]:
        return self.records

    def abort(self) -> None:
        """Nothing to drop: every file was written atomically."""
