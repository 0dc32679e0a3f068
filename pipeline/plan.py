"""Plan a build: turn inputs into units (one per output shard), persisted in ``plan/``.

Each planning run that finds new inputs appends one Parquet file
(``plan/<first unit id>.parquet``, one row per unit). A rerun reads them back, so
finished shards are never reassigned and inputs added later go into new units. Tar and
list units are a few numbers each; only folder chunks carry their file names (the
driver had to list those files anyway). Unit identity is the absolute input location,
so a rerun from another directory, or with an absolute instead of a relative path,
continues the same dataset.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import Any

from pipeline import layout
from pipeline.lists import list_ranges
from pipeline.sources import (
    ImageFile,
    Input,
    load_captions,
    resolve_inputs,
    walk_folder,
)
from pipeline.storage import Storage
from pipeline.units import Unit, hashed, make_key

#: columns holding one entry per file (only folder chunks have them)
FILE_COLUMNS = ("urls", "keys", "rels", "captions", "caption_urls")


def plan_schema():
    import pyarrow as pa

    scalars = [("id", pa.int64()), ("kind", pa.string()), ("url", pa.string()),
               ("ns", pa.string()), ("start", pa.int64()), ("stop", pa.int64()),
               ("offset", pa.int64()), ("end", pa.int64())]  # fmt: skip
    return pa.schema(scalars + [(c, pa.list_(pa.string())) for c in FILE_COLUMNS])


def read_plan(storage: Storage, files: bool = True) -> list[Unit]:
    """Units planned by earlier runs, in id order; ``files=False`` skips per-file columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [n for n in storage.list(layout.PLAN) if n.endswith(".parquet")]
    schema = plan_schema()
    columns = None if files else [f.name for f in schema if f.name not in FILE_COLUMNS]
    units: list[Unit] = []
    for name in names:
        data = storage.read_bytes(f"{layout.PLAN}/{name}")
        table = pq.read_table(pa.BufferReader(data), columns=columns, use_threads=False)
        for row in table.to_pylist():
            units.append(Unit(**{k: tuple(v) if isinstance(v, list) else v for k, v in row.items()}))  # fmt: skip
    return sorted(units, key=lambda u: u.id)


def write_plan(storage: Storage, units: list[Unit]) -> None:
    """Append ``units`` as one plan file (written atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = plan_schema()
    table = pa.Table.from_pylist(
        [{f.name: list(getattr(u, f.name)) if f.name in FILE_COLUMNS else getattr(u, f.name)
          for f in fields(Unit)} for u in units], schema=schema)  # fmt: skip
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(f"{layout.PLAN}/{units[0].id:05d}.parquet", sink.getvalue().to_pybytes())


def plan(storage: Storage, inputs: Iterable[str], shard_size: int, **options: Any) -> list[Unit]:
    """All units: those planned before, then new units for inputs not planned yet (written).

    ``options``: those of :func:`plan_units`.
    """
    units, new = plan_units(storage, inputs, shard_size, **options)
    if new:
        write_plan(storage, new)
    return units


def plan_units(
    storage: Storage,
    inputs: Iterable[str],
    shard_size: int,
    *,
    captions: str | None = None,
    exclude: Iterable[str] = (),
    done: set[int] = frozenset(),
    fresh: bool = False,
) -> tuple[list[Unit], list[Unit]]:
    """(all units, the new ones) without writing anything, so a bad input (missing, a list
    without a path column, no images at all: FileNotFoundError / ValueError) stops a build
    before it changes its output. ``fresh`` ignores earlier plans (``--overwrite``).

    ``done`` (finished shard ids) lets a rerun over lists and tars skip reading any
    per-file plan data.
    """
    found = resolve_inputs(inputs)
    has_images = any(i.kind in ("folder", "image") for i in found)
    units = [] if fresh else read_plan(storage, files=False)
    if units and (has_images or any(u.kind == "files" and u.id not in done for u in units)):
        units = read_plan(storage, files=True)
    new = new_units(found, units, shard_size, captions=captions, exclude=exclude)
    if not units and not new:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}")
    return units + new, new


def new_units(found: list[Input], planned: list[Unit], shard_size: int, *,
              captions: str | None = None, exclude: Iterable[str] = ()) -> list[Unit]:  # fmt: skip
    """Units for the inputs in ``found`` that ``planned`` does not cover, numbered after it.

    In memory, nothing written: ``hintset annotate`` calls it with ``planned=[]``.
    """
    known = {u.url for u in planned if u.kind != "files"}
    known.update(url for u in planned for url in u.urls)
    namespaces = {u.ns for u in planned if u.ns}
    next_id = planned[-1].id + 1 if planned else 0
    new: list[Unit] = []
    for item in found:
        if item.kind not in ("tar", "list") or item.url in known:
            continue
        known.add(item.url)
        ns = unique(make_key(item.rel.rsplit(".", 1)[0]), namespaces, item.url)
        if item.kind == "tar":
            new.append(Unit(next_id, "tar", url=item.url, ns=ns))
            next_id += 1
            continue
        for start, stop, offset, end in list_ranges(item.url, shard_size):
            new.append(Unit(next_id, "list", url=item.url, ns=ns, start=start, stop=stop,
                            offset=offset, end=end))  # fmt: skip
            next_id += 1
    if any(i.kind in ("folder", "image") for i in found):
        new += file_units(found, planned, known, shard_size, next_id, captions, exclude)
    return new


def unique(name: str, used: set[str], identity: str) -> str:
    """``name``, or ``name`` with a hash of ``identity`` appended if it is taken; recorded in ``used``."""
    while name in used:
        name = hashed(name, identity)
    used.add(name)
    return name


def file_units(found, planned: list[Unit], known: set[str], size: int, next_id: int,
               captions: str | None, exclude: Iterable[str]) -> list[Unit]:  # fmt: skip
    """Chunks of ``size`` image files not planned before, keys unique among all folder images."""
    exclude = list(exclude)
    images: dict[str, ImageFile] = {}
    for item in found:
        if item.kind == "image":
            images.setdefault(item.url, ImageFile(item.url, item.rel, _sidecar(item.url)))
        elif item.kind == "folder":
            for image in walk_folder(item.url, exclude):
                images.setdefault(image.url, image)
    fresh = sorted((i for i in images.values() if i.url not in known), key=lambda i: (i.rel, i.url))  # fmt: skip
    if not fresh:
        return []
    texts = load_captions(captions) if captions else {}
    used = {key for u in planned for key in u.keys}
    units = []
    for chunk in _chunks(fresh, size):
        keys = tuple(unique(make_key(i.rel.rsplit(".", 1)[0]), used, i.url) for i in chunk)
        units.append(Unit(next_id, "files", urls=tuple(i.url for i in chunk), keys=keys,
                          rels=tuple(i.rel for i in chunk),
                          captions=tuple(texts.get(i.rel, texts.get(i.rel.rsplit("/", 1)[-1]))
                                         for i in chunk),
                          caption_urls=tuple(i.caption_url for i in chunk)))  # fmt: skip
        next_id += 1
    return units


def _sidecar(url: str) -> str:
    """The ``<stem>.txt`` beside a single image given directly, if it exists ('' otherwise)."""
    from pipeline.reader import split_url

    candidate = os.path.splitext(url)[0] + ".txt"
    fs, path = split_url(candidate)
    try:
        return candidate if (os.path.isfile(path) if fs is None else fs.isfile(path)) else ""
    except Exception:  # noqa: BLE001 - http and friends may not answer isfile
        return ""


def _chunks(items: list[ImageFile], size: int) -> Iterator[list[ImageFile]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]
