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
def filesystem(protocol: str, timeouts: tuple[float, float] | None = None):
    """One fsspec filesystem per protocol and process (credentials from the environment);
    ``timeouts``: (connect, read) seconds for HTTP."""
    import fsspec

    options = storage_options(protocol)
    if timeouts is not None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts[0],
                                        sock_read=timeouts[1])  # fmt: skip
        options["client_kwargs"] = {"timeout": timeout, **options.get("client_kwargs", {})}
    return fsspec.filesystem(protocol, **options)


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
    if protocol in ("http", "https"):  # the build's timeouts (lists and tars the user named)
        from pipeline.trust import limits

        fs = filesystem(protocol, (limits().connect_timeout, limits().read_timeout))
    else:
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
    """All bytes of ``url``, a file the user named (a --captions file): no cap."""
    fs, path = split_url(url)
    if fs is None:
        with open(path, "rb") as handle:
            return handle.read()
    return fs.cat_file(path)


def read_object(url: str, reach: tuple[str, ...] = (), head: int = 0) -> bytes:
    """A sample's object (image, sidecar): local files as they are; remote ones within the
    object cap (:mod:`pipeline.trust`), over HTTP also within ``reach`` (address classes,
    checked at every hop). ``head`` > 0: only the first ``head`` bytes (a bounded read).
    """
    if url.lower().startswith(("http://", "https://")):
        from pipeline.fetch import fetch

        options = storage_options("http")
        headers = options.get("headers") or options.get("client_kwargs", {}).get("headers")
        return fetch(url, reach, headers, head)
    fs, path = split_url(url)
    if fs is None:
        with open(path, "rb") as handle:
            return handle.read(head or -1)
    if head:
        with fs.open(path, "rb", block_size=max(head, 1 << 16)) as handle:
            return handle.read(head)
    return _read_store(fs, path)


def _read_store(fs, path: str) -> bytes:
    """An object store's object: its size checked before reading, at most the cap read."""
    from pipeline.trust import limits, too_large

    cap = limits().max_object_bytes
    size = fs.info(path).get("size")
    if size is not None and size > cap:
        raise too_large(f"{size:,} bytes")
    data = fs.cat_file(path, start=0, end=cap + 1) if size is None else fs.cat_file(path)
    if len(data) > cap:
        raise too_large(f"more than {cap:,} bytes")
    return data


def read_image(ref: SampleRef) -> bytes:
    """The image bytes of ``ref`` (already in hand for tar members); raises OSError if unreadable."""
    if ref.data is not None:
        return ref.data
    try:
        return read_object(ref.url, ref.reach)
    except OSError:
        raise
    except Exception as err:  # fsspec backends raise their own types (e.g. aiohttp errors)
        raise OSError(f"{type(err).__name__}: {err}") from err


def read_caption(ref: SampleRef) -> str | None:
    """The caption of ``ref``: known already, or read from its sidecar file (None if none).

    Sidecars are read bounded: one byte past the caption cap is enough to refuse it.
    """
    from pipeline.trust import check_caption, limits

    if ref.caption is not None or not ref.caption_url:
        caption = ref.caption
    else:
        try:
            head = read_object(ref.caption_url, ref.reach, limits().max_caption_bytes + 1)
        except FileNotFoundError:
            return None
        caption = head.decode("utf-8", errors="replace").strip()
    check_caption(caption)
    return caption


def read_sample(ref: SampleRef) -> tuple[bytes, str | None]:
    """(image bytes, caption) of one sample: what an I/O thread does per SampleRef."""
    return read_image(ref), read_caption(ref)
