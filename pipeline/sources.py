"""Find inputs: image folders and files, WebDataset tars, and Parquet/CSV lists, with captions.

Every source yields :class:`Source` records in a deterministic order. A record says
where the image bytes are (a file, or a byte range inside a tar) so workers can read
them later; nothing is decoded here, so planning stays cheap and memory flat.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

#: File endings treated as images when walking folders.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
TAR_EXTENSIONS = (".tar",)
LIST_EXTENSIONS = (".parquet", ".csv")
PATH_COLUMNS = ("file", "path", "image", "filename", "file_name")
CAPTION_COLUMNS = ("caption", "text", "prompt")


@dataclass(frozen=True)
class Source:
    """One input sample: a stable id, where its image bytes are, its caption (None if absent)."""

    id: str  # stable identity: a path, or "tar_path#key"
    path: str  # file holding the bytes (an image file or a tar)
    caption: str | None = None
    offset: int = -1  # byte offset inside a tar (-1: the whole file)
    size: int = -1
    meta: str = ""  # JSON metadata that came with the input (tar .json member)
    rel: str = ""  # path relative to its input root, used to derive the key

    def read(self) -> bytes:
        """The image bytes."""
        with open(self.path, "rb") as handle:
            if self.offset < 0:
                return handle.read()
            handle.seek(self.offset)
            return handle.read(self.size)

    def to_dict(self) -> dict:
        return asdict(self)


def find_images(inputs: Iterable[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for every image below the inputs, sorted.

    A file given explicitly is taken whatever its ending (so a bad file is reported,
    not silently skipped); folders contribute files with an image ending.
    """
    found: dict[Path, tuple[Path, Path]] = {}
    for item in inputs:
        root = Path(item)
        if root.is_file():
            found.setdefault(root.resolve(), (root, Path(root.name)))
        elif root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    path = Path(dirpath) / name
                    if path.suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                        found.setdefault(path.resolve(), (path, path.relative_to(root)))
        else:
            raise FileNotFoundError(f"input not found: {root}")
    return sorted(found.values(), key=lambda pair: (str(pair[1]), str(pair[0])))


def expand(pattern: str) -> list[str]:
    """Expand brace notation (``data-{000..009}.tar``) and globs into sorted existing paths."""
    import braceexpand

    paths: list[str] = []
    for item in braceexpand.braceexpand(pattern):
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        paths += matches
    return paths


def load_captions(path: str | os.PathLike) -> dict[str, str]:
    """A captions file (JSONL, CSV or Parquet with file and caption columns) as file -> caption."""
    rows = read_table(path)
    file_col = _column(rows, PATH_COLUMNS, path)
    text_col = _column(rows, CAPTION_COLUMNS, path)
    return {str(r[file_col]): str(r[text_col]) for r in rows if r.get(text_col) is not None}


def read_table(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSONL, CSV or Parquet file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    if suffix == ".csv":
        import pyarrow.csv

        options = pyarrow.csv.ReadOptions(use_threads=False)  # see shard_writer.read_index
        return pyarrow.csv.read_csv(path, read_options=options).to_pylist()
    if suffix == ".parquet":
        from pipeline.shard_writer import read_index

        return read_index(path.read_bytes())
    raise ValueError(f"{path}: expected a .jsonl, .csv or .parquet file")


def _column(rows: list[dict], names: tuple[str, ...], path: str | os.PathLike) -> str:
    present = set(rows[0]) if rows else set()
    for name in names:
        if name in present:
            return name
    raise ValueError(f"{path}: needs one of the columns {list(names)}; has {sorted(present)}")


def caption_for(path: Path, rel: Path, captions: dict[str, str]) -> str | None:
    """Caption from the captions file (by relative path or file name) or a sidecar ``.txt``."""
    for name in (rel.as_posix(), path.name):
        if name in captions:
            return captions[name]
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        return sidecar.read_text(errors="replace").strip()
    return None


def iter_tar(path: str) -> Iterator[Source]:
    """Samples of a WebDataset tar (``{key}.jpg/.txt/.json``) as byte ranges, in tar order."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    order: list[str] = []
    with tarfile.open(path) as tar:
        for info in tar:
            if not info.isfile():
                continue
            name = info.name
            base = name.rsplit("/", 1)[-1]
            key, _, ext = base.partition(".")
            key = f"{name.rsplit('/', 1)[0]}/{key}" if "/" in name else key
            if key not in groups:
                groups[key] = {}
                order.append(key)
            groups[key][ext.lower()] = info
        for key in order:
            members = groups[key]
            image = next((members[e] for e in ("jpg", "jpeg", "png", "webp") if e in members), None)
            if image is None:
                continue
            text = _member_text(tar, members.get("txt"))
            meta = _member_text(tar, members.get("json")) or ""
            yield Source(id=f"{path}#{key}", path=path, caption=text, offset=image.offset_data,
                         size=image.size, meta=meta, rel=key)  # fmt: skip


def _member_text(tar: tarfile.TarFile, info: tarfile.TarInfo | None) -> str | None:
    if info is None:
        return None
    handle = tar.extractfile(info)
    return handle.read().decode("utf-8", errors="replace").strip() if handle else None


def iter_list(path: str) -> Iterator[Source]:
    """Samples of a Parquet/CSV list of image paths (relative to the list) with captions."""
    rows = read_table(path)
    if not rows:
        return
    file_col = _column(rows, PATH_COLUMNS, path)
    text_col = next((c for c in CAPTION_COLUMNS if c in rows[0]), None)
    base = Path(path).parent
    for row in rows:
        image = Path(str(row[file_col]))
        full = image if image.is_absolute() else base / image
        caption = row.get(text_col) if text_col else None
        yield Source(id=str(full), path=str(full), rel=image.with_suffix("").as_posix(),
                     caption=None if caption is None else str(caption))  # fmt: skip


def iter_sources(inputs: Iterable[str], captions_file: str | None = None) -> Iterator[Source]:
    """Every input sample in a deterministic order: tars and lists as given, then image files."""
    captions = load_captions(captions_file) if captions_file else {}
    images: list[str] = []
    for item in inputs:
        paths = expand(str(item)) if not os.path.exists(item) else [str(item)]
        if not paths:
            raise FileNotFoundError(f"input not found: {item}")
        for path in paths:
            lower = path.lower()
            if os.path.isfile(path) and lower.endswith(TAR_EXTENSIONS):
                yield from iter_tar(path)
            elif os.path.isfile(path) and lower.endswith(LIST_EXTENSIONS):
                yield from iter_list(path)
            else:
                images.append(path)
    for path, rel in find_images(images):
        yield Source(id=str(path), path=str(path), rel=rel.with_suffix("").as_posix(),
                     caption=caption_for(path, rel, captions))  # fmt: skip
