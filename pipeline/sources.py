"""Find inputs anywhere fsspec reaches: image folders and files, WebDataset tars, Parquet/CSV/JSONL lists.

Driver side: this module looks at input FILES (listing folders, reading list metadata)
and never at samples; :mod:`pipeline.plan` turns what it finds into units.
Local paths, ``file://``, ``s3://``, ``gs://`` and ``http(s)://`` are all accepted.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline import layout
from pipeline.lists import CAPTION_COLUMNS, PATH_COLUMNS
from pipeline.reader import filesystem, is_local, open_url, read_url

#: File endings treated as images when walking folders.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
TAR_EXTENSIONS = (".tar",)
LIST_EXTENSIONS = (".parquet", ".csv", ".jsonl")


@dataclass(frozen=True)
class Input:
    """One input argument after expansion: what it is and its absolute location."""

    kind: str  # "folder" | "image" | "tar" | "list"
    url: str  # absolute local path or fsspec URL (the identity used by the plan)
    rel: str  # name relative to the input root (a file given directly: its base name)


@dataclass(frozen=True)
class ImageFile:
    """An image found by listing a folder, with its sidecar caption file if there is one."""

    url: str
    rel: str  # relative to its input folder, extension kept
    caption_url: str = ""


def absolute(url: str) -> str:
    """The identity of an input: an absolute local path (cwd-independent) or the URL itself."""
    if is_local(url):
        return os.path.abspath(url.removeprefix("file://"))
    return url.rstrip("/")


def resolve_inputs(inputs: Iterable[str]) -> list[Input]:
    """Expand globs and brace patterns and classify each input; FileNotFoundError if missing."""
    found: list[Input] = []
    for item in map(str, inputs):
        try:
            urls = expand(item)
        except RecursionError:  # a pattern with hundreds of glob parts (a pasted list)
            urls = []
        if not urls:
            shown = item if len(item) <= 200 else f"{item[:200]}..."
            raise FileNotFoundError(f"input not found: {shown}")
        for url in urls:
            found.append(classify(url))
    return found


def classify(url: str) -> Input:
    """What kind of input ``url`` is (a folder, a tar, a list or an image)."""
    url = absolute(url)
    lower = url.lower()
    name = url.rstrip("/").rsplit("/", 1)[-1]
    kind = ("tar" if lower.endswith(TAR_EXTENSIONS) else
            "list" if lower.endswith(LIST_EXTENSIONS) else "image")  # fmt: skip
    if is_local(url):
        if os.path.isdir(url):
            return Input("folder", url, "")
        if not os.path.isfile(url):
            raise FileNotFoundError(f"input not found: {url}")
        return Input(kind, url, name)
    if url.startswith(("http://", "https://")):
        return Input(kind, url, name)  # http has no folder listing
    fs = filesystem(url.split("://", 1)[0])
    path = fs._strip_protocol(url)
    try:
        if fs.isdir(path):
            return Input("folder", url, "")
        if not fs.isfile(path):
            raise FileNotFoundError(f"input not found: {url}")
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. no credentials, unreachable endpoint
        raise FileNotFoundError(f"input not readable: {url}: {' '.join(str(err).split())}") from None  # fmt: skip
    return Input(kind, url, name)


def expand(pattern: str) -> list[str]:
    """Expand brace notation (``data-{000..009}.tar``) and globs into sorted existing inputs.

    A path that exists as written is taken as is, even with glob characters (``photos[1]/``).
    """
    import braceexpand

    urls: list[str] = []
    for item in braceexpand.braceexpand(pattern):
        if not glob.has_magic(item) or _exists(item):
            urls.append(item)
        elif is_local(item):
            urls += sorted(glob.glob(item.removeprefix("file://")))
        else:
            protocol = item.split("://", 1)[0]
            urls += sorted(f"{protocol}://{p}" for p in filesystem(protocol).glob(item))
    return urls


def _exists(url: str) -> bool:
    """True when ``url`` names an existing file or folder (False when it cannot be checked)."""
    if is_local(url):
        return os.path.exists(url.removeprefix("file://"))
    try:
        return filesystem(url.split("://", 1)[0]).exists(url)
    except Exception:  # noqa: BLE001 - unreachable or no credentials: reported by the caller
        return False


def walk_folder(root: str, exclude: Iterable[str] = ()) -> Iterator[ImageFile]:
    """Images below ``root`` in sorted order, skipping hidden names, ``exclude`` and hintset outputs.

    Local symlinked folders are followed once (a link back up the tree is not entered again).
    """
    excluded = {absolute(e) for e in exclude}
    if is_local(root):
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            names = set(dirnames) | set(filenames)
            read = functools.partial(_read_local, dirpath)
            hintset_wrote = os.path.abspath(dirpath) in excluded or _is_output(names, read)
            if real in seen or (hintset_wrote and dirpath != root):
                dirnames[:] = []
                continue
            seen.add(real)
            # an input root that is also the output (-o into the input folder): its own
            # images are inputs; the folders hintset writes there are not
            skip = set(layout.OUTPUT_NAMES) if hintset_wrote else set()
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in skip)
            yield from _images(root, dirpath, filenames)
        return
    protocol = root.split("://", 1)[0]
    fs = filesystem(protocol)
    for dirpath, dirnames, filenames in fs.walk(fs._strip_protocol(root)):
        url = f"{protocol}://{dirpath}"
        names = set(dirnames) | set(filenames)
        read = functools.partial(_read_remote, fs, dirpath)
        hintset_wrote = url in excluded or _is_output(names, read)
        if hintset_wrote and url.rstrip("/") != root.rstrip("/"):
            dirnames[:] = []
            continue
        skip = set(layout.OUTPUT_NAMES) if hintset_wrote else set()
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in skip)
        yield from _images(root, url, filenames)


def _read_local(folder: str, name: str) -> bytes:
    return Path(folder, name).read_bytes()


def _read_remote(fs, folder: str, name: str) -> bytes:
    return fs.cat_file(f"{folder}/{name}")


def _images(root: str, folder: str, filenames: Iterable[str]) -> Iterator[ImageFile]:
    names = set(filenames)
    prefix = folder[len(root) :].strip("/")
    for name in sorted(names):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
            continue
        rel = f"{prefix}/{name}" if prefix else name
        sidecar = f"{folder}/{stem}.txt" if f"{stem}.txt" in names else ""
        yield ImageFile(f"{folder}/{name}", rel, sidecar)


def _is_output(names: set[str], read) -> bool:
    """A folder hintset wrote: a build dataset, or an annotate output (report.json by hintset)."""
    if layout.is_output_folder(names):
        return True
    if "report.json" in names:
        try:
            return "hintset_version" in json.loads(read("report.json"))
        except (OSError, ValueError):
            return False
    return False


def find_images(inputs: Iterable[str | os.PathLike], exclude: Iterable[str] = ()) -> list[tuple[Path, Path]]:  # fmt: skip
    """(file, path relative to its input root) for every local image below the inputs, sorted.

    A file given explicitly is taken whatever its ending (so a bad file is reported,
    not silently skipped); folders contribute files with an image ending. ``exclude``
    (the output folder) and folders hintset wrote are not entered.
    """
    found: dict[Path, tuple[Path, Path]] = {}
    for item in inputs:
        root = Path(item)
        if root.is_file():
            found.setdefault(root.resolve(), (root, Path(root.name)))
        elif root.is_dir():
            for image in walk_folder(str(root), exclude):
                path = Path(image.url)
                found.setdefault(path.resolve(), (path, Path(image.rel)))
        else:
            raise FileNotFoundError(f"input not found: {root}")
    return sorted(found.values(), key=lambda pair: (str(pair[1]), str(pair[0])))


def load_captions(url: str) -> dict[str, str]:
    """A captions file (JSONL, CSV or Parquet; file and caption columns) as file -> caption.

    Errors name the file and, for JSONL, the line.
    """
    lower = url.lower()
    try:
        if lower.endswith((".jsonl", ".json")):
            rows = []
            for number, line in enumerate(read_url(url).decode("utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as err:
                        raise ValueError(f"{url} line {number}: not JSON ({err})") from None
            if any(not isinstance(r, dict) for r in rows):
                number = next(i for i, r in enumerate(rows, 1) if not isinstance(r, dict))
                raise ValueError(f"{url} line {number}: expected a JSON object")
        elif lower.endswith(".csv"):
            import csv
            import io

            rows = list(csv.DictReader(io.StringIO(read_url(url).decode("utf-8"))))
        elif lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            with open_url(url, seekable=True) as handle:
                rows = pq.read_table(handle, use_threads=False).to_pylist()
        else:
            raise ValueError(f"{url}: captions must be a .jsonl, .csv or .parquet file")
    except UnicodeDecodeError as err:
        raise ValueError(f"{url}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"captions file not found: {url}") from None
    names = set().union(*(r.keys() for r in rows)) if rows else set()
    file_col = next((c for c in PATH_COLUMNS if c in names), None)
    text_col = next((c for c in CAPTION_COLUMNS if c in names), None)
    if file_col is None or text_col is None:
        raise ValueError(f"{url}: needs a file column {list(PATH_COLUMNS)} and a caption column "
                         f"{list(CAPTION_COLUMNS)}; has {sorted(names)}")  # fmt: skip
    return {str(r[file_col]): str(r[text_col]) for r in rows
            if r.get(text_col) is not None and r.get(file_col) is not None}  # fmt: skip
