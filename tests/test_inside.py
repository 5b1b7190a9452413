"""The filter and feature-map grids show the conv layer's real weights and activations."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar.inference import KerasModel
from cifar.inside import conv_filters, feature_maps, filters_above_maps, map_brightness, tile
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


def test_each_filter_sits_above_its_own_map(red_channel_model):
    rng = np.random.default_rng(1)
    pixels = rng.integers(1, 256, (32, 32, 3), dtype=np.uint8)
    model = KerasModel(red_channel_model)
    grid = filters_above_maps(model.conv_kernel(), model.conv_activations(pixels), columns=8, gamma=1.0)
    cell_width, cell_height = 64 + 8, 63 + 3 + 64 + 8
    assert grid.shape == (4 * cell_height - 8, 8 * cell_width - 8, 3)
    expected = np.round(pixels[..., 0] / pixels[..., 0].max() * 255)
    for k in (0, 9, 31):
        top, left = (k // 8) * cell_height, (k % 8) * cell_width
        # the filter: its one positive weight (red input channel, centre) fills the middle block in red
        assert tuple(grid[top + 31, left + 31]) == (255, 0, 0)
        # its map, below it, is the red plane scaled to its own peak, each pixel shown 2x2
        map_pixels = grid[top + 66 : top + 66 + 64 : 2, left : left + 64 : 2, 0]
        np.testing.assert_allclose(map_pixels, expected, atol=1)


def test_a_gamma_below_one_brightens_weak_responses_and_keeps_the_peak_white():
    activations = np.zeros((32, 32, 2), np.float32)
    activations[0, 0, :] = [1.0, 0.01]  # the peaks: one strong filter, one weak one
    activations[1, 1, :] = [0.25, 0.0025]  # a quarter of each peak
    linear, lifted = map_brightness(activations), map_brightness(activations, gamma=0.5)
    assert linear[0, 0, 0] == linear[1, 0, 0] == 255  # each map scaled to its own peak: the weak one too
    assert linear[0, 1, 1] == 64 and lifted[0, 1, 1] == 128  # a quarter of the peak, and its square root
