"""Fidelity to the annotator code each public ControlNet checkpoint was trained with (issue #15,
D1-D6): exact values on synthetic inputs, written from the references' rules, not from ours."""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np
import pytest

from annotators import create, normal, pose_draw
from annotators.lines import draw_segments
from annotators.mlsd import decode_segments


# -- D1: M-LSD endpoints are truncated (int()), not rounded --------------------------------------
def test_mlsd_endpoints_are_truncated_like_the_reference():
    lines = draw_segments((8, 16), np.array([[1.7, 2.6, 10.9, 2.6]]))
    assert np.flatnonzero(lines[2]).tolist() == list(range(1, 11))  # int(): x 1..10, y 2
    assert not lines[3].any()  # rounding would have drawn row 3, x 2..11
    toward_zero = draw_segments((8, 16), np.array([[-0.6, 0.0, 5.0, 0.0]]))
    assert toward_zero[0, 0] == 255  # int(-0.6) == 0, not floor's -1 (clipped) or round's -1


def test_mlsd_decoding_adds_in_float64_as_the_reference():
    out = np.full((9, 16, 20), -10.0, np.float32)
    out[0, 5, 7] = 2.0
    out[1:5, 5, 7] = (np.float32(0.1), np.float32(-0.3), 4.0, 1.0)
    segment = decode_segments(out, 0.1, 0.1)[0]
    assert segment.dtype == np.float64
    # reference: x (int64) + displacement (float32) -> float64, times 2
    assert segment[0] == 2 * (7 + np.float64(np.float32(0.1)))
    assert segment[1] == 2 * (5 + np.float64(np.float32(-0.3)))


# -- D3: pose drawing truncates joint centres, rounds hand colours as OpenCV does ----------------
def _body(points: dict[int, tuple[float, float]]) -> list:
    return [(x, y, 1.0) if (x, y) != (None, None) else None
            for x, y in (points.get(i, (None, None)) for i in range(18))]  # fmt: skip


def test_joint_centres_are_truncated():
    canvas = pose_draw.draw_people((40, 40), [{"body": _body({0: (10.7, 20.6)})}])
    ys, xs = np.nonzero(canvas.any(axis=2))
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (6, 14, 16, 24)  # centre (10, 20), r 4


def test_limb_centre_and_length_are_truncated():
    body = _body({1: (10.0, 10.0), 2: (21.0, 10.0)})  # neck -> right shoulder (limb 0)
    canvas = np.zeros((30, 40, 3), np.uint8)
    pose_draw.draw_limbs(canvas, [body])
    expected = np.zeros_like(canvas)
    poly = cv2.ellipse2Poly((15, 10), (5, 4), 0, 0, 360, 1)  # int(15.5), int(11 / 2)
    cv2.fillConvexPoly(expected, poly, tuple(int(c * 0.6) for c in pose_draw.COLORS[0]))
    assert np.array_equal(canvas, expected)


def test_all_joints_are_drawn_over_all_limbs():
    """ControlNet 1.1 draws every person's limbs, then every person's joints."""
    first = _body({0: (20.0, 20.0)})  # a lone nose
    second = _body({1: (5.0, 20.0), 2: (35.0, 20.0)})  # a limb across the first one's nose
    canvas = pose_draw.draw_people((40, 40), [{"body": first}, {"body": second}])
    assert tuple(canvas[20, 20]) == pose_draw.COLORS[0]


def test_hand_edge_colours_are_rounded_like_opencv():
    """The reference passes ``hsv_to_rgb([i / 20, 1, 1]) * 255`` (floats) to cv2.line."""
    for i, (a, b) in enumerate(pose_draw.HAND_EDGES):
        hand: list = [None] * 21
        hand[a], hand[b] = (10.0, 10.0, 1.0), (40.0, 10.0, 1.0)
        canvas = np.zeros((20, 50, 3), np.uint8)
        pose_draw.draw_hand(canvas, hand)
        want = tuple(int(np.rint(c * 255)) for c in colorsys.hsv_to_rgb(i / 20.0, 1.0, 1.0))
        assert tuple(int(v) for v in canvas[10, 25]) == want, i
    # edge 1: 76.50000000000001 -> 77 (int() gave 76)
    assert tuple(np.rint(np.array(colorsys.hsv_to_rgb(0.05, 1, 1)) * 255)) == (255, 77, 0)


# -- D2: body peaks with scipy's gaussian_filter; heatmaps resized as 1.1 (area / Lanczos-4) ----
def test_body_peaks_use_scipy_gaussian_filter_at_the_border():
    from annotators.openpose import find_peaks

    heat = np.zeros((40, 60), np.float32)
    heat[20, 0], heat[20, 3] = 2.5, 2.25
    # scipy's reflect border keeps 0.127 at the edge (> 0.1); cv2's reflect-101 gives 0.092
    assert find_peaks(heat, 0.1) == [(0, 20, 2.5)]


def test_network_maps_are_resized_with_lanczos_and_area():
    from annotators.openpose import to_image_size

    rng = np.random.default_rng(0)
    maps = rng.random((5, 12, 16)).astype(np.float32)
    got = to_image_size(maps, (90, 120), (60, 80))
    up = np.stack([cv2.resize(m, (128, 96), interpolation=cv2.INTER_LANCZOS4) for m in maps], 2)
    down = np.stack(
        [cv2.resize(up[:90, :120, c], (80, 60), interpolation=cv2.INTER_AREA) for c in range(5)], 2
    )
    assert got.shape == (60, 80, 5) and np.array_equal(got, down)


