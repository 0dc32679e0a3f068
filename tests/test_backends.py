"""Backends of issue 25: DSINE and Marigold normals, Marigold depth, OneFormer COCO seg.

Weights are written once per module in the published layouts (``dsine.pt`` at real size, tiny
Marigold pipelines saved by diffusers, a tiny OneFormer with COCO's 133 classes) and loaded
offline through the code a user runs. Every normal backend shares NormalBAE's axes (red = left,
green = up, blue = towards the camera): checked on synthetic planes whose normal is known.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from annotators import coco, create, marigold
from annotators.depth import normalize_depth
from annotators.dsine import DSINE_WEIGHTS, centred_padding, intrinsics
from annotators.learned import clear_cache
from annotators.nets.dsine import ray_relu
from annotators.normal import normal_from_depth, normals_to_rgb
from annotators.weights import WeightsError
from tests.weights_backends import write_dsine, write_marigold, write_oneformer_coco

pytestmark = pytest.mark.usefixtures("offline_weights")
COCO_REPO = "shi-labs/oneformer_coco_swin_large"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("backends")
    write_dsine(folder)
    write_marigold(folder)
    write_oneformer_coco(folder)
    yield folder
    clear_cache()


def make(name: str, weights_dir: Path, **params):
    return create(name, weights_dir=str(weights_dir), device="cpu", **params)


def assert_batch_equals_single(annotator, photos, key: str) -> list:
    """Maps of the two photos (two sizes) and of two same-size crops run as one batch equal
    the maps of each image alone (within 1 level); returns the photos' results."""
    crops = [photos[0][:64, :96].copy(), photos[1][:64, :96].copy()]
    results = annotator.annotate_batch(photos + crops, keys=["a", "b", "c", "d"])
    for image, result in zip(photos + crops, results, strict=True):
        single = annotator.annotate_batch([image])[0].maps[key]
        assert result.maps[key].shape[:2] == image.shape[:2]
        assert np.abs(single.astype(int) - result.maps[key].astype(int)).max() <= 1
        assert result.maps[key].std() > 0
    return results[:2]


# -- DSINE ---------------------------------------------------------------------------------
def test_dsine_published_layout(weights_dir):
    """dsine.pt: {"model": state dict} of DSINE v02 (72.7M parameters), loaded strictly."""
    checkpoint = torch.load(weights_dir / "dsine.pt", weights_only=True)
    state = checkpoint["model"]
    assert sum(v.numel() for v in state.values()) == 72_737_611
    shapes = {"decoder.conv2.weight": (2048, 2050, 1, 1), "decoder.up1._net.0.weight": (1024, 2226, 3, 3),
              "gru.convz.weight": (64, 130, 5, 5), "up_prob_head.4.weight": (576, 64, 1, 1),
              "xy_head.4.weight": (50, 64, 1, 1),
              "encoder.original_model.conv_head.weight": (2048, 512, 1, 1)}  # fmt: skip
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert DSINE_WEIGHTS.repo_id == "bdsqlsz/qinglong_controlnet-lllite"
    assert DSINE_WEIGHTS.subfolder == "Annotators"


def test_dsine_wrong_checkpoint_is_one_line(weights_dir, tmp_path):
    state = torch.load(weights_dir / "dsine.pt", weights_only=True)["model"]
    del state["gru.convq.bias"]
    torch.save({"model": state}, tmp_path / "dsine.pt")
    clear_cache()
    with pytest.raises(WeightsError) as err:
        make("normal", tmp_path, backend="dsine").load()
    assert "\n" not in str(err.value) and "gru.convq.bias" in str(err.value)


def test_dsine_follows_the_authors_protocol(weights_dir, photos):
    """Black padding centred to 32, ImageNet normalisation, fov-60 intrinsics shifted by the
    padding, 5 iterations, crop back, (n + 1) / 2: the map equals the network run that way."""
    annotator = make("normal", weights_dir, backend="dsine")
    image = photos[1]
    height, width = image.shape[:2]
    result = assert_batch_equals_single(annotator, photos, "normal")[1].maps["normal"]
    left, right, top, bottom = centred_padding(height, width)
    assert (left + right) % 2 <= 1 and (width + left + right) % 32 == 0 and top <= bottom
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255.0
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    k = torch.from_numpy(intrinsics(height, width, 60.0))
    assert k[0, 0] == pytest.approx(max(height, width) / 2 / np.tan(np.radians(30)))
    k[0, 2] += left
    k[1, 2] += top
    with torch.inference_mode():
        n = annotator.runner.model(x, k[None])[0, :, top : top + height, left : left + width]
    expected = normals_to_rgb(n.permute(1, 2, 0).numpy())
    assert np.abs(result.astype(int) - expected.astype(int)).max() <= 1
    info = annotator.info()
    assert info["weights"][0]["file"] == "dsine.pt" and "non-commercial" in info["licence"]
    assert info["convention"]["name"] == "scannet_rgb"


