"""Inside the network: the first conv layer's learned filters and what each of them finds in a picture.

Both come out as ready-to-show uint8 image grids, so the app (or a notebook) can put them on
screen with no plotting library. They take plain arrays: a page model gives them
(cifar/inference.py), from the LiteRT copy or from Keras.
"""
from __future__ import annotations

import numpy as np


def tile(images: np.ndarray, columns: int, gap: int = 2, background: int = 255) -> np.ndarray:
    """Lay (N, H, W, C) uint8 images out in a grid with `columns` per row."""
    count, height, width, channels = images.shape
    rows = -(-count // columns)
    grid = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, channels), background, np.uint8)
    for index, image in enumerate(images):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        grid[top : top + height, left : left + width] = image
    return grid


def _enlarge(images: np.ndarray, factor: int) -> np.ndarray:
    return images.repeat(factor, axis=1).repeat(factor, axis=2)  # nearest neighbour: every weight/pixel shows


def filter_colours(kernel: np.ndarray) -> np.ndarray:
    """The conv layer's filters (kernel (k, k, 3 input channels, filters)) as (filters, k, k, 3)
    uint8 pictures, each stretched to the full colour range."""
    filters = np.moveaxis(np.asarray(kernel), -1, 0)
    low = filters.min(axis=(1, 2, 3), keepdims=True)
    high = filters.max(axis=(1, 2, 3), keepdims=True)
    return ((filters - low) / np.maximum(high - low, 1e-12) * 255).round().astype(np.uint8)


def map_brightness(activations: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Activation maps ((height, width, filters), after ReLU) as (filters, height, width) uint8 greys, each
    scaled to its own peak, so a weak filter's map shows as well as a strong one's. A gamma
    below 1 brightens weak responses within a map as well (0.5: brightness is the square root)."""
    maps = np.moveaxis(np.asarray(activations, np.float64), -1, 0)
    peak = maps.max(axis=(1, 2), keepdims=True)
    return ((maps / np.maximum(peak, 1e-12)) ** gamma * 255).round().astype(np.uint8)


def conv_filters(kernel: np.ndarray, scale: int = 12) -> np.ndarray:
    """The conv layer's filters, each stretched to the full colour range, as one grid."""
    return tile(_enlarge(filter_colours(kernel), scale), columns=8, gap=3)


def feature_maps(activations: np.ndarray, scale: int = 3) -> np.ndarray:
    """What each filter responds to in one picture, bright = strong, as one grid."""
    return tile(_enlarge(map_brightness(activations)[..., None].repeat(3, axis=-1), scale), columns=8, gap=3)


def filters_above_maps(kernel: np.ndarray, activations: np.ndarray, columns: int = 8, gamma: float = 0.5) -> np.ndarray:
    """Each filter directly above its map in this picture, so the eye links the two: maps enlarged
    twice (64 px for 32x32 pictures), filters as nearly as wide (63 px for 3x3, 60 for 5x5), pairs
    laid out `columns` to a row."""
    maps = _enlarge(map_brightness(activations, gamma)[..., None].repeat(3, axis=-1), 2)
    filters = _enlarge(filter_colours(kernel), max(1, maps.shape[2] // np.shape(kernel)[1]))
    # Either may be the wider: an uploaded model's unpadded conv gives 30x30 maps (60 px) under 63 px filters.
    count, (map_height, map_width) = len(maps), maps.shape[1:3]
    pairs = np.full((count, filters.shape[1] + 3 + map_height, max(map_width, filters.shape[2]), 3), 255, np.uint8)
    pairs[:, : filters.shape[1], : filters.shape[2]] = filters
    pairs[:, filters.shape[1] + 3 :, :map_width] = maps
    return tile(pairs, columns=columns, gap=8)
