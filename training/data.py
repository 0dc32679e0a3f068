"""WebDataset input pipeline: shards -> (image in [-1, 1], stacked maps in [0, 1], caption).

The sample order is a pure function of the seed, so a resumed run replays the same stream.
"""

from __future__ import annotations

import glob
import io
import json
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline import layout

#: samples read before the share of bad ones is judged (one bad first sample is not 100 %)
MIN_JUDGED = 20


#: keys of bad samples already reported in this process (the stream passes them every epoch)
_REPORTED: set[str] = set()


class TooManyBadSamples(ValueError):
    """More than ``--max-bad-fraction`` of the samples read could not be decoded."""


def shard_urls(data: str) -> list[str]:
    """Shard list for a build folder (OUT/shards/*.tar), a single tar, or a brace/URL pattern."""
    if os.path.isdir(data):
        return sorted(glob.glob(os.path.join(data, layout.SHARDS, "*.tar")))
    import braceexpand

    return list(braceexpand.braceexpand(data))


def ok_keys(data: str) -> set[str] | None:
    """Keys whose index status is "ok" (None when there is no local index to consult)."""
    paths = (
        sorted(glob.glob(os.path.join(data, layout.INDEX, "*.parquet")))
        if os.path.isdir(data)
        else []
    )
    if not paths:
        return None
    return {
        r["key"]
        for p in paths
        for r in layout.read_index(Path(p).read_bytes())
        if r["status"] == "ok"
    }


def _dist() -> tuple[int, int]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _worker() -> tuple[int, int]:
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


def hint_array(image, *, rgb: bool = True) -> np.ndarray:
    """A condition map as HxWxC float32 in [0, 1]; with ``rgb`` a 1-channel map is repeated to
    3 channels, as ControlNet 1.0/1.1 prepare hints (``HWC3``), and alpha is dropped."""
    a = np.asarray(image)
    scale = 65535.0 if a.dtype == np.uint16 or image.mode.startswith("I") else 255.0
    a = a.astype(np.float32) / scale
    if a.ndim == 2:
        a = a[..., None]
    if rgb:
        a = np.repeat(a[..., :1], 3, axis=-1) if a.shape[-1] in (1, 2) else a[..., :3]
    return a