# -- axis directions: every normal backend agrees -------------------------------------------
#: a plane facing image-left, up and towards the camera, in NormalBAE's axes (left, up, front)
PLANE = np.array([0.5, 0.4, np.sqrt(1 - 0.25 - 0.16)], np.float32)


def test_dsine_frame_is_normalbae_frame():
    """DSINE keeps normals with a positive dot product with the viewing ray (OpenCV axes), so in
    NormalBAE's axes a floor below the centre (up), a wall right of the centre (facing left) and
    a front wall survive its ray ReLU unchanged, and their opposites do not."""
    k = torch.from_numpy(intrinsics(64, 64, 60.0))

    def ray(u, v):
        r = torch.tensor([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], 1.0])
        return (r / r.norm()).view(1, 3, 1, 1)

    cases = [((32.0, 60.0), (0.0, 1.0, 0.0)), ((60.0, 32.0), (1.0, 0.0, 0.0)),
             ((31.5, 31.5), (0.0, 0.0, 1.0))]  # fmt: skip
    for (u, v), normal in cases:
        n = torch.tensor(normal).view(1, 3, 1, 1)
        assert torch.allclose(ray_relu(n, ray(u, v)), n, atol=1e-6)
        assert not torch.allclose(ray_relu(-n, ray(u, v)), -n, atol=1e-2)


def test_every_backend_colours_a_plane_the_same_way():
    """The plane facing left/up/front: NormalBAE and DSINE encode n, Marigold (x right) is
    converted; all give R, G, B > 128. ControlNet 1.0's depth backend puts the same directions in
    B (left), G (up), R (z) on a synthetic depth plane."""
    expected = normals_to_rgb(PLANE[None, None])[0, 0]
    assert (expected > 128).all()
    marigold_native = PLANE * np.array([-1, 1, 1], np.float32)  # Marigold: x = right
    converted = marigold.to_normalbae_axes(marigold_native[None, None])
    assert np.array_equal(normals_to_rgb(converted)[0, 0], expected)
    # inverse depth of a plane that faces left (nearer to the right) and up (nearer below)
    ys, xs = np.mgrid[0:64, 0:64].astype(np.float32)
    plane_depth = 10.0 + 0.5 * xs + 0.4 * ys
    rgb = normal_from_depth(plane_depth, bg_threshold=0.0)[32, 32]
    assert rgb[2] > 128 and rgb[1] > 128 and rgb[0] > 128  # B = left, G = up, R = z


# -- Marigold --------------------------------------------------------------------------------
def test_marigold_published_folder(weights_dir):
    for models, cls in ((marigold.DEPTH_MODELS, "MarigoldDepthPipeline"),
                        (marigold.NORMALS_MODELS, "MarigoldNormalsPipeline")):  # fmt: skip
        (spec,) = models.values()
        folder = weights_dir / spec.repo_id
        assert not marigold.pipeline_missing(folder)
        assert json.loads((folder / "model_index.json").read_text())["_class_name"] == cls
        for name in ("tokenizer/vocab.json", "tokenizer/merges.txt"):
            assert (folder / name).is_file()
        unet = json.loads((folder / "unet/config.json").read_text())
        assert unet["in_channels"] == 8 and unet["out_channels"] == 4  # image + target latents


def _pipeline_prediction(annotator, image):
    """The diffusers pipeline called directly with the same initial noise."""
    runner = getattr(annotator, "_marigold", None) or annotator.runner
    batch = torch.from_numpy(image[None]).permute(0, 3, 1, 2)
    with torch.inference_mode():
        return runner.pipe(batch, processing_resolution=64, latents=runner._noise(batch),
                           output_type="np").prediction[0]  # fmt: skip


def test_marigold_depth_is_the_pipelines_depth_near_bright(weights_dir, photos):
    annotator = make("depth", weights_dir, model="marigold-depth-v1-1", processing_resolution=64)
    results = assert_batch_equals_single(annotator, photos, "depth")
    expected = normalize_depth(1.0 - _pipeline_prediction(annotator, photos[0])[..., 0])
    assert np.abs(results[0].maps["depth"].astype(int) - expected.astype(int)).max() <= 1
    again = make("depth", weights_dir, model="marigold-depth-v1-1", processing_resolution=64)
    assert np.array_equal(again(photos[0]), results[0].maps["depth"])  # deterministic
    other_seed = make("depth", weights_dir, model="marigold-depth-v1-1", processing_resolution=64,
                      seed=1)  # fmt: skip
    assert not np.array_equal(other_seed(photos[0]), results[0].maps["depth"])
    info = annotator.info()
    assert info["licence"].startswith("RAIL++-M")
    assert [w["file"] for w in info["weights"]] == list(marigold.IDENTITY_FILES)


