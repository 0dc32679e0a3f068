"""Cached latents and text embeddings (training/cache.py): a cached run equals an uncached one with
the same (centre) crop, loads no text encoder, resumes exactly, splits by rank like the shards;
the cache is completed after a kill, never recomputed, and refuses other settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.test_training import _config, shards, tiny_base  # noqa: E402,F401  (fixtures)
from tests.test_training_flux import tiny_flux  # noqa: E402,F401  (fixture)


@pytest.fixture(scope="module")
def filled(shards, tiny_base, tmp_path_factory) -> Path:  # noqa: F811
    """A cache of both shards of the tiny build, made once by ``hintset cache``'s code path."""
    from training.cache import Cache, fill
    from training.data import shard_urls
    from training.families import create

    folder = tmp_path_factory.mktemp("cache") / "c"
    config = _config(shards, tiny_base, "-", cache=str(folder))
    cache = Cache(folder, config, "sd15")
    fill(cache, lambda: create(str(tiny_base), "cpu", torch.float32), shard_urls(str(shards)),
         [""], log=lambda *_: None)  # fmt: skip
    return folder


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]


def test_cached_run_equals_uncached_centre_crop(shards, tiny_base, filled, tmp_path):  # noqa: F811
    """Same seed: the cached run's losses (prompt dropout included) equal the uncached run's with
    ``--crop centre``; it loads no text encoder, and still writes a validation grid."""
    from training.trainer import Trainer

    plain = Trainer(_config(shards, tiny_base, tmp_path / "plain", crop="centre", steps=3,
                            prompt_dropout=0.5), device="cpu")  # fmt: skip
    expected = plain.train()
    cfg = _config(shards, tiny_base, tmp_path / "cached", cache=str(filled), steps=3,
                  prompt_dropout=0.5, validate_every=3, num_validation=1)  # fmt: skip
    cached = Trainer(cfg, device="cpu")
    assert cached.family.text_encoder is None
    assert "text_encoder" not in cached.family.locked()
    assert not any(type(m).__name__ == "CLIPTextModel" for m in vars(cached.family).values())
    got = cached.train()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "cached" / "validation" / "step-000003.png").exists()
    # the random crop gives another first loss: the equality above is not trivially true
    other = Trainer(_config(shards, tiny_base, tmp_path / "random", steps=1), device="cpu")
    assert abs(other.train()[0] - expected[0]) > 1e-6


def test_cached_resume_equals_uninterrupted(shards, tiny_base, filled, tmp_path):  # noqa: F811
    from training.trainer import Trainer

    full = Trainer(_config(shards, tiny_base, tmp_path / "full", steps=4, cache=str(filled)),
                   device="cpu")  # fmt: skip
    full_losses = full.train()
    half = _config(shards, tiny_base, tmp_path / "half", steps=2, checkpoint_every=2,
                   cache=str(filled))  # fmt: skip
    Trainer(half, device="cpu").train()
    half.steps, half.resume = 4, "latest"
    resumed = Trainer(half, device="cpu")
    assert len(resumed.train()) == 2
    np.testing.assert_allclose(_losses(tmp_path / "half"), full_losses, rtol=1e-5, atol=1e-6)
    a, b = full.controlnet.state_dict(), resumed.controlnet.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_cached_ranks_read_what_their_shards_hold(shards, tiny_base, filled, monkeypatch):  # noqa: F811
    """Two ranks: each rank's cached stream is the uncached (centre crop) stream of that rank."""
    from training.cache import Cache, CachedDataset
    from training.data import ShardDataset

    cache = Cache(filled, _config(shards, tiny_base, "-", cache=str(filled)), "sd15")
    monkeypatch.setenv("WORLD_SIZE", "2")
    streams = {}
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        args = dict(seed=0, shuffle_buffer=2, resampled=False)
        plain = iter(ShardDataset(str(shards), ["canny"], 64, crop="centre", **args))
        cached = iter(CachedDataset(cache, str(shards), ["canny"], 64, **args))
        streams[rank] = [next(cached)["key"] for _ in range(8)]  # two epochs
        assert streams[rank] == [next(plain)["key"] for _ in range(8)]
    first = [{k[:5] for k in streams[r][:3]} for r in range(2)]
    assert len(first[0]) == len(first[1]) == 1 and first[0] != first[1]  # one shard each


