"""Occlusion maps find what a classifier looks at, against a classifier whose answer we decide."""
from __future__ import annotations

import numpy as np
import pytest

from cifar.occlusion import occluded_copies, occlusion_map, occlusion_map_plain, occlusion_overlay, square_corners


def top_right_classifier(images: np.ndarray) -> np.ndarray:
    """Two classes, decided only by the top-right 8x8 corner: bright is class 1, dark class 0."""
    corner = np.asarray(images, np.float32)[:, :8, -8:].mean(axis=(1, 2, 3)) / 255
    bright = 1 / (1 + np.exp(-12 * (corner - 0.5)))
    return np.stack([1 - bright, bright], axis=1)


def picture_with_a_white_top_right_corner(seed: int = 0) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 120, (32, 32, 3), dtype=np.uint8)
    image[:8, -8:] = 255
    return image


def test_the_largest_drop_is_in_the_corner_that_decides():
    drops = occlusion_map(top_right_classifier, picture_with_a_white_top_right_corner(), class_index=1)
    assert drops.shape == (32, 32)
    row, column = np.unravel_index(drops.argmax(), drops.shape)
    assert row < 8 and column >= 24
    assert drops[:8, 24:].mean() > 0.1 and drops[0, 31] > 0.4  # grey there takes the answer to about a coin toss
    assert np.allclose(drops[16:, :16], 0)  # squares that never touch the corner change nothing


def test_the_batched_map_equals_the_plain_loop_and_asks_once():
    calls = []

    def counted(images):
        calls.append(len(images))
        return top_right_classifier(images)

    image = picture_with_a_white_top_right_corner(seed=1)
    for patch, stride in ((8, 2), (8, 4), (6, 4)):
        calls.clear()
        batched = occlusion_map(counted, image, 1, patch=patch, stride=stride)
        assert len(calls) == 1  # one prediction for the picture and all its covered copies
        np.testing.assert_allclose(batched, occlusion_map_plain(top_right_classifier, image, 1, patch, stride), atol=1e-6)


def test_every_pixel_is_covered_and_copies_are_grey_only_in_their_square():
    assert square_corners(32, 6, 4)[-1] == 26  # the last square reaches the edge
    image = picture_with_a_white_top_right_corner()
    copies, corners = occluded_copies(image, patch=8, stride=4, grey=128)
    covered = np.zeros((32, 32), int)
    for copy, (top, left) in zip(copies, corners):
        square = np.zeros((32, 32), bool)
        square[top : top + 8, left : left + 8] = True
        assert np.all(copy[square] == 128) and np.array_equal(copy[~square], image[~square])
        covered += square
    assert covered.min() >= 1


def test_the_overlay_is_red_where_covering_hurts_and_plain_grey_elsewhere():
    image = picture_with_a_white_top_right_corner()
    drops = np.zeros((32, 32), np.float32)
    drops[:8, 24:] = 0.5
    overlay = np.asarray(occlusion_overlay(image, drops, size=128)).astype(int)
    assert overlay.shape == (128, 128, 3)
    red = overlay[4, 124]
    assert red[0] > red[1] + 100 and red[0] > red[2] + 100
    plain = overlay[100, 10]
    assert plain[0] == plain[1] == plain[2]  # the picture in grey, untouched


@pytest.mark.parametrize("class_index", [0, 1])
def test_drops_for_either_class_mirror_each_other_for_two_classes(class_index):
    image = picture_with_a_white_top_right_corner(seed=2)
    other = occlusion_map(top_right_classifier, image, 1 - class_index)
    np.testing.assert_allclose(occlusion_map(top_right_classifier, image, class_index), -other, atol=1e-6)
