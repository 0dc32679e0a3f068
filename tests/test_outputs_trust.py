"""Outputs others can use: file modes follow the umask, build folders load with `datasets`,
model cards are valid YAML, exports say where they load, deploy examples run as written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.test_training import _config, shards, tiny_base  # noqa: F401  (fixtures)


@pytest.fixture
def umask_022():
    """Run the test under umask 022 (what most systems use), then restore the old one."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_atomic_save_follows_the_umask_whatever_the_writer_does(tmp_path, umask_022):
    """A writer that makes its file 0600 (as safetensors' save_file does) still gives 0644;
    under umask 027 the same write gives 0640."""
    from pipeline.atomic import atomic_save

    def private_writer(tmp: str) -> None:
        Path(tmp).write_bytes(b"x")
        os.chmod(tmp, 0o600)

    atomic_save(tmp_path / "a.bin", private_writer)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
    os.umask(0o027)
    atomic_save(tmp_path / "b.bin", private_writer)
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]  # no temp left


@pytest.fixture(scope="module")
def exports_022(shards, tiny_base, tmp_path_factory):  # noqa: F811
    """Under umask 022: a 1-step run with its checkpoint, exported twice from the tiny base:
    as is (diffusers only) and with ``nonstandard_single_file``."""
    pytest.importorskip("torch")
    from training.export import export
    from training.trainer import Trainer

    tmp = tmp_path_factory.mktemp("trust")
    old = os.umask(0o022)
    try:
        cfg = _config(shards, tiny_base, tmp / "run", steps=1, checkpoint_every=1)
        Trainer(cfg, device="cpu").train()
        checkpoint = tmp / "run" / "checkpoint-1"
        plain = export(checkpoint, tmp / "plain", samples=0)
        forced = export(checkpoint, tmp / "forced", samples=0, nonstandard_single_file=True)
    finally:
        os.umask(old)
    return {"checkpoint": checkpoint, "plain": plain, "forced": forced, "root": tmp}


def test_checkpoints_state_and_exports_are_0644_under_umask_022(exports_022):
    """Every file of a checkpoint (weights, training state) and of an export is readable by
    others under umask 022, like the shards (safetensors alone writes 0600)."""
    got = modes(exports_022["checkpoint"])
    assert "training_state.safetensors" in got
    assert "controlnet/diffusion_pytorch_model.safetensors" in got
    assert {k: v for k, v in got.items() if v != 0o644} == {}
    got = modes(exports_022["root"] / "forced")
    assert "diffusers/diffusion_pytorch_model.safetensors" in got
    assert "controlnet-checkpoint-1.safetensors" in got  # the single file
    assert {k: v for k, v in got.items() if v != 0o644} == {}


def test_tiny_base_exports_for_diffusers_only(exports_022, capfd):
    """A tiny base (norm_num_groups=8, 32 base channels) would load wrongly in AUTOMATIC1111 and
    ComfyUI, which rebuild SD's numbers: no single file unless asked, and the card says so."""
    from diffusers import ControlNetModel

    from training.export import single_file_problem

    plain = exports_022["plain"]
    assert plain["single_file"] is None
    assert not list((exports_022["root"] / "plain").glob("*.safetensors"))
    assert not list((exports_022["root"] / "plain").glob("*.yaml"))
    card = (plain["diffusers"] / "README.md").read_text()
    assert "load in diffusers only" in card and "norm_num_groups=8" in card
    config = dict(ControlNetModel.load_config(plain["diffusers"]))
    assert "norm_num_groups=8" in single_file_problem(config)
    forced = exports_022["forced"]
    assert forced["metadata"]["hintset.loads_in"] == "diffusers"
    assert forced["metadata"]["modelspec.architecture"] == "hintset-custom/controlnet"


def test_standard_sd15_and_sdxl_configs_get_a_single_file_and_modelspec():
    """SD1.5- and SDXL-size ControlNets (meta device) are what the UIs rebuild: no problem;
    their ModelSpec architecture ids are the ones SwarmUI registers for ControlNets."""
    import torch
    from diffusers import ControlNetModel

    from training.export import modelspec, single_file_problem

    meta = {"hintset.base_model": "org/base", "hintset.conditions": "canny",
            "hintset.steps": "10", "hintset.resolution": "512"}  # fmt: skip
    with torch.device("meta"):
        sd15 = dict(ControlNetModel(cross_attention_dim=768).config)
        sdxl = dict(ControlNetModel(cross_attention_dim=2048, addition_embed_type="text_time",
                                    block_out_channels=(320, 640, 1280),
                                    projection_class_embeddings_input_dim=2816,
                                    addition_time_embed_dim=256,
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                      "CrossAttnDownBlock2D")).config)  # fmt: skip
    assert single_file_problem(sd15) is None and single_file_problem(sdxl) is None
    spec = modelspec(meta, sd15, "cldm", "my title")
    assert spec["modelspec.sai_model_spec"] == "1.0.0"
    assert spec["modelspec.architecture"] == "stable-diffusion-v1/controlnet"
    assert spec["modelspec.implementation"] == "https://github.com/lllyasviel/ControlNet"
    assert spec["modelspec.title"] == "my title" and spec["modelspec.resolution"] == "512x512"
    assert all(isinstance(v, str) and v for v in spec.values())  # safetensors wants strings
    spec = modelspec(meta, sdxl, "diffusers", "t")
    assert spec["modelspec.architecture"] == "stable-diffusion-xl-v1-base/controlnet"
    assert spec["modelspec.implementation"] == "diffusers"


