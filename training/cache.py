"""Cached encodings: what a family's locked encoders make of each sample (VAE latent statistics,
the control input, the text fields) computed once and reused across epochs and runs, so a run on
the cache loads no text encoder and runs no VAE encoder.

    CACHE/cache.json                      fingerprint and what it is made of (checked on open)
    CACHE/empty.safetensors               the empty prompt's text fields (prompt dropout)
    CACHE/prompts/<sha>.safetensors       text fields of validation captions (grids)
    CACHE/shards/<shard>.NNNNN.safetensors  up to ``PART`` samples: tensors ``i/field``, keys
                                          in the metadata
    CACHE/shards/<shard>.json             written last: the shard's parts; its presence means done

The fingerprint is the sha256 of: the family, the sha256 of every file of the encoders' folders
of the base (text encoders, tokenizers, VAE), resolution, maps, stacking, precision and the crop
rule. Random crops and flips cannot be cached: the cache takes the centre square, unflipped
(``--crop centre`` trains uncached the same way).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from training.data import ShardDataset

VERSION = 1
#: samples per part file: a killed fill loses at most this many encodings
PART = 64
#: the crop rule of every cached sample (training/data.py CROPS)
CROP = "centre"
INFO, EMPTY = "cache.json", "empty.safetensors"


def encoder_folders(cls) -> list[str]:
    """Subfolders of a base that ``encode`` reads: text encoders, their tokenizers, the VAE."""
    return [*cls.TEXT, *(n.replace("text_encoder", "tokenizer") for n in cls.TEXT), "vae"]


def base_folder(base_model: str) -> Path:
    """The local folder of a base: itself, or a hub id's snapshot in the Hugging Face cache."""
    if Path(base_model).is_dir():
        return Path(base_model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(base_model, local_files_only=True))


def hash_files(folder: Path, subfolders: list[str], known: dict) -> dict:
    """relative path -> [size, mtime_ns, sha256] of every file in ``subfolders``; a file whose
    size and mtime equal its ``known`` entry is not read again (multi-GB text encoders)."""
    out = {}
    for sub in subfolders:
        for path in sorted((folder / sub).rglob("*")):
            if not path.is_file():
                continue
            rel, st = path.relative_to(folder).as_posix(), path.stat()
            old = known.get(rel)
            if old and old[:2] == [st.st_size, st.st_mtime_ns]:
                out[rel] = old
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            out[rel] = [st.st_size, st.st_mtime_ns, digest.hexdigest()]
    return out


def shard_name(url: str) -> str:
    """The cache's name for a shard: its file name without ``.tar``."""
    return url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".tar")


def _save(path: Path, tensors: dict, metadata: dict) -> None:
    from safetensors.torch import save

    from pipeline.atomic import atomic_write

    meta = {k: json.dumps(v) for k, v in metadata.items()}
    atomic_write(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))


def compact(value):
    """A tensor as stored: 8-bit maps scaled to [0, 1] (the SD/SDXL pixel hint) as uint8 when
    that is lossless (4x smaller on disk, listed in the part's ``u8``), anything else as it
    is."""
    import torch

    if value.dtype == torch.float32:
        levels = (value * 255).round()
        if torch.equal(levels / 255, value):
            return levels.to(torch.uint8)
    return value


