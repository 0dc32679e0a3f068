"""Find input images: files and folders walked recursively, in a deterministic order."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: File endings treated as images when walking folders.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


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
