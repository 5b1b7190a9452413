"""The filter and feature-map grids show the conv layer's real weights and activations."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar.inference import KerasModel
from cifar.inside import conv_filters, feature_maps, tile
from cifar.model import build_model


def test_tile_lays_images_out_row_by_row():
    images = np.stack([np.full((2, 2, 3), value, np.uint8) for value in (10, 20, 30)])
    grid = tile(images, columns=2, gap=1, background=255)
    assert grid.shape == (5, 5, 3)
    assert grid[0, 0, 0] == 10 and grid[0, 3, 0] == 20 and grid[3, 0, 0] == 30
    assert grid[2, 2, 0] == 255 and grid[4, 4, 0] == 255  # the gap and the empty last cell


@pytest.fixture
def red_channel_model():
    """Filter k passes the red channel straight through, scaled by k + 1; so its map is the red plane."""
    model = build_model(10)
    conv = model.get_layer("conv")
    kernel = np.zeros(conv.kernel.shape, np.float32)
    for k in range(kernel.shape[-1]):
        kernel[1, 1, 0, k] = k + 1
    conv.kernel.assign(kernel)
    conv.bias.assign(np.zeros(conv.bias.shape, np.float32))
    return model


def test_feature_maps_are_the_conv_layers_activations(red_channel_model):
    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 256, (32, 32, 3), dtype=np.uint8)
    grid = feature_maps(KerasModel(red_channel_model).conv_activations(pixels), scale=1)
    expected = np.round(pixels[..., 0] / pixels[..., 0].max() * 255)  # each map normalised to its own peak
    for k in (0, 5, 31):
        top, left = (k // 8) * 35, (k % 8) * 35
        np.testing.assert_allclose(grid[top : top + 32, left : left + 32, 0], expected, atol=1)


def test_filters_show_each_kernel_stretched_to_full_colour(red_channel_model):
    grid = conv_filters(KerasModel(red_channel_model).conv_kernel(), scale=1)
    first = grid[0:3, 0:3]
    assert tuple(first[1, 1]) == (255, 0, 0)  # the one positive weight, in the red input channel
    assert tuple(first[0, 0]) == (0, 0, 0)