def test_body_input_size_is_truncated_as_the_reference():
    from annotators.openpose import network_input

    image = np.zeros((333, 501, 3), np.uint8)  # 501 * 184 / 333 = 276.8: truncated to 276
    scale = 0.5 * 368 / 333
    tensor, valid = network_input(image, scale)
    assert valid == (int(333 * scale), int(501 * scale)) and valid[1] == 276
    assert tensor.shape[1:] == (-(-valid[0] // 8) * 8, -(-valid[1] // 8) * 8)


# -- D4: the hand network has the published key set; hands as 1.1 finds them ---------------------
HAND_KEYS = [
    *(f"conv{n}" for n in ("1_1", "1_2", "2_1", "2_2", "3_1", "3_2", "3_3", "3_4", "4_1",
                           "4_2", "4_3", "4_4", "5_1", "5_2", "5_3_CPM", "6_1_CPM", "6_2_CPM")),
    *(f"Mconv{i}_stage{s}" for s in range(2, 7) for i in range(1, 8)),
]  # fmt: skip


def test_hand_network_has_the_published_key_set():
    import torch

    from annotators.nets.openpose import build_hand
    from annotators.weights import load_into

    net = build_hand()
    expected = {f"{name}.{kind}" for name in HAND_KEYS for kind in ("weight", "bias")}
    assert set(net.state_dict()) == expected and len(expected) == 104
    assert tuple(net.state_dict()["conv4_2.weight"].shape) == (512, 512, 3, 3)
    published = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    load_into(net, published, "hand_pose_model.pth")  # strict: no missing or unexpected keys


def test_hand_peaks_take_the_largest_blob_and_truncate():
    from annotators.openpose import hand_peaks

    heat = np.zeros((128, 128, 22))
    heat[30, 30, 0] = 3.0  # a single high point: small blob, sum 3
    heat[80:100, 60:80, 0] = 0.5  # a wide plateau: larger sum, lower maximum
    heat[90, 70, 0] = 0.9
    heat[64, 0, 1] = 5.0  # at column 0: the reference treats x == 0 as missing
    points = hand_peaks(heat, (200, 200))
    assert points[0][:2] == (int(70 * 200 / 128), int(90 * 200 / 128))  # (109, 140)
    assert points[1] is None and points[2] is None  # column 0; nothing above 0.05


@pytest.fixture(scope="module")
def openpose_dir(tmp_path_factory):
    from tests.weights import write_openpose

    folder = tmp_path_factory.mktemp("openpose")
    write_openpose(folder)
    return folder


def test_hands_run_at_four_scales_on_a_blurred_crop(openpose_dir, monkeypatch):
    import torch

    monkeypatch.setenv("HINTSET_OFFLINE", "1")
    annotator = create("pose", backend="openpose", hands=True, weights_dir=str(openpose_dir),
                       device="cpu")  # fmt: skip
    annotator.load()
    sizes = []
    real = annotator._hand

    def recording(x: torch.Tensor) -> torch.Tensor:
        sizes.append(tuple(x.shape[-2:]))
        return real(x)

    annotator._hand = recording
    image = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    body = _body({5: (100.0, 60.0), 6: (100.0, 110.0), 7: (100.0, 150.0)})  # a left arm
    hands = annotator._hands(image, body)
    assert sizes == [(184, 184), (368, 368), (552, 552), (736, 736)]
    assert set(hands) == {"left_hand"} and len(hands["left_hand"]) == 21


# -- D6: normals from depth as control_sd15_normal was fed them -----------------------------------
def _controlnet10_normal(depth: np.ndarray, bg_th: float) -> np.ndarray:
    """1.0's MidasDetector normal recipe, then the app's ``[:, :, ::-1]`` (written independently)."""
    depth = depth.astype(np.float32)
    rel = (depth - depth.min()) / (depth.max() - depth.min())
    x = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    y = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    x[rel < bg_th], y[rel < bg_th] = 0, 0
    n = np.stack([x, y, np.full_like(x, np.float32(2 * math.pi))], axis=2)
    n /= np.sum(n**2, axis=2, keepdims=True) ** 0.5
    return (n * 127.5 + 127.5).clip(0, 255).astype(np.uint8)[:, :, ::-1]


def test_normal_from_depth_channels_are_reversed_as_fed_to_the_model():
    rng = np.random.default_rng(3)
    depth = cv2.GaussianBlur(rng.random((48, 64)).astype(np.float32), (0, 0), 4)
    got = normal.normal_from_depth(depth)
    assert np.array_equal(got, _controlnet10_normal(depth, 0.4))
    flat = got[depth <= np.quantile(depth, 0.1)]  # background: x = y = 0 -> R = z = 255
    assert np.all(flat == (255, 127, 127))


def test_normal_depth_backend_records_order_and_threshold():
    info = create("normal", backend="depth").info()
    assert info["params"]["bg_threshold"] == 0.4
    assert info["convention"]["channels"].startswith("R=2*pi (z), G=Sobel y")