def test_marigold_normals_are_converted_to_normalbae_axes(weights_dir, photos):
    annotator = make("normal", weights_dir, backend="marigold", processing_resolution=64)
    results = assert_batch_equals_single(annotator, photos, "normal")
    native = _pipeline_prediction(annotator, photos[0])
    expected = normals_to_rgb(marigold.to_normalbae_axes(native))
    assert np.abs(results[0].maps["normal"].astype(int) - expected.astype(int)).max() <= 1
    assert annotator.info()["convention"]["source"].startswith("Marigold")


def test_marigold_incomplete_folder_is_one_line(weights_dir, tmp_path):
    spec = next(iter(marigold.DEPTH_MODELS.values()))
    shutil.copytree(weights_dir / spec.repo_id, tmp_path / spec.repo_id)
    (tmp_path / spec.repo_id / "unet/diffusion_pytorch_model.safetensors").unlink()
    annotator = make("depth", tmp_path, model="marigold-depth-v1-1")
    for check in (annotator.check_ready, annotator.load):
        with pytest.raises(WeightsError) as err:
            check()
        assert "\n" not in str(err.value)
        assert "unet/diffusion_pytorch_model.safetensors" in str(err.value)


# -- OneFormer COCO --------------------------------------------------------------------------
def test_coco_palette_is_panoptic_order():
    assert len(coco.CLASSES) == 133 and coco.CLASSES[0] == "person"
    assert tuple(coco.PALETTE[0]) == (220, 20, 60) and coco.CLASSES[80] == "banner"


def test_oneformer_coco_maps_coco_classes_in_their_colours(weights_dir, photos):
    from transformers import OneFormerImageProcessor

    annotator = make("seg", weights_dir, model="oneformer-coco-swin-large", resolution=64)
    results = annotator.annotate_batch(photos, keys=["a", "b"])
    processor = OneFormerImageProcessor(num_labels=133)
    for image, result in zip(photos, results, strict=True):
        _, pixels, _ = next(annotator.batches([image]))
        with torch.no_grad():
            out = annotator._model(pixel_values=pixels, task_inputs=annotator._task_inputs)
        (expected,) = processor.post_process_semantic_segmentation(
            out, target_sizes=[image.shape[:2]]
        )
        labels = result.maps["seglabel"]
        assert labels.max() < 133 and len(np.unique(labels)) > 1
        assert np.mean(labels == expected.numpy()) > 0.99
        assert np.array_equal(result.maps["seg"], coco.PALETTE[labels])
        assert result.stats["seg_person"] == np.mean(labels == 0)
    assert annotator.info()["licence"] == "MIT"


def test_oneformer_coco_rejects_an_ade20k_model(weights_dir, tmp_path):
    from tests.weights import write_oneformer

    write_oneformer(tmp_path, repo_id=COCO_REPO)  # 150 classes under the COCO name
    with pytest.raises(WeightsError, match="133"):
        make("seg", tmp_path, model="oneformer-coco-swin-large").load()


# -- the command line ------------------------------------------------------------------------
def test_cli_lists_the_backends(cli):
    rows = {r["name"]: r for r in json.loads(cli("annotators", "--json", check=True).stdout)}
    normal = rows["normal"]["backends"]
    assert (
        normal["dsine"]["files"] == ["dsine.pt"] and "non-commercial" in normal["dsine"]["licence"]
    )
    assert "test_minimal" in normal["dsine"]["reference"]
    assert "unet/diffusion_pytorch_model.safetensors" in normal["marigold"]["files"]
    assert normal["marigold"]["repos"] == ["prs-eth/marigold-normals-v1-1"]
    depth = rows["depth"]["backends"]["marigold-depth-v1-1"]
    assert depth["licence"].startswith("RAIL++-M") and "model_index.json" in depth["files"]
    assert "MarigoldDepthPipeline" in depth["reference"]
    seg = rows["seg"]["backends"]["oneformer-coco-swin-large"]
    assert seg["repos"] == [COCO_REPO] and "seg_ofcoco" in seg["reference"]


def _one_photo(photo_paths, tmp_path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo_paths[3], src / "a.jpg")
    return src