def _load(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


class Cache:
    """One cache folder, opened for a run's settings; refuses one made with other settings."""

    def __init__(self, folder: str | Path, config, family: str) -> None:
        from pipeline.atomic import atomic_write
        from training.families import family_class

        self.folder = Path(folder)
        self.config = config
        cls = family_class(family)
        self.text_fields = tuple(cls.TEXT_FIELDS)
        self.pipeline_text = dict(cls.PIPELINE_TEXT)
        info_path = self.folder / INFO
        info = json.loads(info_path.read_text()) if info_path.exists() else None
        known = info["files"] if info else {}
        files = hash_files(base_folder(config.base_model), encoder_folders(cls), known)
        self.parts = {
            "version": VERSION, "family": family, "resolution": config.resolution,
            "conditions": config.conditions, "stack": config.stack_conditions,
            "precision": config.mixed_precision, "crop": f"{CROP}, no flip",
            "encoders": hashlib.sha256(
                json.dumps({k: v[2] for k, v in files.items()}, sort_keys=True).encode()
            ).hexdigest(),
        }  # fmt: skip
        self.fingerprint = hashlib.sha256(
            json.dumps(self.parts, sort_keys=True).encode()
        ).hexdigest()
        if info and info["fingerprint"] != self.fingerprint:
            differ = [k for k in self.parts if info["parts"].get(k) != self.parts[k]]
            raise ValueError(
                f"--cache {self.folder}: made with another {', '.join(differ) or 'version'} "
                f"(cache {info['fingerprint'][:12]}, this run {self.fingerprint[:12]}); "
                "give a new cache folder"
            )
        if info is None or files != known:  # new cache, or file times changed (same contents)
            record = {"fingerprint": self.fingerprint, "parts": self.parts, "files": files}
            atomic_write(info_path, json.dumps(record, indent=1).encode())

    # --- what is there --------------------------------------------------------------------
    def shard_info(self, url: str) -> dict | None:
        """The done record of a shard (None: not, or not completely, cached)."""
        path = self.folder / "shards" / f"{shard_name(url)}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def missing(self, urls: list[str]) -> list[str]:
        return [u for u in urls if self.shard_info(u) is None]

    def _prompt_path(self, caption: str) -> Path:
        return (
            self.folder / "prompts" / f"{hashlib.sha256(caption.encode()).hexdigest()}.safetensors"
        )

    def missing_prompts(self, captions: list[str]) -> list[str]:
        """Captions (the empty prompt included) whose text fields are not cached yet."""
        todo = [c for c in dict.fromkeys(captions) if not self._prompt_path(c).exists()]
        return ([""] if not (self.folder / EMPTY).exists() else []) + [c for c in todo if c]

    # --- filling --------------------------------------------------------------------------
    def fill_prompts(self, family, captions: list[str]) -> None:
        """Store the text fields of ``captions`` ("" is the empty prompt, ``EMPTY``)."""
        for caption in captions:
            text = family.text_conditioning([caption])
            fields = {f: text[f][0].detach().cpu() for f in self.text_fields}
            path = self.folder / EMPTY if caption == "" else self._prompt_path(caption)
            _save(path, fields, {"caption": caption})

    def fill_shard(self, family, url: str, batch_size: int = 8) -> int:
        """Encode the samples of one shard (centre crop) into part files; parts already on disk
        (a killed fill) are kept, not recomputed. Returns the samples now cached."""
        c = self.config
        ds = ShardDataset(c.data, c.conditions, c.resolution, shuffle_buffer=1, resampled=False,
                          stack=c.stack_conditions, urls=[url], max_bad_fraction=c.max_bad_fraction,
                          crop=CROP)  # fmt: skip
        name, rng = shard_name(url), random.Random(0)
        parts: list[dict] = []
        keys: list[str] = []
        pending: list[dict] = []
        tensors: dict = {}
        u8: list[str] = []

        def part_path() -> Path:
            return self.folder / "shards" / f"{name}.{len(parts):05d}.safetensors"

        def encode_pending() -> None:
            from training.data import collate

            if pending:
                batch = collate(pending)
                encoded = family.encode(batch, batch["caption"], c)
                first = len(keys) - len(pending)
                for field, value in encoded.items():
                    for i in range(len(pending)):
                        name = f"{first + i}/{field}"
                        tensors[name] = compact(value[i].detach().cpu().clone())
                        if tensors[name].dtype != value.dtype:
                            u8.append(name)
                pending.clear()

        def finish_part() -> None:
            if not part_path().exists():
                encode_pending()
                _save(part_path(), tensors, {"keys": keys, "u8": u8})
            parts.append({"file": part_path().name, "keys": list(keys)})
            keys.clear()
            tensors.clear()
            u8.clear()

        done = part_path().exists()
        for raw in ds._samples(iter([url])):
            sample = ds._decode(raw, rng)
            if sample is None:
                continue
            keys.append(sample["key"])
            if not done:
                pending.append(sample)
                if len(pending) >= batch_size:
                    encode_pending()
            if len(keys) == PART:
                finish_part()
                done = part_path().exists()
        if keys:
            finish_part()
        from pipeline.atomic import atomic_write

        record = {"source": url, "parts": parts, "samples": sum(len(p["keys"]) for p in parts),
                  "skipped": ds.skipped}  # fmt: skip
        path = self.folder / "shards" / f"{name}.json"
        atomic_write(path, json.dumps(record).encode())
        return record["samples"]

    # --- reading --------------------------------------------------------------------------
    def entries(self, url: str):
        """(key, {field: tensor}) of a cached shard's samples, in the shard's order, read
        lazily one tensor at a time."""
        from safetensors import safe_open

        info = self.shard_info(url)
        if info is None:
            raise ValueError(f"--cache {self.folder}: shard {url} is not cached (hintset cache)")
        for part in info["parts"]:
            with safe_open(str(self.folder / "shards" / part["file"]), "pt") as f:
                fields = sorted({n.split("/", 1)[1] for n in f.keys()})
                u8 = set(json.loads(f.metadata().get("u8", "[]")))
                for i, key in enumerate(part["keys"]):
                    names = {field: f"{i}/{field}" for field in fields}
                    yield key, {field: f.get_tensor(n).float() / 255 if n in u8 else f.get_tensor(n)
                                for field, n in names.items()}  # fmt: skip

    def empty_text(self) -> dict:
        return _load(self.folder / EMPTY)

    def with_dropout(self, encoded: dict, keep: list[bool], device) -> dict:
        """A cached batch on ``device``, the text fields of dropped samples (``keep`` False)
        replaced by the empty prompt's, as encoding the caption "" would give."""
        import torch

        out = dict(encoded)
        if not all(keep):
            empty = self.empty_text()
            for field in self.text_fields:
                rows = [v if k else empty[field] for v, k in zip(encoded[field], keep, strict=True)]
                out[field] = torch.stack(rows)
        return {k: v.to(device) for k, v in out.items()}

    def pipeline_prompt(self, caption: str, zero_negative: bool = False) -> dict:
        """The sampling pipeline's prompt arguments for a cached caption: its text fields as
        embeddings, the empty prompt's (or zeros, for SDXL's ``force_zeros_for_empty_prompt``)
        as negative ones."""
        import torch

        text = _load(self._prompt_path(caption)) if caption else self.empty_text()
        negative = self.empty_text()
        out = {}
        for field, name in self.pipeline_text.items():
            out[name] = text[field][None]
            neg = negative[field][None]
            out[f"negative_{name}"] = torch.zeros_like(neg) if zero_negative else neg
        return out


class CachedDataset(ShardDataset):
    """``ShardDataset`` over a cache: the same shards, rank split, seeded shuffle and resume
    replay, with encoded samples in place of decoded ones."""

    def __init__(self, cache: Cache, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cache = cache

    def _samples(self, urls):
        for url in urls:
            info = self.cache.shard_info(url) or {}
            for reason, n in info.get("skipped", {}).items():
                self.skipped[reason] += n
            for key, encoded in self.cache.entries(url):
                yield {"key": key, "encoded": encoded}

    def _decode(self, sample: dict, rng: random.Random) -> dict:
        return {**sample, "skipped": sum(self.skipped.values()), "bad": self.skipped["bad"]}


def collate_cached(samples: list[dict]) -> dict:
    """Stack each encoded field along a new first dimension; keys as a list."""
    import torch

    fields = samples[0]["encoded"]
    return {
        "key": [s["key"] for s in samples],
        "encoded": {f: torch.stack([s["encoded"][f] for s in samples]) for f in fields},
        "skipped": max(s["skipped"] for s in samples),
        "bad": max(s["bad"] for s in samples),
    }


def fill(cache: Cache, make_family, urls: list[str], captions: list[str] = (), *,
         batch_size: int = 8, log=print) -> int:  # fmt: skip
    """Cache the shards of ``urls`` and the prompts ``captions`` not cached yet; the encoders
    (``make_family()``, text encoders included) are loaded only when something is missing and
    freed afterwards. Returns the samples encoded now."""
    shards, prompts = cache.missing(urls), cache.missing_prompts(list(captions))
    if not shards and not prompts:
        return 0
    family = make_family()
    cache.fill_prompts(family, prompts)
    total = 0
    for i, url in enumerate(shards):
        total += cache.fill_shard(family, url, batch_size)
        log(f"cache: shard {shard_name(url)} done ({i + 1}/{len(shards)})")
    del family
    import gc

    gc.collect()
    return total