def crop_and_flip(
    image, maps: list, resolution: int, rng: random.Random, *, stack: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Resize short side to ``resolution``, then the SAME random square crop and flip for all.

    The hint is 3 channels (one map, repeated to RGB when it has 1); ``stack`` concatenates
    several maps at their own channel counts instead."""
    pixels, cond, _ = crop_flip_with_coords(image, maps, resolution, rng, stack=stack)
    return pixels, cond


#: crop rules: ``random`` square crop and flip (drawn from the stream's rng), or ``centre``
#: crop without flip (no draw: the rule a cache of encoded samples is made with)
CROPS = ("random", "centre")


def crop_flip_with_coords(
    image, maps: list, resolution: int, rng: random.Random, *, stack: bool = False,
    crop: str = "random",
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:  # fmt: skip
    """``crop_and_flip`` plus the crop's top-left (y, x) in the resized image (SDXL's
    ``crops_coords_top_left``; mirrored in x when flipped, as diffusers' SDXL scripts do);
    ``crop="centre"`` takes the centre square, unflipped, and draws nothing from ``rng``."""
    from PIL import Image

    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    image = image.resize(size, Image.BICUBIC)
    maps = [m.resize(size, Image.BILINEAR) for m in maps]
    if crop == "centre":
        left, top, flip = (size[0] - resolution) // 2, (size[1] - resolution) // 2, False
    else:
        left = rng.randint(0, size[0] - resolution)
        top = rng.randint(0, size[1] - resolution)
        flip = rng.random() < 0.5
    box = (left, top, left + resolution, top + resolution)
    img = np.asarray(image.crop(box).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    chans = [hint_array(m.crop(box), rgb=not stack) for m in maps]
    cond = np.concatenate(chans, axis=-1) if chans else np.zeros((*img.shape[:2], 0), np.float32)
    if flip:
        img, cond = img[:, ::-1], cond[:, ::-1]
        left = size[0] - resolution - left
    return (
        np.ascontiguousarray(img.transpose(2, 0, 1)),
        np.ascontiguousarray(cond.transpose(2, 0, 1)),
        (top, left),
    )


def original_size(sample: dict, fallback: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the photo before the build resized it, from the sample's JSON
    (``original_height/width``); the stored image's size when the JSON lacks them."""
    try:
        meta = json.loads(sample.get("json", b"{}"))
        return int(meta["original_height"]), int(meta["original_width"])
    except (ValueError, KeyError, TypeError):
        return fallback[1], fallback[0]


def split_validation(urls: list[str], holdout: int) -> tuple[list[str], list[str]]:
    """(training, validation) shard lists: the last ``holdout`` shards are held out and
    never trained on; at least one shard must stay for training."""
    if holdout <= 0:
        return list(urls), []
    if holdout >= len(urls):
        raise ValueError(f"--validation-shards {holdout} leaves no training shard of {len(urls)}")
    return list(urls[:-holdout]), list(urls[-holdout:])


#: data orders: "shards" splits the shards between ranks (and loader workers); "exact" gives
#: every consumer the one global stream and keeps its own batches (see ``ShardDataset``)
ORDERS = ("shards", "exact")


class ShardDataset:
    """Iterable over training samples; infinite; split by rank and dataloader worker.

    ``order="shards"``: each rank reads its own shards (resampled when there are several
    ranks). ``order="exact"``: the global sample stream depends on the seed only; with ``w``
    ranks and ``n`` loader workers, worker ``j`` of rank ``r`` keeps the global batches ``g``
    (of ``batch_size`` samples) with ``g % (w * n) == j * w + r``, so micro-batch ``m`` of step
    ``t`` on rank ``r`` is global batch ``(t * accum + m) * w + r`` whatever ``w`` and ``accum``
    are. Every consumer reads and decodes the whole stream (``w * n`` times the work)."""

    def __init__(
        self,
        data: str,
        conditions: list[str],
        resolution: int,
        *,
        seed: int = 0,
        shuffle_buffer: int = 256,
        resampled: bool | None = None,
        stack: bool = False,
        urls: list[str] | None = None,
        max_bad_fraction: float = 0.05,
        union: bool = False,
        crop: str = "random",
        order: str = "shards",
        batch_size: int = 1,
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"data order {order!r} is not one of {ORDERS}")
        self.order = order
        self.batch_size = batch_size
        self.data = data
        self.crop = crop
        self.urls = shard_urls(data) if urls is None else list(urls)
        if not self.urls:
            raise ValueError(f"no shards found in {data}")
        if len(conditions) > 1 and not (stack or union):
            raise ValueError(
                f"{len(conditions)} conditions ({','.join(conditions)}) need --union or "
                "--stack-conditions (a ControlNet with more than 3 input channels; standard UIs "
                "cannot load it)"
            )
        self.conditions = conditions
        self.resolution = resolution
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.stack = stack
        self.union = union
        self.keys = ok_keys(data)
        self.max_bad_fraction = max_bad_fraction
        self.skipped = {"status": 0, "missing_map": 0, "bad": 0}
        self.read = 0  # samples that reached decoding (the base of the bad fraction)

    def _shard_stream(self, rng: random.Random, rank: int, world: int) -> Iterator[str]:
        """Shards for this rank, epoch after epoch; resampled (with replacement) on many ranks."""
        resampled = self.resampled if self.resampled is not None else world > 1
        epoch = 0
        while True:
            if resampled:
                yield from (rng.choice(self.urls) for _ in range(len(self.urls)))
            else:
                order = self.urls[:]
                random.Random(self.seed * 1000 + epoch).shuffle(order)
                yield from order[rank::world]
            epoch += 1

    def _samples(self, urls: Iterator[str]) -> Iterator[dict]:
        import webdataset as wds

        for url in urls:
            ds = wds.WebDataset(
                [url], shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False
            )
            yield from ds

    def _decode(self, sample: dict, rng: random.Random) -> dict | None:
        """A training sample, or None for one filtered out or bad (counted in ``skipped``)."""
        from PIL import Image

        key = sample["__key__"]
        if self.keys is not None and key not in self.keys:
            self.skipped["status"] += 1
            return None
        names = [f"{c}.png" for c in self.conditions]
        stored = layout.sample_image(sample)
        have = [n in sample for n in names]  # union: any of the maps will do; else all
        if stored is None or not (any(have) if self.union else all(have)):
            self.skipped["missing_map"] += 1
            return None
        self.read += 1
        try:  # a corrupt image or map, or a caption that is not UTF-8, skips this sample only
            image = Image.open(io.BytesIO(stored[1]))
            maps = [
                Image.open(io.BytesIO(sample[n])) for n, h in zip(names, have, strict=True) if h
            ]
            original = original_size(sample, image.size)
            pixels, cond, crop = crop_flip_with_coords(
                image, maps, self.resolution, rng, stack=self.stack, crop=self.crop
            )
            if self.union:
                cond = union_maps(cond, have)
            caption = sample.get("txt", b"").decode("utf-8").strip()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            self._bad(key, err)
            return None
        extra = {"present": np.array(have)} if self.union else {}
        return {
            **extra,
            "key": key,
            "pixel_values": pixels,
            "conditioning": cond,
            "caption": caption,
            "original_size": original,
            "crop_top_left": crop,
            "skipped": sum(self.skipped.values()),
            "bad": self.skipped["bad"],
        }

    def _bad(self, key: str, err: Exception) -> None:
        """Count a bad sample, say so once per key, and stop when too many are bad."""
        self.skipped["bad"] += 1
        reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
        if key not in _REPORTED:
            _REPORTED.add(key)
            print(f"skipped bad sample {key}: {reason}", file=sys.stderr)
        bad, read = self.skipped["bad"], self.read
        if read >= MIN_JUDGED and bad > self.max_bad_fraction * read:
            raise TooManyBadSamples(
                f"{bad} of {read} samples read are bad (corrupt image or map, or a caption "
                f"that is not UTF-8), more than --max-bad-fraction {self.max_bad_fraction}; "
                f"last: {key}: {reason}"
            )

    def __iter__(self) -> Iterator[dict]:
        rank, world = _dist()
        wid, nworkers = _worker()
        if self.order == "exact":  # one stream for all: that of rank 0, worker 0 of one process
            consumer, consumers = wid * world + rank, world * nworkers
            rng = random.Random(f"{self.seed}-0-0")
            stream = self._shuffled(rng, self._shard_stream(rng, 0, 1))
            for i, sample in enumerate(stream):
                if (i // self.batch_size) % consumers == consumer:
                    yield sample
            return
        rng = random.Random(f"{self.seed}-{rank}-{wid}")
        shards = self._shard_stream(rng, rank, world)
        if nworkers > 1:
            shards = (u for i, u in enumerate(shards) if i % nworkers == wid)
        yield from self._shuffled(rng, shards)

    def _shuffled(self, rng: random.Random, shards: Iterator[str]) -> Iterator[dict]:
        """Decoded samples of ``shards`` through the seeded shuffle buffer."""
        buffer: list[dict] = []
        for raw in self._samples(shards):
            sample = self._decode(raw, rng)
            if sample is None:
                continue
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample
            # shards that yield nothing must not spin forever
        while buffer:
            yield buffer.pop(rng.randrange(len(buffer)))


def union_maps(cond: np.ndarray, have: list[bool]) -> np.ndarray:
    """The maps a sample has (3 channels each, side by side) as (maps, 3, H, W), zeros for the
    ones it lacks (never shown to the ControlNet: a union step picks among those present)."""
    out = np.zeros((len(have), 3, *cond.shape[1:]), np.float32)
    out[np.flatnonzero(have)] = cond.reshape(-1, 3, *cond.shape[1:])
    return out


def collate(samples: list[dict]) -> dict:
    """Stack arrays into tensors, keep captions and keys as lists."""
    import torch

    extra = {}
    if "present" in samples[0]:  # union: which of the maps each sample has
        extra["present"] = torch.from_numpy(np.stack([s["present"] for s in samples]))
    return {
        **extra,
        "pixel_values": torch.from_numpy(np.stack([s["pixel_values"] for s in samples])),
        "conditioning": torch.from_numpy(np.stack([s["conditioning"] for s in samples])),
        "caption": [s["caption"] for s in samples],
        "original_size": [s["original_size"] for s in samples],
        "crop_top_left": [s["crop_top_left"] for s in samples],
        "key": [s["key"] for s in samples],
        "skipped": max(s["skipped"] for s in samples),
        "bad": max(s["bad"] for s in samples),
    }


def make_loader(dataset: ShardDataset, batch_size: int, num_workers: int = 0, collate_fn=None):
    """A torch DataLoader over the iterable dataset (deterministic for a fixed worker count);
    ``collate_fn`` defaults to ``collate`` (a cached dataset brings its own)."""
    import torch.utils.data

    class _Iter(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(dataset)

    return torch.utils.data.DataLoader(
        _Iter(), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn or collate
    )


def read_samples(
    data: str,
    conditions: list[str],
    resolution: int,
    n: int | None = None,
    *,
    stack: bool = False,
    urls: list[str] | None = None,
    union: bool = False,
) -> list[dict]:
    """First ``n`` (default: all) valid samples, last shard first (validation conditions);
    ``urls`` restricts the read to those shards (the held-out ones)."""
    ds = ShardDataset(data, conditions, resolution, seed=0, shuffle_buffer=1, resampled=False,
                      stack=stack, urls=urls, union=union)  # fmt: skip
    rng = random.Random(0)
    out = []
    for raw in ds._samples(iter(reversed(ds.urls))):
        s = ds._decode(raw, rng)
        if s is not None:
            out.append(s)
        if n is not None and len(out) >= n:
            break
    return out


__all__ = ["ShardDataset", "collate", "make_loader", "read_samples", "shard_urls", "Path"]
