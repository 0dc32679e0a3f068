"""What in a build output is hintset's own, and the only things ``--overwrite`` deletes.

A build writes into an empty folder (or prefix) or into an earlier build's output, never
into a folder of other files. Overwrite deletes exactly the files the manifest and the plan
record (manifest, plan files, each planned shard's tar, index and stats) plus hintset's
temporary files; it checks every target first, so it refuses before deleting anything, and
a user's own file in ``shards/`` (or an object named ``index``) stays.
"""

from __future__ import annotations

import json

from pipeline import layout
from pipeline.atomic import is_temp_name
from pipeline.storage import Storage

#: folders a build writes files into (besides the root)
FOLDERS = (layout.SHARDS, layout.INDEX, layout.STATS, layout.PLAN)


class NotHintsetOutput(ValueError):
    """The output folder holds other files and no hintset build (one-line message)."""


def is_build_output(storage: Storage) -> bool:
    """True when the root holds a manifest.json that a hintset build wrote."""
    try:
        return "format_version" in json.loads(storage.read_bytes(layout.MANIFEST))
    except (OSError, ValueError, TypeError):
        return False


def check_output(storage: Storage) -> None:
    """Raise NotHintsetOutput unless the output is empty (a lock or hintset temporaries
    aside) or already a hintset build output; nothing is written either way."""
    names = [n for n in storage.list("") if n != layout.LOCK and not is_temp_name(n)]
    if names and not is_build_output(storage):
        raise NotHintsetOutput(
            f"{storage.root} is not a hintset output (no hintset manifest.json but "
            f"{len(names)} other entries, e.g. {names[0]!r}); build into an empty or new "
            "folder, or into an earlier hintset build"
        )


def owned_files(storage: Storage) -> list[str]:
    """Paths (relative to the root) of the files the manifest and plan record as hintset's,
    and hintset's temporaries, that exist now; NotHintsetOutput if one is not a plain file."""
    from pipeline.manifest import read_manifest
    from pipeline.plan import read_plan

    check_output(storage)
    if not is_build_output(storage):
        return [n for n in storage.list("") if is_temp_name(n)]
    try:
        manifest = read_manifest(storage) or {}
        ids = {unit.id for unit in read_plan(storage, files=False)}
        ids |= {int(shard["name"]) for shard in manifest.get("shards", [])}
    except Exception as err:  # noqa: BLE001 - unreadable records: delete nothing
        raise NotHintsetOutput(f"{storage.root}: cannot read the manifest or plan ({err}); "
                               "--overwrite deletes nothing it cannot account for") from None  # fmt: skip
    expected = {layout.MANIFEST}
    for shard_id in ids:
        name = layout.shard_name(shard_id)
        expected |= {layout.tar_path(shard_id), layout.index_path(shard_id),
                     layout.stats_path(shard_id), f"{layout.PLAN}/{name}.parquet"}  # fmt: skip
    targets = []
    for folder in ("", *FOLDERS):
        for name, kind in entries(storage, folder):
            rel = f"{folder}/{name}" if folder else name
            if rel in expected or is_temp_name(name):
                if kind != "file":
                    raise NotHintsetOutput(f"{storage.path(rel)} is a {kind}, not a file hintset "
                                           "wrote; --overwrite deleted nothing")  # fmt: skip
                targets.append(rel)
    return targets


def entries(storage: Storage, folder: str) -> list[tuple[str, str]]:
    """(name, type) of the entries directly below ``folder``: file, directory or link."""
    import os

    if not storage.exists(folder):
        return []
    found = []
    for info in storage.fs.ls(storage.path(folder), detail=True):
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        kind = info.get("type", "file")
        if storage.local and os.path.islink(info["name"]):
            kind = "file"  # unlinking a link removes the link only
        found.append((name, "directory" if kind == "directory" else kind))
    return found


def remove_owned(storage: Storage, keep: tuple[str, ...] = (layout.LOCK,)) -> int:
    """Delete what :func:`owned_files` lists (all checked first), then the build's folders
    if they are left empty; return how many files were deleted."""
    targets = [rel for rel in owned_files(storage) if rel not in keep]
    for rel in targets:
        storage.remove(rel)
    if storage.local:
        import os

        for folder in FOLDERS:
            try:
                os.rmdir(storage.path(folder))
            except OSError:  # not empty (a user's file) or not there
                pass
    return len(targets)