def test_cli_annotates_a_photo_with_each_backend(cli, weights_dir, photo_paths, tmp_path):
    src = _one_photo(photo_paths, tmp_path)
    runs = {
        "one": ["-a", "depth,normal,seg", "--param", "depth.model=marigold-depth-v1-1",
                "--param", "depth.processing_resolution=64", "--param", "normal.backend=dsine",
                "--param", "seg.model=oneformer-coco-swin-large"],
        "two": ["-a", "normal", "--param", "normal.backend=marigold",
                "--param", "normal.processing_resolution=64"],
    }  # fmt: skip
    for out, args in runs.items():
        cli("annotate", src, "-o", tmp_path / out, *args, "--resolution", "64", "--workers", "1",
            "--weights-dir", weights_dir, check=True, env={"HINTSET_OFFLINE": "1"})  # fmt: skip
    for out, name, channels in (("one", "depth", 1), ("one", "normal", 3), ("one", "seg", 3),
                                ("two", "normal", 3)):  # fmt: skip
        written = cv2.imread(str(tmp_path / out / f"a.{name}.png"), cv2.IMREAD_UNCHANGED)
        assert min(written.shape[:2]) == 64 and (written.ndim == 3) == (channels == 3)
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    licences = {a["name"]: a["licence"] for a in report["annotators"]}
    assert licences["depth"].startswith("RAIL++-M") and "non-commercial" in licences["normal"]


def test_cli_missing_weights_exit_2_before_work(cli, photo_paths, tmp_path):
    """One line naming every missing file of the three backends; nothing written."""
    src = _one_photo(photo_paths, tmp_path)
    proc = cli("annotate", src, "-o", tmp_path / "out", "-a", "depth,normal,seg",
               "--param", "depth.model=marigold-depth-v1-1", "--param", "normal.backend=dsine",
               "--param", "seg.model=oneformer-coco-swin-large", "--weights-dir", tmp_path / "none",
               env={"HINTSET_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf")})  # fmt: skip
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "dsine.pt" in line]
    assert len(errors) == 1
    for name in ("unet/diffusion_pytorch_model.safetensors", "prs-eth/marigold-depth-v1-1",
                 "shi-labs/oneformer_coco_swin_large"):  # fmt: skip
        assert name in errors[0]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.png"))


def test_marigold_normals_missing_folder_is_one_line(tmp_path):
    with pytest.raises(WeightsError) as err:
        make("normal", tmp_path, backend="marigold").check_ready()
    assert "\n" not in str(err.value) and "prs-eth/marigold-normals-v1-1" in str(err.value)


# -- hintset weights ---------------------------------------------------------------------------
def _listed(rows: list[dict]) -> set[tuple[str, str]]:
    """(hub repo, file) pairs ``hintset weights`` names: files, and each model folder's needs."""
    return {(r["repo_id"], f) for r in rows for f in (r["needs"] if "needs" in r else [r["name"]])}


def test_weights_command_lists_every_registered_backend(tmp_path):
    """Every file of every backend ``hintset annotators`` shows (each registered annotator's
    ``catalogue()``) is listed by ``hintset weights``, under one of the backend's repos."""
    from annotators import get, list_annotators
    from pipeline.commands.weights import collect

    listed = _listed(collect(str(tmp_path)))
    checked = 0
    for name in list_annotators():
        for backend, entry in get(name).catalogue().items():
            for file in entry["files"]:
                assert any((repo, file) in listed for repo in entry["repos"]), (name, backend, file)
                checked += 1
    assert checked > 50


def test_weights_command_finds_the_new_backends(weights_dir):
    """dsine.pt, both Marigold pipeline folders and OneFormer COCO (with its tokenizer) are
    listed and found in the published layouts."""
    from annotators.weights import sha256_file
    from pipeline.commands.weights import collect

    rows = {(r["annotator"], r["name"]): r for r in collect(str(weights_dir))}
    dsine = rows[("normal", "dsine.pt")]
    assert dsine["present"] and dsine["sha256"] == sha256_file(weights_dir / "dsine.pt")
    for key, repo in ((("depth", "marigold-depth-v1-1"), "prs-eth/marigold-depth-v1-1"),
                      (("normal", "marigold-normals-v1-1"), "prs-eth/marigold-normals-v1-1")):  # fmt: skip
        row = rows[key]
        assert row["present"] and row["needs"] == list(marigold.PIPELINE_FILES), key
        assert row["file"] == "unet/diffusion_pytorch_model.safetensors"
        assert row["sha256"] == sha256_file(weights_dir / repo / row["file"])
    coco_row = rows[("seg", "oneformer-coco-swin-large")]
    assert coco_row["present"] and "merges.txt" in coco_row["needs"]
    assert not rows[("seg", "oneformer-ade20k-swin-large")]["present"]
