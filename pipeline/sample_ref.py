"""What a worker is handed for one input sample: where its bytes are, before they are read.

Sources (driver side) turn inputs into units of work; inside a worker a unit expands
into ``SampleRef`` records, and the worker pipeline reads, decodes, annotates, encodes
and writes them. Plain data, so it crosses process and Ray boundaries cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SampleRef:
    """One input sample: a stable key, its source id, caption and where its image bytes are."""

    key: str  # stable, unique within the output, no dots (webdataset splits at the first dot)
    source: str  # the input's identity for the index: a path, a URL, or "tar_url#member_key"
    rel: str = ""  # path relative to its input root, extension kept (annotate mirrors it)
    caption: str | None = None  # caption already known (list column, tar .txt member)
    caption_url: str = ""  # else a sidecar caption file to read with the image ("" if none)
    meta: str = ""  # JSON text that came with the input (a tar's .json member)
    data: bytes | None = None  # image bytes already in hand (streamed from a tar)
    url: str = ""  # else: local path or fsspec URL to read the image bytes from
    reach: tuple[str, ...] = ()  # address classes an HTTP read may connect to (): any but metadata
    error: str = ""  # the input failed before its bytes could be read (bad tar, bad list row): record as failed
