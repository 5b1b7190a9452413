"""The seed ConvNet, layer for layer as in the tutorial.

The one deliberate addition is the first layer: the model takes raw uint8 pixels and scales
them to [0, 1] itself, so the dataset stays uint8 in memory and a saved model takes pixels
as any image gives them. Its loss and optimizer live in the training steps (cifar/steps.py,
cifar/plain_steps.py).
`principal_component_filters` gives the conv layer another starting point than Keras's random
one, for the Quick demo: the same layers, started from the main patterns of the pictures.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cifar.backend import keras_module

if TYPE_CHECKING:
    import keras

IMAGE_SHAPE = (32, 32, 3)
PCA_PATCHES = 100_000  # random 3x3 patches whose mean and covariance the principal-component filters come from
# Added to each component's variance before the inverse square root: a softened whitening, which
# learned faster than full whitening (the values tried are in bench/README.md).
PCA_EPSILON = 1.0


def build_model(num_classes: int, conv_dropout: float = 0.2, dense_dropout: float = 0.5) -> "keras.Model":
    keras = keras_module()
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="pixels"),
            layers.Rescaling(1.0 / 255, name="scale_to_unit"),
            layers.Conv2D(32, (3, 3), padding="same", activation="relu", name="conv"),
            layers.Dropout(conv_dropout, name="conv_dropout"),
            layers.MaxPooling2D(name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(512, activation="relu", name="dense"),
            layers.Dropout(dense_dropout, name="dense_dropout"),
            layers.Dense(num_classes, activation="softmax", name="class_probabilities"),
        ],
        name="cifar_convnet",
    )


def principal_component_filters(images: np.ndarray, filters: int, seed: int,
                                epsilon: float = PCA_EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """A starting kernel and bias for the 3x3 conv layer: the main patterns of its input patches.

    The filters are the top filters // 2 principal components of 3x3x3 patches of `images`
    (uint8, scaled to [0, 1] as the model's first layer does), each divided by the square root
    of its variance plus epsilon, and each also negated, so that relu keeps both signs of a
    response. The bias subtracts the mean patch. The conv layer then starts out responding to
    brightness, edges and colour contrasts, with uncorrelated responses, instead of to random
    mixtures of pixels, and the dense layer learns faster from it. The filters are still trained
    like any other weights. The Quick demo preset starts this way (cifar/config.py).
    """
    if filters % 2 or not 2 <= filters <= 54:
        raise ValueError(f"principal-component filters come in pairs of a component and its negative: "
                         f"an even number of filters from 2 to 54, not {filters}")
    rng = np.random.default_rng(seed)
    count = min(PCA_PATCHES, len(images) * 30 * 30)
    which, top, left = rng.integers(len(images), size=count), rng.integers(30, size=count), rng.integers(30, size=count)
    offsets = np.arange(3)
    # (count, 3, 3, 3): rows top..top+2, columns left..left+2, all channels: the kernel's own (h, w, channel) order.
    patches = images[which[:, None, None], (top[:, None] + offsets)[:, :, None], (left[:, None] + offsets)[:, None, :]]
    patches = patches.reshape(count, 27).astype(np.float64) / 255.0
    variances, components = np.linalg.eigh(np.cov(patches, rowvar=False))  # ascending variances
    kept = slice(None, -(filters // 2) - 1, -1)  # the largest filters // 2, largest first
    top_components = components[:, kept] / np.sqrt(variances[kept] + epsilon)
    kernel = np.concatenate([top_components, -top_components], axis=1)
    bias = -patches.mean(axis=0) @ kernel
    return kernel.reshape(3, 3, 3, filters).astype(np.float32), bias.astype(np.float32)
