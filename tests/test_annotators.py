"""The annotator contract for every registered annotator, plus canny/lines specifics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import annotators
from annotators import Annotation, create, list_annotators
from pipeline.decode import load_image, resize_short_side

#: registered annotators that need no weights (test-only ones, named test_*, excluded)
CLASSICAL = [
    name
    for name in list_annotators()
    if not annotators.get(name).needs_weights() and not name.startswith("test_")
]


@pytest.fixture(scope="module")
def photo(photo_paths) -> np.ndarray:
    return resize_short_side(load_image(photo_paths[1]), 256)


def test_registry_lists_and_creates():
    assert {"canny", "lines"} <= set(list_annotators())
    with pytest.raises(ValueError, match="unknown annotator 'nope'"):
        create("nope")
    with pytest.raises(ValueError, match="unknown parameter"):
        create("canny", lowest=3)


@pytest.mark.parametrize("name", CLASSICAL)
def test_contract(name, photo):
    annotator = create(name)
    info = annotator.info()
    assert info["name"] == name and info["version"] and info["outputs"]
    assert set(info["params"]) == {p.name for p in annotator.params}
    result = annotator.annotate(photo, key="sample")
    assert isinstance(result, Annotation)
    assert list(result.maps) == list(annotator.outputs)
    for arr in result.maps.values():
        assert arr.shape[:2] == photo.shape[:2]
        assert arr.dtype == np.uint8
    primary = annotator(photo, key="sample")  # random maps depend on the key
    assert np.array_equal(primary, result.maps[annotator.outputs[0]])
    again = create(name).annotate(photo, key="sample")  # a fresh instance: deterministic
    for suffix in result.maps:
        assert np.array_equal(result.maps[suffix], again.maps[suffix])


@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.parametrize("shape", [(37, 101), (101, 37), (64, 64)])
def test_odd_sizes_keep_size(name, shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert create(name)(image).shape[:2] == shape


@pytest.mark.parametrize("name", CLASSICAL)
def test_batch_equals_single(name, photo):
    annotator = create(name)
    images = [photo, np.ascontiguousarray(photo[::-1])]
    batch = annotator.annotate_batch(images, keys=["a", "b"])
    for image, key, result in zip(images, ["a", "b"], batch, strict=True):
        single = annotator.annotate(image, key=key)
        assert np.array_equal(single.maps[annotator.outputs[0]], result.maps[annotator.outputs[0]])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        "image.jpg",
    ],
)
def test_bad_array_input_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="expected"):
        create("canny")(bad)


def test_canny_equals_cv2_canny_on_resized_image(photo_paths):
    resized = resize_short_side(load_image(photo_paths[0]), 512)
    assert np.array_equal(create("canny")(resized), cv2.Canny(resized, 100, 200))
    assert np.array_equal(create("canny", low=50, high=120)(resized), cv2.Canny(resized, 50, 120))


def test_canny_map_is_binary_white_on_black(photo):
    edges = create("canny")(photo)
    assert set(np.unique(edges)) <= {0, 255}
    assert 0.005 < np.count_nonzero(edges) / edges.size < 0.5


def test_canny_blur_reduces_edges(photo):
    plain = np.count_nonzero(create("canny")(photo))
    blurred = np.count_nonzero(create("canny", blur=2.0)(photo))
    assert blurred < plain


def test_canny_random_thresholds_are_seeded_per_sample(photo):
    annotator = create("canny", random_thresholds=True, seed=7)
    drawn = {annotator.thresholds(annotator.rng(f"k{i}")) for i in range(20)}
    assert len(drawn) > 10  # different samples get different thresholds
    for low, high in drawn:
        assert 50 <= low <= 150 and max(low + 1, 150) <= high <= 250
    first = annotator.annotate(photo, key="k1")
    assert np.array_equal(first.maps["canny"], annotator.annotate(photo, key="k1").maps["canny"])
    low, high = int(first.stats["canny_low"]), int(first.stats["canny_high"])
    assert np.array_equal(first.maps["canny"], cv2.Canny(photo, low, high))
    other_seed = create("canny", random_thresholds=True, seed=8)
    assert {other_seed.thresholds(other_seed.rng(f"k{i}")) for i in range(20)} != drawn


def test_canny_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="low <= high"):
        create("canny", low=200, high=100)


def test_param_strings_are_coerced_like_the_cli():
    annotator = create("canny", low="50", random_thresholds="true", blur="1.5")
    assert annotator.config == {
        "low": 50,
        "high": 200,
        "blur": 1.5,
        "random_thresholds": True,
        "seed": 0,
    }
    with pytest.raises(ValueError, match="expected int"):
        create("canny", low="fifty")


def rectangle_image() -> np.ndarray:
    image = np.zeros((200, 300, 3), np.uint8)
    cv2.rectangle(image, (50, 40), (250, 160), (255, 255, 255), thickness=-1)
    return image


@pytest.mark.parametrize("backend", ["lsd", "hough"])
def test_lines_finds_rectangle_sides(backend):
    lines = create("lines", backend=backend)(rectangle_image())
    assert set(np.unique(lines)) <= {0, 255}
    # each of the four sides is marked within 2 px of where it is
    for row in (40, 160):
        assert lines[row - 2 : row + 3, 80:220].any(axis=0).mean() > 0.9
    for col in (50, 250):
        assert lines[70:130, col - 2 : col + 3].any(axis=1).mean() > 0.9
    # and nothing far from the rectangle's outline
    mask = np.zeros(lines.shape, bool)
    cv2.rectangle(mask.view(np.uint8), (50, 40), (250, 160), 1, thickness=7)
    assert not lines[~mask].any()


def test_lines_are_one_pixel_wide():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, 50:] = 255  # one vertical step edge
    lines = create("lines", backend="lsd")(image)
    widths = (lines[20:80] > 0).sum(axis=1)
    assert widths.max() == 1


def test_lines_min_length_drops_short_segments(photo):
    many = np.count_nonzero(create("lines", min_length=5)(photo))
    few = np.count_nonzero(create("lines", min_length=80)(photo))
    assert few < many


def test_lines_unknown_backend_is_clear():
    with pytest.raises(ValueError, match="not one of"):
        create("lines", backend="magic")
