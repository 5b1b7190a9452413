"""Inside the network: the conv layer's 32 learned filters and what each of them finds in a picture.

Both come out as ready-to-show uint8 image grids, so the app (or a notebook) can put them on
screen with no plotting library.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cifar.backend import keras_module

if TYPE_CHECKING:
    import keras

def _conv_layer(model: "keras.Model") -> "keras.layers.Layer":
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    if not convs:
        raise ValueError("this model has no convolution layer to look inside")
    return convs[0]


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


def conv_filters(model: "keras.Model", scale: int = 12) -> np.ndarray:
    """The 32 3x3 RGB filters, each stretched to the full colour range, as one image grid."""
    kernel = keras_module().ops.convert_to_numpy(_conv_layer(model).kernel)  # (3, 3, 3 input channels, filters)
    filters = np.moveaxis(kernel, -1, 0)  # (filters, 3, 3, 3)
    low = filters.min(axis=(1, 2, 3), keepdims=True)
    high = filters.max(axis=(1, 2, 3), keepdims=True)
    colours = ((filters - low) / np.maximum(high - low, 1e-12) * 255).round().astype(np.uint8)
    return tile(_enlarge(colours, scale), columns=8, gap=3)


def feature_maps(model: "keras.Model", pixels: np.ndarray, scale: int = 3) -> np.ndarray:
    """What each filter responds to in one 32x32 picture: its 32 activation maps (after ReLU), bright = strong."""
    keras = keras_module()
    layer = _conv_layer(model)
    probe = keras.Model(model.inputs, layer.output)
    activations = keras.ops.convert_to_numpy(probe(np.asarray(pixels, np.uint8)[None], training=False))[0]  # (32, 32, filters)
    maps = np.moveaxis(activations, -1, 0)  # (filters, 32, 32)
    peak = maps.max(axis=(1, 2), keepdims=True)
    grey = (maps / np.maximum(peak, 1e-12) * 255).round().astype(np.uint8)
    return tile(_enlarge(grey[..., None].repeat(3, axis=-1), scale), columns=8, gap=3)
