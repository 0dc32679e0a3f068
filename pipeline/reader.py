"""Read a sample's bytes: its image and sidecar caption, from a local path or any fsspec URL.

Thread-safe and blocking, so a worker's I/O threads can keep many reads in flight
(remote stores answer in 20-100 ms per object). Local paths skip fsspec.
"""

from __future__ import annotations

import functools
import io
import os
from typing import IO

from pipeline.sample_ref import SampleRef


def is_local(url: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return "://" not in url or url.startswith("file://")


@functools.lru_cache(maxsize=16)
def filesystem(protocol: str):
    """One fsspec filesystem per protocol and process (credentials from the environment)."""
    import fsspec

    return fsspec.filesystem(protocol, **storage_options(protocol))


def storage_options(protocol: str) -> dict[str, str]:
    """fsspec options for ``protocol`` from ``HINTSET_STORAGE_OPTIONS`` (JSON: {protocol: {...}}).

    S3 needs none beyond the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
    """
    import json

    raw = os.environ.get("HINTSET_STORAGE_OPTIONS", "")
    return dict(json.loads(raw).get(protocol, {})) if raw else {}


def split_url(url: str) -> tuple[object | None, str]:
    """(filesystem or None for local, path in it)."""
    if is_local(url):
        return None, url.removeprefix("file://")
    protocol = url.split("://", 1)[0]
    fs = filesystem(protocol)
    return fs, url if protocol in ("http", "https") else fs._strip_protocol(url)


def open_url(url: str, seekable: bool = False) -> IO[bytes]:
    """A binary file object for reading ``url``, streamed for remote files.

    ``seekable=True`` for readers that jump (Parquet footers): plain HTTP servers may not
    answer range requests, so such a file is fetched whole.
    """
    fs, path = split_url(url)
    if fs is None:
        return open(path, "rb")
    if url.startswith(("http://", "https://")):
        return io.BytesIO(fs.cat_file(path)) if seekable else fs.open(path, "rb", block_size=0)
    return fs.open(path, "rb", block_size=8 * 1024 * 1024)


def read_url(url: str) -> bytes:
    """All bytes of ``url``."""
    fs, path = split_url(url)
    if fs is None:
        with open(path, "rb") as handle:
            return handle.read()
    return fs.cat_file(path)


def read_image(ref: SampleRef) -> bytes:
    """The image bytes of ``ref`` (already in hand for tar members); raises OSError if unreadable."""
    if ref.data is not None:
        return ref.data
    try:
        return read_url(ref.url)
    except OSError:
        raise
    except Exception as err:  # fsspec backends raise their own types (e.g. aiohttp errors)
        raise OSError(f"{type(err).__name__}: {err}") from err


def read_caption(ref: SampleRef) -> str | None:
    """The caption of ``ref``: known already, or read from its sidecar file (None if none)."""
    if ref.caption is not None or not ref.caption_url:
        return ref.caption
    try:
        return read_url(ref.caption_url).decode("utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None


def read_sample(ref: SampleRef) -> tuple[bytes, str | None]:
    """(image bytes, caption) of one sample: what an I/O thread does per SampleRef."""
    return read_image(ref), read_caption(ref)
