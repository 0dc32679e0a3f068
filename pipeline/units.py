"""Units of work and what a worker makes of them: a unit expands into SampleRef records.

A unit is one output shard's worth of input, described in a few fields so the driver
never touches samples: one input tar, a row range of a list file, or a chunk of image
files found by listing a folder. :func:`iter_unit` runs in the worker.

Keys (unique in the dataset, no dots, stable across reruns):
- folder images: ``make_key(path relative to its input folder, without extension)``,
  e.g. ``sub_dog``; the driver lists these files anyway and resolves clashes among them
  (``a.jpg`` and ``a.png``) by appending ``_`` + 10 hex digits of the file's URL hash.
  ``make_key`` collapses runs of ``_``, so these keys never contain ``__``.
- tar members: ``{namespace}__{make_key(member key)}``; list rows: ``{namespace}__{row:09d}``.
  The namespace comes from the tar's or list's file name and is unique among all
  tars and lists of the dataset (the driver sees every input file); a key repeated
  inside one unit gets the hash suffix there. So keys of different units never collide.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from pipeline.lists import CAPTION_COLUMNS, PATH_COLUMNS, read_rows
from pipeline.sample_ref import SampleRef

_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def make_key(rel: str) -> str:
    """A WebDataset-safe key: letters, digits, ``-`` and single ``_`` between them."""
    return _UNSAFE.sub("_", rel).strip("_") or "sample"


def hashed(key: str, identity: str) -> str:
    """``key`` made distinct by a short hash of the sample's identity."""
    return f"{key}_{hashlib.sha1(identity.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Unit:
    """One shard's worth of input: a tar, a list row range, or a chunk of image files."""

    id: int  # the output shard id
    kind: str  # "files" | "tar" | "list"
    url: str = ""  # the tar or list file (absolute local path or fsspec URL)
    ns: str = ""  # key namespace of a tar or list
    start: int = 0  # list rows [start, stop)
    stop: int = 0
    offset: int = 0  # CSV/JSONL: byte offset of row ``start`` (Parquet: unused)
    end: int = -1  # CSV/JSONL: byte offset after row ``stop - 1``
    urls: tuple[str, ...] = ()  # files: the images
    keys: tuple[str, ...] = ()  # files: their keys
    rels: tuple[str, ...] = ()  # files: paths relative to their input folder
    captions: tuple[str | None, ...] = ()  # files: caption from --captions (None: none)
    caption_urls: tuple[str, ...] = ()  # files: sidecar .txt ("" if none)

    @property
    def name(self) -> str:
        return f"{self.id:05d}"

    @property
    def size(self) -> int:
        """Samples in the unit (-1 for a tar: unknown until it is read)."""
        if self.kind == "files":
            return len(self.urls)
        return self.stop - self.start if self.kind == "list" else -1


def iter_unit(unit: Unit) -> Iterator[SampleRef]:
    """The unit's samples in a fixed order, with unique keys; runs in the worker."""
    if unit.kind == "files":
        for i, url in enumerate(unit.urls):
            yield SampleRef(key=unit.keys[i], source=url, rel=unit.rels[i], url=url,
                            caption=unit.captions[i] if unit.captions else None,
                            caption_url=unit.caption_urls[i] if unit.caption_urls else "")  # fmt: skip
        return
    used: set[str] = set()
    refs = _tar_refs(unit) if unit.kind == "tar" else _list_refs(unit)
    for ref in refs:
        key = ref.key
        while key in used:
            key = hashed(key, f"{ref.source}#{len(used)}")
        used.add(key)
        yield ref if key == ref.key else replace(ref, key=key)


def _tar_refs(unit: Unit) -> Iterator[SampleRef]:
    """Stream the tar once, start to end; an unreadable rest becomes one failed record."""
    from pipeline.layout import iter_tar_samples, sample_image
    from pipeline.reader import open_url

    try:
        with open_url(unit.url) as handle:
            for member_key, sample in iter_tar_samples(handle):
                image = sample_image(sample)
                if image is None:
                    continue
                caption = sample.get("txt")
                yield SampleRef(
                    key=f"{unit.ns}__{make_key(member_key)}",
                    source=f"{unit.url}#{member_key}",
                    rel=member_key,
                    caption=None if caption is None else caption.decode("utf-8", "replace").strip(),
                    meta=sample.get("json", b"").decode("utf-8", "replace").strip(),
                    data=image[1],
                )
    except Exception as err:  # noqa: BLE001 - any unreadable tar is one failed input, not a failed build
        yield SampleRef(key=f"{unit.ns}__input", source=unit.url, data=b"",
                        error=f"input: {' '.join(str(err).split())}")  # fmt: skip


def _list_refs(unit: Unit) -> Iterator[SampleRef]:
    """The unit's rows streamed from its list; a row that cannot be read fails alone."""
    from pipeline.trust import InputRefused, resolve_row

    for row, values in read_rows(unit):
        key = f"{unit.ns}__{row:09d}"
        if isinstance(values, str):  # why the row cannot be read
            yield SampleRef(key=key, source=f"{unit.url}#{row}", data=b"", error=f"input: {values}")
            continue
        path_col = next((c for c in PATH_COLUMNS if c in values), "path column")
        text_col = next((c for c in CAPTION_COLUMNS if c in values), None)
        path = values.get(path_col)
        caption = values.get(text_col) if text_col else None
        caption = None if caption is None else str(caption)
        if not path:
            yield SampleRef(key=key, source=f"{unit.url}#{row}", caption=caption, data=b"",
                            error=f"input: row {row} has no {path_col}")  # fmt: skip
            continue
        path = str(path)
        try:
            url, reach = resolve_row(unit.url, path)
        except InputRefused as err:  # the rule: this row may not name that; nothing is read
            yield SampleRef(key=key, source=f"{unit.url}#{row}", rel=path, caption=caption,
                            data=b"", error=f"input: row {row}: {err}")  # fmt: skip
            continue
        yield SampleRef(key=key, source=url, rel=path, caption=caption, url=url, reach=reach)