def test_killed_fill_is_completed_not_recomputed(shards, tiny_base, filled, tmp_path, monkeypatch):  # noqa: F811
    """Parts on disk are kept: refilling after a kill encodes only the missing part, and the
    completed cache holds what an uninterrupted fill wrote."""
    from safetensors.torch import load_file

    import training.cache as tc
    from training.data import shard_urls
    from training.families import create

    monkeypatch.setattr(tc, "PART", 2)
    folder = tmp_path / "c"
    cache = tc.Cache(folder, _config(shards, tiny_base, "-", cache=str(folder)), "sd15")
    family = create(str(tiny_base), "cpu", torch.float32)
    encoded: list[int] = []
    real = family.encode

    def counting(batch, captions, config):
        encoded.append(len(captions))
        return real(batch, captions, config)

    family.encode = counting
    url = shard_urls(str(shards))[1]  # 4 usable samples: parts 00000 and 00001
    tc.fill(cache, lambda: family, [url], [""], log=lambda *_: None)
    assert sum(encoded) == 4
    parts = sorted((folder / "shards").glob("00001.*.safetensors"))
    want = {p.name: load_file(str(p)) for p in parts}
    hint = want[parts[0].name]["0/controlnet_cond"]
    assert hint.dtype == torch.uint8  # 8-bit map: stored losslessly in a quarter of the bytes
    (folder / "shards" / "00001.json").unlink()  # killed before the shard was done ...
    parts[-1].unlink()  # ... and before its last part was written
    encoded.clear()
    tc.fill(cache, lambda: family, [url], [""], log=lambda *_: None)
    assert sum(encoded) == 2  # only the missing part
    for name, tensors in want.items():
        again = load_file(str(folder / "shards" / name))
        for k, v in tensors.items():
            torch.testing.assert_close(again[k], v)
    keys = [k for k, _ in cache.entries(url)]
    assert keys == [k for k, _ in tc.Cache(filled, cache.config, "sd15").entries(url)]


def test_other_settings_or_weights_are_refused_in_one_line(shards, tiny_base, filled, tmp_path):  # noqa: F811
    from training.cache import Cache
    from training.trainer import Trainer

    with pytest.raises(ValueError, match=r"resolution") as err:
        Trainer(_config(shards, tiny_base, tmp_path / "r", resolution=32, cache=str(filled)),
                device="cpu")  # fmt: skip
    assert "\n" not in str(err.value)
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    vae = next((base / "vae").glob("*.safetensors"))
    vae.write_bytes(vae.read_bytes()[:-4] + b"\0\0\0\0")  # other VAE weights
    with pytest.raises(ValueError, match=r"made with another encoders"):
        Cache(filled, _config(shards, base, "-"), "sd15")
    # unchanged contents with new file times are accepted (the sha, not the time, decides)
    copied = tmp_path / "same"
    shutil.copytree(tiny_base, copied)
    Cache(filled, _config(shards, copied, "-"), "sd15")


def test_cache_cli_fills_reuses_and_refuses(cli, shards, tiny_base, tmp_path):  # noqa: F811
    out = tmp_path / "c"
    args = ["cache", "--data", shards, "--base-model", tiny_base, "--condition", "canny",
            "-o", out, "--resolution", "64"]  # fmt: skip
    first = cli(*args, check=True)
    assert "(8 samples encoded now)" in first.stdout, first.stdout
    assert (out / "empty.safetensors").exists()
    assert "(0 samples encoded now)" in cli(*args, check=True).stdout
    refused = cli(*args[:-1], "32")
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0 and "resolution" in refused.stderr
    assert "centre square" in " ".join(cli("cache", "--help").stdout.split())


def test_sdxl_text_false_loads_no_text_encoders(tmp_path):
    from training.families import create
    from training.tiny_base import write_tiny_sdxl

    base = write_tiny_sdxl(tmp_path / "xl", seed=0)
    family = create(str(base), "cpu", torch.float32, text=False)
    assert family.text_encoder is None and family.text_encoder_2 is None
    assert set(family.locked()) == {"vae", "unet"}


def test_flux_cached_run_equals_uncached_without_t5(shards, tiny_flux, tmp_path):  # noqa: F811
    """``train --cache`` fills the cache on first use, then runs FLUX without CLIP and T5: the
    same losses as the uncached centre-crop run, and a validation grid from cached embeddings."""
    from training.trainer import Trainer

    plain = Trainer(_config(shards, tiny_flux, tmp_path / "plain", crop="centre"), device="cpu")
    expected = plain.train()
    cfg = _config(shards, tiny_flux, tmp_path / "cached", cache=str(tmp_path / "c"),
                  validate_every=2, num_validation=1)  # fmt: skip
    cached = Trainer(cfg, device="cpu")
    assert cached.family.text_encoder is None and cached.family.text_encoder_2 is None
    assert set(cached.family.locked()) == {"vae", "transformer"}
    np.testing.assert_allclose(cached.train(), expected, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "cached" / "validation" / "step-000002.png").exists()


def test_cache_with_union_is_refused_in_one_line(tmp_path):
    """A union run draws its map subsets per step; the cache does not hold that, so the two
    together are refused before any work."""
    from training.config import TrainConfig

    cfg = TrainConfig(data="ds", condition="canny,depth", base_model="b", output="o", union=True,
                      cache=str(tmp_path / "c"))  # fmt: skip
    with pytest.raises(ValueError, match="--cache does not cover --union"):
        cfg.check()
