"""HED, scribble, M-LSD lines and normals: random weights in the published layout, real loading.

The checkpoints are written once per session by ``tests/weights.py``
(real size, published file name and format) and loaded through ``annotators.weights`` from a
local folder in offline mode.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotators import create, hed, mlsd, normal
from annotators import depth as depth_models
from annotators.learned import clear_cache
from annotators.weights import WeightsError, WeightsFile, sha256_file
from pipeline.decode import load_image, resize_short_side
from tests.weights import write_bae, write_depth, write_hed, write_mlsd

#: offline, no user weights, an empty Hugging Face cache (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("offline_weights")
WRITERS = {"hed": write_hed, "mlsd": write_mlsd, "bae": write_bae}
FILES = {"hed": "ControlNetHED.pth", "mlsd": "mlsd_large_512_fp32.pth", "bae": "scannet.pt"}
LOADERS = {"hed": hed.load_hed, "mlsd": mlsd.load_mlsd, "bae": normal.load_bae}


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """One folder with all three random checkpoints (written once per session)."""
    folder = tmp_path_factory.mktemp("weights")
    for net, write in WRITERS.items():
        paths = write(folder)
        assert [p.name for p in paths] == [FILES[net]]
    yield folder
    clear_cache()


def test_published_layout_file_names():
    assert [f.filename for f in create("hed").weights_files()] == ["ControlNetHED.pth"]
    assert [f.filename for f in create("scribble").weights_files()] == ["ControlNetHED.pth"]
    assert [f.filename for f in create("normal").weights_files()] == ["scannet.pt"]
    lines = create("lines", backend="mlsd")
    assert [f.filename for f in lines.weights_files()] == ["mlsd_large_512_fp32.pth"]
    assert all(f.repo_id == "lllyasviel/Annotators" for f in lines.weights_files())


def test_hed_checkpoint_layout(weights_dir):
    import torch

    state = torch.load(weights_dir / "ControlNetHED.pth", weights_only=True)
    assert tuple(state["norm"].shape) == (1, 3, 1, 1)
    assert all(v.dtype == torch.float16 for v in state.values())  # published as fp16 (29.4 MB)
    assert tuple(state["block1.convs.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(state["block5.convs.2.weight"].shape) == (512, 512, 3, 3)
    assert tuple(state["block3.projection.weight"].shape) == (1, 256, 1, 1)
    assert len(state) == 1 + 2 * (2 + 2 + 3 + 3 + 3) + 2 * 5


def test_hed_on_real_photos(weights_dir, photos):
    annotator = create("hed", weights_dir=str(weights_dir), device="cpu")
    annotator.load()
    maps = [a.maps["hed"] for a in annotator.annotate_batch(photos + [photos[0]])]
    for image, edges in zip(photos + [photos[0]], maps, strict=True):
        assert edges.shape == image.shape[:2] and edges.dtype == np.uint8
    assert np.array_equal(maps[0], maps[2])  # same image, same map, whatever the batch
    assert np.array_equal(maps[1], annotator(photos[1]))  # batched == alone
    one_by_one = create("hed", weights_dir=str(weights_dir), device="cpu", batch_size=1)
    assert all(
        np.array_equal(a.maps["hed"], b)
        for a, b in zip(one_by_one.annotate_batch(photos + [photos[0]]), maps, strict=True)
    )
    ident = annotator.info()["weights"]
    assert ident == [
        {
            "file": "ControlNetHED.pth",
            "repo_id": "lllyasviel/Annotators",
            "sha256": sha256_file(weights_dir / "ControlNetHED.pth"),
        }
    ]


def test_hed_fuses_side_outputs_with_sigmoid_of_mean(weights_dir, photos):
    """The map equals sigmoid(mean of the 5 side outputs resized to the input) * 255."""
    import torch

    model, _ = hed.load_hed(str(weights_dir))
    image = photos[0][:64, :80]  # a multiple of 16: no padding needed
    with torch.no_grad():
        sides = model(torch.from_numpy(image).permute(2, 0, 1)[None].float())
    resized = [cv2.resize(s[0, 0].numpy(), (80, 64), interpolation=cv2.INTER_LINEAR) for s in sides]
    expected = 1 / (1 + np.exp(-np.mean(resized, axis=0).astype(np.float64)))
    got = create("hed", weights_dir=str(weights_dir), device="cpu")(image)
    assert np.abs(got.astype(int) - (expected * 255).astype(int)).max() <= 1
    safe = create("hed", weights_dir=str(weights_dir), device="cpu", safe=True)(image)
    assert set(np.unique(safe)) <= {0, 127, 255}
    expected_safe = hed.to_uint8(hed.safe_step(expected), False)
    assert np.mean(safe != expected_safe) < 0.01  # only values on a level boundary may differ


def _nms_reference(x: np.ndarray, t: float, sigma: float) -> np.ndarray:
    """The documented NMS written independently: numpy shifts instead of cv2.dilate."""
    x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma)
    pad = np.pad(x, 1, mode="edge")  # dilation at the border only sees inside pixels
    h, w = x.shape

    def at(dy: int, dx: int) -> np.ndarray:
        return pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    keep = np.zeros(x.shape, bool)
    for (ay, ax), (by, bx) in (((0, -1), (0, 1)), ((-1, 0), (1, 0)), ((-1, -1), (1, 1)),
                               ((-1, 1), (1, -1))):  # fmt: skip
        keep |= (x >= at(ay, ax)) & (x >= at(by, bx))
    return np.where(keep & (x > t), 255, 0).astype(np.uint8)


def test_scribble_from_synthetic_soft_edges_follows_documented_steps():
    yy, xx = np.mgrid[0:120, 0:160].astype(np.float32)
    soft = np.zeros((120, 160), np.float32)
    soft = np.maximum(soft, 255 * np.exp(-((xx - 40) ** 2) / (2 * 4.0**2)))  # strong vertical edge
    soft = np.maximum(soft, 90 * np.exp(-((yy - 90) ** 2) / (2 * 4.0**2)))  # weak horizontal edge
    ring = np.hypot(xx - 110, yy - 50)
    soft = np.maximum(soft, 230 * np.exp(-((ring - 25) ** 2) / (2 * 3.0**2)))  # a circle
    soft = soft.astype(np.uint8)

    thin = hed.nms(soft, 127, 3.0)
    assert np.array_equal(thin, _nms_reference(soft, 127, 3.0))
    # the vertical ridge is constant along y, so every pixel whose blurred value > 127 stays
    blurred = cv2.GaussianBlur(soft.astype(np.float32), (0, 0), 3.0)
    assert np.array_equal(thin[60, :70] == 255, blurred[60, :70] > 127)
    assert thin[:, 40].min() == 255 and not thin[90, 60:].any()  # weak edge (peak 90) is gone
    assert thin[50, 110 + 25] == 255 and thin[50, 110] == 0  # ring kept, its centre empty

    strokes = hed.scribble_from_soft_edges(soft)
    expected = cv2.GaussianBlur(thin, (0, 0), 3.0)
    expected = np.where(expected > 4, 255, 0)
    assert np.array_equal(strokes, expected)
    assert set(np.unique(strokes)) == {0, 255}
    # blurring widens each kept band: a lone 255 column gives 255*g(5) = 8.5 (kept) and
    # 255*g(6) = 4.6, which the 8-bit blur stores as 4 (not > 4): the stroke spans |d| <= 5
    line = np.zeros((40, 40), np.uint8)
    line[:, 20] = 255
    widened = cv2.GaussianBlur(line, (0, 0), 3.0)
    assert np.flatnonzero(np.where(widened[20] > 4, 255, 0)).tolist() == list(range(15, 26))


def test_scribble_annotator_on_real_photos(weights_dir, photos):
    annotator = create("scribble", weights_dir=str(weights_dir), device="cpu")
    results = annotator.annotate_batch(photos)
    edges = create("hed", weights_dir=str(weights_dir), device="cpu").annotate_batch(photos)
    for image, result, soft in zip(photos, results, edges, strict=True):
        strokes = result.maps["scribble"]
        assert strokes.shape == image.shape[:2] and strokes.dtype == np.uint8
        assert set(np.unique(strokes)) <= {0, 255}
        assert np.array_equal(strokes, hed.scribble_from_soft_edges(soft.maps["hed"]))
        assert result.stats["scribble_density"] == np.count_nonzero(strokes) / strokes.size


def test_mlsd_checkpoint_layout(weights_dir):
    import torch

    state = torch.load(weights_dir / "mlsd_large_512_fp32.pth", weights_only=True)
    assert tuple(state["backbone.features.0.0.weight"].shape) == (32, 4, 3, 3)
    assert tuple(state["backbone.features.13.conv.2.weight"].shape) == (96, 576, 1, 1)
    assert tuple(state["block15.conv1.0.weight"].shape) == (64, 96, 1, 1)
    assert tuple(state["block23.conv3.weight"].shape) == (16, 64, 1, 1)
    assert not any(k.startswith("backbone.features.14") for k in state)


def test_mlsd_decoding_of_a_synthetic_output():
    """One centre peak with displacements -> one segment at twice the map coordinates."""
    out = np.full((9, 16, 20), -10.0, np.float32)  # sigmoid(-10) ~ 0: no other candidates
    out[0, 5, 7] = 2.0  # score sigmoid(2) = 0.88
    out[1:5, 5, 7] = (-3.0, 1.0, 4.0, -1.0)  # start dx dy, end dx dy
    out[0, 10, 3] = -1.0  # score 0.27 but length 0: dropped by the distance threshold
    segments = mlsd.decode_segments(out, 0.1, 0.1)
    assert segments.tolist() == [[2 * 4.0, 2 * 6.0, 2 * 11.0, 2 * 4.0]]
    assert len(mlsd.decode_segments(out, 0.9, 0.1)) == 0  # score threshold
    assert len(mlsd.decode_segments(out, 0.1, 8.0)) == 0  # length sqrt(49 + 4) = 7.3 < 8


def test_mlsd_lines_on_real_photos(weights_dir, photos):
    annotator = create("lines", backend="mlsd", weights_dir=str(weights_dir), device="cpu")
    assert annotator.wants_gpu
    annotator.load()
    model = annotator._model
    results = annotator.annotate_batch(photos)
    annotator.annotate_batch(photos[:1])
    assert annotator._model is model  # loaded once per instance, not per image
    for image, result in zip(photos, results, strict=True):
        lines = result.maps["lines"]
        assert lines.shape == image.shape[:2] and lines.dtype == np.uint8
        assert set(np.unique(lines)) <= {0, 255}
        assert result.stats["lines_segments"] > 0  # random weights still give segments
    segs = mlsd.detect_segments(model, photos, "cpu", 0.1, 0.1)
    assert np.array_equal(results[0].maps["lines"], _draw(photos[0], segs[0]))
    assert annotator.info()["weights"][0]["file"] == "mlsd_large_512_fp32.pth"
    assert create("lines").info()["weights"] == []  # classical backends need no weights


def _draw(image: np.ndarray, segments: np.ndarray) -> np.ndarray:
    from annotators.lines import draw_segments

    return draw_segments(image.shape[:2], segments)


def test_bae_on_real_photos(weights_dir, photos):
    annotator = create("normal", backend="bae", weights_dir=str(weights_dir), device="cpu")
    info = annotator.info()
    assert info["convention"]["name"] == "scannet_rgb"
    assert info["weights"][0]["sha256"] == sha256_file(weights_dir / "scannet.pt")
    results = annotator.annotate_batch(photos)
    for image, result in zip(photos, results, strict=True):
        rgb = result.maps["normal"]
        assert rgb.shape == (*image.shape[:2], 3) and rgb.dtype == np.uint8
        # (n + 1) / 2 of unit normals: decoding gives length ~1 (8-bit rounding allowed)
        length = np.linalg.norm(rgb.astype(np.float32) / 255.0 * 2.0 - 1.0, axis=2)
        assert np.abs(length - 1.0).max() < 0.03


def test_bae_checkpoint_layout(weights_dir):
    import torch

    checkpoint = torch.load(weights_dir / "scannet.pt", weights_only=True)
    state = checkpoint["model"]
    assert tuple(state["encoder.original_model.conv_stem.weight"].shape) == (48, 3, 3, 3)
    assert tuple(state["encoder.original_model.conv_head.weight"].shape) == (2048, 512, 1, 1)
    assert tuple(state["decoder.up1._net.0.weight"].shape) == (1024, 2048 + 176, 3, 3)
    assert tuple(state["decoder.out_conv_res1.6.weight"].shape) == (4, 128, 1)
    assert not any("classifier" in k for k in state)


def test_bae_accepts_data_parallel_prefix():
    state = {"module.decoder.conv2.weight": 1, "decoder.conv2.bias": 2}
    assert normal.bae_state({"model": state}) == {
        "decoder.conv2.weight": 1,
        "decoder.conv2.bias": 2,
    }


# -- normals from depth -----------------------------------------------------------------------


def _decode(rgb: np.ndarray) -> np.ndarray:
    """x, y, z from a from-depth normal map (stored R = z, G = y, B = x)."""
    return rgb[:, :, ::-1].astype(np.float32) / 127.5 - 1.0


def test_normal_from_depth_on_a_plane():
    """Inverse depth rising to the right (right side nearer): the surface faces left, x > 128."""
    slope = 0.05
    depth = np.tile(np.arange(64, dtype=np.float32) * slope, (48, 1))
    rgb = normal.normal_from_depth(depth, bg_threshold=0.4)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    gx = 8 * slope  # the 3x3 Sobel of a unit ramp is 8
    norm = math.hypot(gx, 2 * math.pi)
    inside = rgb[5:-5, 40:-2]  # normalised depth > 0.4 there
    assert np.all(inside[..., 2] == int(gx / norm * 127.5 + 127.5))  # B = x
    assert np.all(inside[..., 1] == 127) and np.all(
        inside[..., 0] == int(2 * math.pi / norm * 127.5 + 127.5)  # R = z
    )
    background = rgb[:, : int(0.4 * 63) - 1]  # normalised depth < 0.4: x, y zeroed
    assert np.all(background == (255, 127, 127))


def test_normal_from_depth_on_a_sphere():
    size, radius, cx, cy = 129, 40.0, 64.0, 64.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = (xx - cx) ** 2 + (yy - cy) ** 2
    depth = np.where(r2 < radius**2, np.sqrt(np.maximum(radius**2 - r2, 0)), 0).astype(np.float32)
    n = _decode(normal.normal_from_depth(depth))
    assert np.allclose(n[64, 64], (0, 0, 1), atol=0.01)  # centre faces the camera
    assert np.allclose(n[5, 5], (0, 0, 1), atol=0.01)  # background is flat
    # ScanNet-like axes: right side faces right -> red < 128; top faces up -> green > 128
    for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        px, py = cx + 25 * np.cos(angle), cy + 25 * np.sin(angle)
        v = n[int(round(py)), int(round(px))]
        outward = np.array([np.cos(angle), np.sin(angle)])
        assert v[2] > 0.5
        assert np.dot(v[:2], -outward) / np.linalg.norm(v[:2]) > 0.98
    assert n[64, 89, 0] < -0.1 and n[64, 39, 0] > 0.1  # right / left
    assert n[39, 64, 1] > 0.1 and n[89, 64, 1] < -0.1  # top / bottom


def test_normal_depth_backend_records_convention():
    annotator = create("normal", backend="depth", device="cpu")
    assert annotator.info()["convention"]["name"] == "controlnet10_sobel"
    assert annotator.info()["weights"] == []


@pytest.mark.parametrize("model", ["dpt-hybrid", "depth-anything-v2-small"])
def test_normal_depth_backend_end_to_end(tmp_path, photos, model):
    """Normals from either depth model (MiDaS as in 1.0, or Depth Anything V2), batch = single."""
    write_depth(tmp_path, tiny=True, models=(model,))
    annotator = create(
        "normal", backend="depth", depth_model=model, weights_dir=str(tmp_path), device="cpu"
    )
    results = annotator.annotate_batch(photos)
    depths = annotator.depth.predict_depth(photos, at_image_size=False)  # at the working size
    for image, result, d in zip(photos, results, depths, strict=True):
        assert result.maps["normal"].shape == (*image.shape[:2], 3)
        expected = cv2.resize(normal.normal_from_depth(d, 0.4), image.shape[1::-1])
        assert np.array_equal(result.maps["normal"], expected)
        assert np.array_equal(annotator.annotate(image).maps["normal"], result.maps["normal"])
    repo = depth_models.MODELS[model].repo_id
    assert [w["model"] for w in annotator.info()["weights"]] == [repo]
    assert annotator.info()["params"]["depth_model"] == model


# -- loading errors ------------------------------------------------------------------------


@pytest.mark.parametrize("net", ["hed", "mlsd", "bae"])
def test_wrong_sha256_is_rejected(weights_dir, net):
    spec = WeightsFile(FILES[net], sha256="0" * 64)
    with pytest.raises(WeightsError, match=r"has sha256 .* expected 000000000000") as err:
        LOADERS[net](str(weights_dir), spec=spec)
    assert "\n" not in str(err.value)
    good = WeightsFile(FILES[net], sha256=sha256_file(weights_dir / FILES[net]).upper())
    assert LOADERS[net](str(weights_dir), spec=good)[1]["file"] == FILES[net]


def _rewrite(weights_dir: Path, target: Path, net: str, change) -> None:
    import torch

    checkpoint = torch.load(weights_dir / FILES[net], weights_only=True)
    change(checkpoint["model"] if net == "bae" else checkpoint)
    target.mkdir()
    torch.save(checkpoint, target / FILES[net])


KEYS = {
    "hed": "block2.convs.1.bias",
    "mlsd": "block20.conv1.1.running_var",
    "bae": "decoder.conv2.weight",
}


@pytest.mark.parametrize("net", ["hed", "mlsd", "bae"])
def test_missing_key_is_rejected(weights_dir, tmp_path, net):
    _rewrite(weights_dir, tmp_path / "w", net, lambda state: state.pop(KEYS[net]))
    with pytest.raises(
        WeightsError, match=rf"{FILES[net]} does not match the network: missing keys"
    ):
        LOADERS[net](str(tmp_path / "w"))


@pytest.mark.parametrize("net", ["hed", "mlsd"])
def test_wrong_shape_is_rejected(weights_dir, tmp_path, net):
    import torch

    def change(state):
        state[KEYS[net]] = torch.zeros(3)

    _rewrite(weights_dir, tmp_path / "w", net, change)
    with pytest.raises(WeightsError, match=rf"{FILES[net]} has wrong shapes: {KEYS[net]} \(3,\)"):
        LOADERS[net](str(tmp_path / "w"))


def test_bae_wrong_shape_is_rejected(weights_dir, tmp_path):
    import torch

    def change(state):
        state["encoder.original_model.conv_stem.weight"] = torch.zeros(48, 3, 5, 5)

    _rewrite(weights_dir, tmp_path / "w", "bae", change)
    with pytest.raises(WeightsError, match=r"scannet.pt has wrong shapes: encoder.original_model"):
        normal.load_bae(str(tmp_path / "w"))


@pytest.mark.parametrize(
    ("name", "params", "filename"),
    [
        ("hed", {}, "ControlNetHED.pth"),
        ("scribble", {}, "ControlNetHED.pth"),
        ("lines", {"backend": "mlsd"}, "mlsd_large_512_fp32.pth"),
        ("normal", {}, "scannet.pt"),
    ],
)
def test_missing_weights_give_one_line(tmp_path, name, params, filename):
    annotator = create(name, weights_dir=str(tmp_path), device="cpu", **params)
    with pytest.raises(WeightsError) as err:
        annotator.load()
    message = str(err.value)
    assert "\n" not in message and filename in message and str(tmp_path) in message
    assert "huggingface.co/lllyasviel/Annotators" in message


# -- command line --------------------------------------------------------------------------


def test_cli_without_weights_fails_with_one_line(cli, photo_paths, tmp_path):
    env = {"HINTSET_OFFLINE": "1", "HINTSET_WEIGHTS_DIR": "", "HF_HUB_CACHE": str(tmp_path / "hf")}
    proc = cli(
        "annotate", photo_paths[0], "-o", tmp_path / "out", "--annotators", "hed", "-w", "1",
        "-q", env=env,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing weights ControlNetHED.pth" in errors[0]


def test_cli_runs_every_network(cli, photo_paths, weights_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo_paths[3], src / "photo.jpg")
    env = {"HINTSET_OFFLINE": "1", "HINTSET_WEIGHTS_DIR": str(weights_dir)}
    cli(
        "annotate", src, "-o", tmp_path / "out", "-a", "hed,scribble,lines,normal",
        "-p", "lines.backend=mlsd", "-p", "hed.device=cpu", "-r", "64", "-w", "1", "-q",
        env=env, check=True,
    )  # fmt: skip
    size = resize_short_side(load_image(src / "photo.jpg"), 64).shape[:2]
    for suffix, channels in (("hed", 1), ("scribble", 1), ("lines", 1), ("normal", 3)):
        image = cv2.imread(str(tmp_path / "out" / f"photo.{suffix}.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == size and (image.ndim == 2) == (channels == 1)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    by_name = {a["name"]: a for a in report["annotators"]}
    assert by_name["normal"]["convention"]["name"] == "scannet_rgb"
    assert by_name["lines"]["weights"][0]["sha256"] == sha256_file(
        weights_dir / "mlsd_large_512_fp32.pth"
    )


# -- the base for learned annotators ----------------------------------------------------------
def test_fp16_on_cpu_fails_at_load_with_one_line(tmp_path):
    with pytest.raises(WeightsError, match="precision fp16 needs a CUDA device"):
        create("hed", device="cpu", precision="fp16", weights_dir=str(tmp_path)).load()


def test_normal_depth_range_makes_slopes_independent_of_the_output_scale():
    """With depth_range the map is the same whatever the depth model's output scale; without
    it (1.0's recipe on raw MiDaS output) a smaller scale gives flatter normals."""
    rng = np.random.default_rng(3)
    d = cv2.GaussianBlur(rng.random((48, 64)).astype(np.float32), (0, 0), 3) * 50
    small = d / 40  # the same depth at a smaller output scale (Depth Anything V2 is ~0..7)
    scaled = [normal.normal_from_depth(x, 0.4, depth_range=50.0) for x in (d, small)]
    assert np.abs(scaled[0].astype(int) - scaled[1].astype(int)).max() <= 1
    raw = [normal.normal_from_depth(x, 0.4) for x in (d, small)]
    assert raw[1][..., 0].mean() > raw[0][..., 0].mean() + 5  # R = z: flatter at small scale
    assert np.array_equal(raw[0], normal.normal_from_depth(d, 0.4, depth_range=0))
