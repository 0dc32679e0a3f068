"""Where a dataset is written: a local folder or any fsspec URL (s3://, gs://, ...).

Local writes go through a temporary file, fsync and rename; object stores get
whole-object puts (atomic by nature). All cluster nodes must see the same root.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.atomic import atomic_write


class Storage:
    """A dataset root with atomic writes, reads and listings relative to it."""

    def __init__(self, root: str | os.PathLike) -> None:
        import fsspec.core

        from pipeline.reader import storage_options

        self.root = str(root).rstrip("/")
        protocol = self.root.split("://", 1)[0] if "://" in self.root else "file"
        options = storage_options(protocol)
        if protocol not in (
            "file",
            "local",
        ):  # other processes write here: never trust a cached listing
            options.setdefault("use_listings_cache", False)
        self.fs, self.base = fsspec.core.url_to_fs(self.root, **options)
        self.local = self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol

    def path(self, rel: str) -> str:
        """Full path (or URL-less object path) of ``rel``."""
        return f"{self.base}/{rel}" if rel else self.base

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_many(self, rels: list[str], in_flight: int = 32) -> list[bytes]:
        """Contents of many small files, in order, with requests in flight (object stores
        answer each in 20-100 ms: 10,000 stats files read one by one would take minutes)."""
        if self.local or len(rels) < 2:
            return [self.read_bytes(rel) for rel in rels]
        with ThreadPoolExecutor(min(in_flight, len(rels))) as pool:
            return list(pool.map(self.read_bytes, rels))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` atomically (readers see all of it or nothing)."""
        if self.local:
            atomic_write(self.path(rel), data)
        else:
            self.fs.pipe_file(self.path(rel), data)

    def put_file(self, local_path: str, rel: str) -> None:
        """Move a finished local file into place atomically (rename locally, upload otherwise)."""
        if self.local:
            target = Path(self.path(rel))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local_path, target)
        else:
            self.fs.put_file(local_path, self.path(rel))
            os.unlink(local_path)

    def list(self, rel: str) -> list[str]:
        """Sorted names of the files directly below ``rel`` (empty if it does not exist)."""
        if not self.exists(rel):
            return []
        return sorted(Path(p).name for p in self.fs.ls(self.path(rel), detail=False))

    def makedirs(self, rel: str) -> None:
        if self.local:
            Path(self.path(rel)).mkdir(parents=True, exist_ok=True)

    def remove(self, rel: str) -> None:
        """Delete one file (no error if it is already gone)."""
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def check_reachable(self) -> None:
        """StorageUnreachable (one line naming the endpoint) unless the root can be listed.

        Called before a build writes anything: an object store that does not answer is
        refused up front, not a traceback from the first write.
        """
        if self.local:
            return
        try:
            self.fs.exists(self.base)
        except Exception as err:  # noqa: BLE001 - any client's connection error
            raise StorageUnreachable(
                f"cannot reach the output {self.root} at {self.endpoint(err)} "
                f"({type(err).__name__}); check the endpoint (AWS_ENDPOINT_URL or "
                "--storage-option) and that it is up"
            ) from None

    def endpoint(self, err: BaseException | None = None) -> str:
        """The server behind the root: from the client's error, the options or the environment."""
        from urllib.parse import urlsplit

        from pipeline.reader import storage_options

        while err is not None:
            url = (getattr(err, "kwargs", None) or {}).get("endpoint_url")
            if url:
                parts = urlsplit(str(url))
                return f"{parts.scheme}://{parts.netloc}"
            err = err.__cause__ or err.__context__
        protocol = self.root.split("://", 1)[0]
        configured = storage_options(protocol).get("endpoint_url")
        if protocol in ("s3", "s3a"):
            env = os.environ
            configured = configured or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        return str(configured or f"the default {protocol} endpoint")


class StorageUnreachable(ValueError):
    """The output's object store does not answer (one-line message naming the endpoint)."""


def dataset_entries() -> set[str]:
    """Top-level names a build writes: manifest.json, plan/, shards/, index/, stats/, the lock."""
    from pipeline.layout import OUTPUT_NAMES

    return set(OUTPUT_NAMES)
