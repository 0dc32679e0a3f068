"""depth and seg (transformers models), model-folder resolution and ``hintset weights``.

Random weights come from tiny configs of the real architecture classes, saved with
``save_pretrained`` into ``DIR/<hub id>/`` and loaded through the real loading code offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annotators import ade20k, create, depth, seg
from annotators.hf_models import Preprocess
from annotators.weights import WeightsError, resolve_model_dir
from pipeline.decode import load_image, resize_short_side
from tests.weights import write_depth, write_seg

NETWORKS = [
    ("depth", "dpt-hybrid"),
    ("depth", "depth-anything-v2-small"),
    ("seg", "upernet-convnext-small"),
    ("seg", "segformer-b0"),
]
FAMILY = {"depth": depth, "seg": seg}
#: small working sizes keep the tests fast (DPT-hybrid only runs at 384x384)
SMALL = {"depth-anything-v2-small": 168, "upernet-convnext-small": 160, "segformer-b0": 160}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """All four networks with random tiny weights, in the published folder layout."""
    folder = tmp_path_factory.mktemp("weights")
    write_depth(folder, tiny=True, models=["dpt-hybrid", "depth-anything-v2-small"])
    write_seg(folder, tiny=True, models=["upernet-convnext-small", "segformer-b0"])
    return folder


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """Never touch the network, and ignore any weights/cache of the machine running the tests."""
    monkeypatch.setenv("HINTSET_OFFLINE", "1")
    monkeypatch.delenv("HINTSET_WEIGHTS_DIR", raising=False)


@pytest.fixture(scope="module")
def photos(photo_paths) -> list[np.ndarray]:
    """Three real photos, small, with landscape and portrait aspect ratios."""
    picked = [load_image(p) for p in photo_paths[:6]]
    images = [resize_short_side(img, 160) for img in picked]
    landscape = [i for i in images if i.shape[1] > i.shape[0]][:2]
    portrait = [i for i in images if i.shape[0] > i.shape[1]][:1] or [images[0][:, :100].copy()]
    return landscape + portrait


def copy_model(tiny_dir: Path, repo: str, dest: Path) -> Path:
    """Copy one model folder to ``dest/<repo>`` (to corrupt it without touching the fixture)."""
    import shutil

    target = dest / repo
    shutil.copytree(tiny_dir / repo, target)
    return target


# -- format: palette and normalisation -------------------------------------------------------
def test_ade20k_palette_is_the_published_one():
    assert len(ade20k.CLASSES) == len(ade20k.PALETTE) == 150
    assert ade20k.PALETTE.dtype == np.uint8 and ade20k.PALETTE.shape == (150, 3)
    known = {  # mmseg ADE20KDataset.PALETTE / ControlNet annotator/uniformer
        0: ("wall", (120, 120, 120)),
        2: ("sky", (6, 230, 230)),
        4: ("tree", (4, 200, 3)),
        12: ("person", (150, 5, 61)),
        20: ("car", (0, 102, 200)),
        87: ("streetlight", (0, 71, 255)),
        136: ("traffic light", (41, 0, 255)),
        149: ("flag", (92, 0, 255)),
    }
    for index, (name, rgb) in known.items():
        assert ade20k.CLASSES[index] == name
        assert tuple(int(v) for v in ade20k.PALETTE[index]) == rgb
    colours = [tuple(c) for c in ade20k.PALETTE.tolist()]
    assert len(set(colours)) == 149  # the published palette repeats one grey ...
    dupes = [i for i, c in enumerate(colours) if colours.count(c) > 1]
    assert dupes == [6, 48]  # ... for road and skyscraper
    assert len(set(ade20k.CLASSES)) == 150
    # all 450 values: sha256 of the palette bytes as published in mmseg's ade.py
    digest = hashlib.sha256(ade20k.PALETTE.tobytes()).hexdigest()
    assert digest == "ce475c9151035eff51f4cf27fd7d906959b1480f6d15b9423ae2417c1b23a0ed"


def test_colorize_maps_indices_to_palette():
    labels = np.array([[0, 12], [149, 2]], np.uint8)
    rgb = ade20k.colorize(labels)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 1].tolist() == [150, 5, 61] and rgb[1, 0].tolist() == [92, 0, 255]
    with pytest.raises(ValueError):
        ade20k.colorize(np.array([[150]], np.uint8))


def test_depth_normalisation_near_is_bright():
    # inverse depth of a floor seen from above: 1/distance, near (bottom rows) is large
    distance = np.linspace(10.0, 1.0, 64, dtype=np.float32)[:, None].repeat(48, axis=1)
    out = depth.normalize_depth(1.0 / distance)
    assert out.dtype == np.uint8 and out.shape == (64, 48)
    assert out[-1].min() == 255 and out[0].max() == 0  # nearest = white, farthest = black
    assert np.all(np.diff(out[:, 0].astype(int)) >= 0)  # monotone: brighter as it gets nearer
    wide = depth.normalize_depth(1.0 / distance, bits=16)
    assert wide.dtype == np.uint16 and wide.max() == 65535 and wide.min() == 0
    flat = depth.normalize_depth(np.full((4, 4), 3.0, np.float32))
    assert not flat.any()
    holes = depth.normalize_depth(np.array([[np.nan, 1.0], [2.0, 3.0]], np.float32))
    assert holes.max() == 255 and holes[0, 0] == 0


def test_working_shapes():
    da = Preprocess((518, 518), keep_aspect=True, multiple=14, mean=(0,) * 3, std=(1,) * 3)
    h, w = da.working_shape(480, 640)
    assert h == 518 and w % 14 == 0 and abs(w / h - 640 / 480) < 0.03
    fixed = Preprocess((384, 384), False, 32, (0,) * 3, (1,) * 3, fixed=True)
    assert fixed.working_shape(480, 640, short_side=512) == (384, 384)
    free = Preprocess((512, 512), False, 32, (0,) * 3, (1,) * 3)
    assert free.working_shape(300, 700) == (512, 512)  # processor squash
    assert free.working_shape(300, 700, short_side=512) == (512, 1184)


# -- each network: tiny random weights through the real loading code -----------------------------
@pytest.mark.parametrize("name,model", NETWORKS)
def test_network_meets_contract(tiny_dir, photos, name, model):
    annotator = create(
        name, model=model, weights_dir=str(tiny_dir), device="cpu", resolution=SMALL.get(model, 0)
    )
    annotator.load()
    annotator.load()  # idempotent
    results = annotator.annotate_batch(photos, keys=["a", "b", "c"])
    for img, result in zip(photos, results, strict=True):
        for arr in result.maps.values():
            assert arr.shape[:2] == img.shape[:2]
        if name == "depth":
            (dmap,) = result.maps.values()
            assert dmap.dtype == np.uint8 and dmap.ndim == 2
            assert 0.0 <= result.stats["depth_mean"] <= 1.0
        else:
            labels, rgb = result.maps["seglabel"], result.maps["seg"]
            assert labels.dtype == np.uint8 and labels.ndim == 2 and labels.max() < 150
            assert rgb.dtype == np.uint8 and rgb.shape == (*img.shape[:2], 3)
            assert np.array_equal(rgb, ade20k.PALETTE[labels])
            assert result.stats["seg_classes"] == len(np.unique(labels))
    (identity,) = annotator.weights_identity()
    weights = tiny_dir / FAMILY[name].MODELS[model].repo_id / "model.safetensors"
    assert identity["file"] == "model.safetensors"
    assert identity["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert annotator.info()["weights"] == [identity]


@pytest.mark.parametrize("model", ["dpt-hybrid", "depth-anything-v2-small"])
def test_predict_depth_batched_equals_single(tiny_dir, photos, model):
    annotator = create(
        "depth",
        model=model,
        weights_dir=str(tiny_dir),
        device="cpu",
        resolution=SMALL.get(model, 0),
    )
    batched = annotator.predict_depth(photos)
    single = [annotator.predict_depth([img])[0] for img in photos]
    for img, b, s in zip(photos, batched, single, strict=True):
        assert b.dtype == np.float32 and b.shape == img.shape[:2]
        np.testing.assert_allclose(b, s, rtol=1e-4, atol=1e-4 * float(np.abs(s).max() + 1e-6))
    assert not np.allclose(batched[0].std(), 0.0)  # a real prediction, not a constant


def test_depth_16bit(tiny_dir, photos):
    annotator = create(
        "depth", model="depth-anything-v2-small", bits="16", weights_dir=str(tiny_dir)
    )
    dmap = annotator(photos[0])
    assert dmap.dtype == np.uint16 and dmap.shape == photos[0].shape[:2] and dmap.max() == 65535


def test_model_given_as_local_folder(tiny_dir, photos):
    folder = tiny_dir / seg.MODELS["segformer-b0"].repo_id
    annotator = create("seg", model=str(folder), resolution=128)
    assert annotator(photos[0]).shape == (*photos[0].shape[:2], 3)
    assert annotator.weights_identity()[0]["model"] == str(folder)


# -- loading errors -----------------------------------------------------------------------
def test_pinned_sha256(tiny_dir):
    repo = depth.MODELS["dpt-hybrid"].repo_id
    actual = hashlib.sha256((tiny_dir / repo / "model.safetensors").read_bytes()).hexdigest()
    create("depth", weights_dir=str(tiny_dir), sha256=actual).load()
    with pytest.raises(WeightsError, match=r"sha256 .* expected 000000000000") as err:
        create("depth", weights_dir=str(tiny_dir), sha256="0" * 64).load()
    assert "\n" not in str(err.value)


def _rewrite(path: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata={"format": "pt"})


@pytest.mark.parametrize("name,model", [NETWORKS[0], NETWORKS[2]])
def test_missing_key_and_wrong_shape_fail_clearly(tiny_dir, tmp_path, name, model):
    import torch

    repo = FAMILY[name].MODELS[model].repo_id
    folder = copy_model(tiny_dir, repo, tmp_path / "missing")
    from safetensors.torch import load_file

    names = load_file(str(folder / "model.safetensors"))
    key = sorted(k for k in names if "head" in k and k.endswith("weight"))[0]
    _rewrite(folder / "model.safetensors", lambda s: s.pop(key))
    with pytest.raises(WeightsError, match="missing keys") as err:
        create(name, model=model, weights_dir=str(tmp_path / "missing")).load()
    assert key in str(err.value) and "\n" not in str(err.value)

    folder = copy_model(tiny_dir, repo, tmp_path / "shape")

    def widen(state):
        state[key] = torch.zeros(*(n + 1 for n in state[key].shape))

    _rewrite(folder / "model.safetensors", widen)
    with pytest.raises(WeightsError, match="wrong shapes") as err:
        create(name, model=model, weights_dir=str(tmp_path / "shape")).load()
    assert key in str(err.value) and "\n" not in str(err.value)


def test_unused_dpt_fusion_weights_may_be_absent(tiny_dir, tmp_path, photos):
    """Published DPT checkpoints lack the first fusion layer's unused residual_layer1."""
    folder = copy_model(tiny_dir, depth.MODELS["dpt-hybrid"].repo_id, tmp_path)

    def drop(state):
        for k in [k for k in state if "fusion_stage.layers.0.residual_layer1." in k]:
            state.pop(k)

    _rewrite(folder / "model.safetensors", drop)
    annotator = create("depth", weights_dir=str(tmp_path))
    assert annotator(photos[0]).shape == photos[0].shape[:2]


