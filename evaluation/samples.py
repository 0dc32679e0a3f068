"""Evaluation samples from a built dataset: key, caption, stored image and reference maps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import layout
from pipeline.encode import decode_png


@dataclass
class Sample:
    """One condition to evaluate: its maps (suffix -> array), side data (``pose.json`` ->
    object), caption and the stored image's bytes (the real image the map was made from)."""

    key: str
    caption: str
    image: bytes
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the maps."""
        first = next(v for v in self.maps.values() if isinstance(v, np.ndarray))
        return first.shape[:2]


def read_samples(
    data: str, outputs: tuple[str, ...], data_outputs: tuple[str, ...] = (), limit: int = 0
) -> Iterator[Sample]:
    """Samples with status ok that have every map in ``outputs`` (and side file in
    ``data_outputs``), in shard order; the first ``limit`` when it is above 0."""
    import fsspec

    from training.data import ok_keys, shard_urls

    urls = shard_urls(data)
    if not urls:
        raise ValueError(f"no shards found in {data}")
    good = ok_keys(data)
    count = 0
    for url in urls:
        with fsspec.open(url, "rb") as handle:
            for key, files in layout.iter_tar_samples(handle):
                stored = layout.sample_image(files)
                names = [f"{o}.png" for o in outputs] + [f"{d}.json" for d in data_outputs]
                if (good is not None and key not in good) or stored is None:
                    continue
                if any(n not in files for n in names):
                    continue
                maps: dict[str, Any] = {o: decode_png(files[f"{o}.png"]) for o in outputs}
                maps.update({f"{d}.json": json.loads(files[f"{d}.json"]) for d in data_outputs})
                yield Sample(key, files.get("txt", b"").decode("utf-8").strip(), stored[1], maps)
                count += 1
                if limit and count >= limit:
                    return