NASTY = [
    'a "quoted" caption: with a colon # and a hash',
    "line one\nline two\n---\nafter a dash line",
    "- starts like a list item: {not: a map} [nor, a list] & *ref !tag %",
    "'single' quotes and trailing spaces   ",
]


def front(card: str) -> dict:
    """The front matter as the Hub finds it: between the first two '---' lines."""
    import yaml

    assert card.startswith("---\n")
    return yaml.safe_load(card[4 : card.index("\n---\n", 4)])


@pytest.mark.parametrize("sdxl", [False, True])
def test_model_card_front_matter_is_valid_yaml_for_any_caption_and_path(tmp_path, sdxl):
    """Quotes, colons, newlines, '#', '---' in captions and paths round-trip through
    yaml.safe_load; a local path never becomes base_model; licence, pipeline tag, tags."""
    from training.model_card import model_card

    base = tmp_path / 'my: "base" #1'
    base.mkdir()
    meta = {"hintset.base_model": str(base), "hintset.conditions": "canny",
            "hintset.architecture": "sdxl" if sdxl else "sd",
            "hintset.conditioning_channels": "3", "hintset.steps": "2",
            "hintset.resolution": "64", "hintset.dataset": 'd: "x"\n# y',
            "hintset.dataset_manifest_sha256": "0" * 64}  # fmt: skip
    data = front(model_card(meta, "controlnet-checkpoint-2.safetensors", NASTY))
    assert [w["text"] for w in data["widget"]] == NASTY
    assert "base_model" not in data  # a local folder, not a hub id
    assert data["license"] == "other" and data["pipeline_tag"] == "text-to-image"
    assert data["library_name"] == "diffusers" and "controlnet" in data["tags"]
    assert "canny" in data["tags"]
    (base / "README.md").write_text("---\nlicense: creativeml-openrail-m\n---\n# base\n")
    assert front(model_card(meta, None, None))["license"] == "creativeml-openrail-m"
    meta["hintset.base_model"] = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    data = front(model_card(meta, None, None))
    assert data["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    cache = tmp_path / "hub" / "models--org--my-base" / "snapshots" / "abc123"
    cache.mkdir(parents=True)
    meta["hintset.base_model"] = str(cache)  # a Hugging Face cache snapshot: its hub id
    assert front(model_card(meta, None, None))["base_model"] == "org/my-base"


LOAD = """
import json, sys
import datasets
ds = datasets.load_dataset(sys.argv[1], split="train")
row = ds[0]
print(json.dumps({"rows": len(ds), "columns": sorted(ds.column_names),
                  "image": list(row["jpg"].size), "canny": list(row["canny.png"].size),
                  "captions": sorted(ds["txt"]), "keys": sorted(ds["__key__"])}))
"""


def test_build_writes_a_dataset_card_that_datasets_loads(cli, photo_paths, tmp_path):
    """`hintset build` ends with OUT/README.md whose configs point at the shards:
    `datasets.load_dataset(OUT, split="train")` yields every sample with image, caption and
    maps (without the card, plan/ and index/ Parquet break it). A user's README.md survives."""
    import json
    import subprocess
    import sys

    import yaml

    pytest.importorskip("datasets")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, src in enumerate(photo_paths[:3]):
        (photos / f"p{i}.jpg").write_bytes(src.read_bytes())
        (photos / f"p{i}.txt").write_text(f'caption {i}: "quoted" # hash')
    out = tmp_path / "out"
    r = cli("build", photos, "-o", out, "-a", "canny,lines", "--resolution", "64",
            "--shard-size", "2", "-q")  # fmt: skip
    assert r.returncode == 0, r.stderr
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "shards/*.tar"}]
    assert [f["name"] for f in meta["dataset_info"]["features"]] == [
        "__key__", "jpg", "txt", "canny.png", "lines.png"]  # fmt: skip
    assert "| `lines.png` | lines | 2 |" in card and "none needed" in card
    assert stat.S_IMODE((out / "README.md").stat().st_mode) == 0o666 & ~current_umask()
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", LOAD, str(out)], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["rows"] == 3 and got["columns"] == [
        "__key__",
        "canny.png",
        "jpg",
        "lines.png",
        "txt",
    ]
    assert min(got["image"]) == 64 and got["canny"] == got["image"]
    assert got["captions"] == [f'caption {i}: "quoted" # hash' for i in range(3)]
    # a README.md the user wrote is never overwritten; hintset's own card is refreshed
    (out / "README.md").write_text("# my notes\n")
    r = cli("build", photos, "-o", out, "-a", "canny,lines", "--resolution", "64",
            "--shard-size", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (out / "README.md").read_text() == "# my notes\n"
    assert "README.md is not hintset's" in r.stdout + r.stderr


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
