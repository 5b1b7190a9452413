"""Inside the network: the conv layer's 32 learned filters and what each of them finds in a picture.

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


def conv_filters(kernel: np.ndarray, scale: int = 12) -> np.ndarray:
    """The conv layer's filters (kernel (3, 3, 3 input channels, filters)), each stretched to the full colour range, as one grid."""
    filters = np.moveaxis(np.asarray(kernel), -1, 0)  # (filters, 3, 3, 3)
    low = filters.min(axis=(1, 2, 3), keepdims=True)
    high = filters.max(axis=(1, 2, 3), keepdims=True)
    colours = ((filters - low) / np.maximum(high - low, 1e-12) * 255).round().astype(np.uint8)
    return tile(_enlarge(colours, scale), columns=8, gap=3)


def feature_maps(activations: np.ndarray, scale: int = 3) -> np.ndarray:
    """What each filter responds to in one picture: its activation maps ((32, 32, filters), after ReLU), bright = strong."""
    maps = np.moveaxis(np.asarray(activations), -1, 0)  # (filters, 32, 32)
    peak = maps.max(axis=(1, 2), keepdims=True)
    grey = (maps / np.maximum(peak, 1e-12) * 255).round().astype(np.uint8)
    return tile(_enlarge(grey[..., None].repeat(3, axis=-1), scale), columns=8, gap=3)