def test_missing_and_incomplete_model_messages(tiny_dir, tmp_path):
    with pytest.raises(WeightsError) as err:
        create("depth", weights_dir=str(tmp_path)).load()
    text = str(err.value)
    assert "Intel/dpt-hybrid-midas" in text and "\n" not in text
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert name in text
    assert f"{tmp_path}/Intel/dpt-hybrid-midas/" in text

    folder = copy_model(tiny_dir, seg.MODELS["segformer-b0"].repo_id, tmp_path)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(WeightsError, match="incomplete: missing preprocessor_config.json"):
        create("seg", model="segformer-b0", weights_dir=str(tmp_path)).load()
    with pytest.raises(WeightsError, match="neither an existing folder nor a hub id"):
        resolve_model_dir(str(tmp_path / "nowhere"))


def test_dpt_hybrid_runs_at_the_working_size_with_aspect_kept(tiny_dir, photos):
    """D5: as ControlNet's MiDaS, DPT-hybrid sees the image at the working short side with its
    aspect ratio (position embeddings interpolated), not squashed to 384x384."""
    import cv2
    import torch

    from annotators.depth import dpt_hybrid_forward

    annotator = create("depth", weights_dir=str(tiny_dir), device="cpu", resolution=192)
    annotator.load()
    model = annotator._model
    square = torch.rand(1, 3, 384, 384) * 2 - 1  # the config's size: same as transformers' forward
    with torch.no_grad():
        ours = dpt_hybrid_forward(model, square)[0, 0]
        theirs = model(pixel_values=square).predicted_depth[0]
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert annotator._pre.working_shape(160, 250, 192) == (192, 300)  # aspect kept, padded to 320
    image = cv2.resize(photos[0], (256, 192), interpolation=cv2.INTER_AREA)  # multiples of 32
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        expected = depth.normalize_depth(dpt_hybrid_forward(model, pixels)[0, 0].numpy())
    got = annotator(image)
    assert got.shape == (192, 256)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_resolves_from_hugging_face_cache(tiny_dir, tmp_path):
    """A model in the HF cache layout is found offline via snapshot_download(local_files_only)."""
    repo = depth.MODELS["depth-anything-v2-small"].repo_id
    cache = tmp_path / "hub"
    snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / ("a" * 40)
    copy_model(tiny_dir, repo, tmp_path / "src")
    (snap.parent).mkdir(parents=True)
    (tmp_path / "src" / repo).rename(snap)
    (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("a" * 40)
    code = (
        "from annotators.weights import resolve_model_dir;"
        f"print(resolve_model_dir({repo!r}, offline=True))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == snap


# -- command line ---------------------------------------------------------------------------
def test_annotate_without_weights_is_one_line(cli, photos_dir, tmp_path):
    env = {
        "HINTSET_OFFLINE": "1",
        "HINTSET_WEIGHTS_DIR": str(tmp_path / "empty"),
        "HF_HUB_CACHE": str(tmp_path / "cache"),
    }
    photo = sorted(photos_dir.glob("*.jpg"))[0]
    proc = cli("annotate", photo, "-o", tmp_path / "out", "--annotators", "depth", "-q", env=env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    named = [line for line in proc.stderr.splitlines() if "missing model" in line]
    assert len(named) == 1
    for name in ("Intel/dpt-hybrid-midas", "config.json", "model.safetensors"):
        assert name in named[0]


def test_annotate_depth_and_seg_end_to_end(cli, photo_paths, tiny_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in photo_paths[:2]:
        (inputs / path.name).write_bytes(path.read_bytes())
    env = {"HINTSET_OFFLINE": "1", "HINTSET_WEIGHTS_DIR": str(tiny_dir)}
    out = tmp_path / "out"
    proc = cli(
        "annotate", inputs, "-o", out, "--annotators", "depth,seg", "-r", "192", "-w", "1",
        "--param", "seg.model=segformer-b0", "--param", "seg.resolution=192", "-q", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    for path in photo_paths[:2]:
        sizes = {
            suffix: Image.open(out / f"{path.stem}.{suffix}.png")
            for suffix in ("depth", "seg", "seglabel")
        }
        assert sizes["depth"].mode == "L" and sizes["seglabel"].mode == "L"
        assert sizes["seg"].mode == "RGB"
        assert len({im.size for im in sizes.values()}) == 1 and min(sizes["depth"].size) == 192
    report = json.loads((out / "report.json").read_text())
    weights = {a["name"]: a["weights"][0] for a in report["annotators"]}
    assert set(weights) == {"depth", "seg"}
    assert all(len(w["sha256"]) == 64 for w in weights.values())


def test_weights_command_lists_presence(cli, tiny_dir, tmp_path):
    env = {"HINTSET_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    proc = cli("weights", "--weights-dir", tiny_dir, "--json", env=env, check=True)
    rows = {(r["annotator"], r["name"]): r for r in json.loads(proc.stdout)}
    present = rows[("depth", "dpt-hybrid")]
    assert present["present"] and present["default"]
    weights = tiny_dir / "Intel/dpt-hybrid-midas/model.safetensors"
    assert present["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert present["size"] == weights.stat().st_size
    assert rows[("seg", "segformer-b0")]["present"]
    absent = rows[("depth", "depth-anything-v2-large")]
    assert not absent["present"] and "model.safetensors" in absent["needs"]

    proc = cli("weights", env={**env, "HINTSET_WEIGHTS_DIR": str(tmp_path)}, check=True)
    assert "Intel/dpt-hybrid-midas" in proc.stdout and "MISSING" in proc.stdout
    assert " 0 present" in proc.stdout or proc.stdout.splitlines()[-1].startswith("0 present")
