"""The seed ConvNet, layer for layer as in the tutorial, and the deeper or wider ones the network settings describe.

The one deliberate addition is the first layer: the model takes raw uint8 pixels and scales
them to [0, 1] itself, so the dataset stays uint8 in memory and a saved model takes pixels
as any image gives them. Its loss and optimizer live in the training steps (cifar/steps.py,
cifar/plain_steps.py).
`principal_component_filters` gives the conv layer another starting point than Keras's random
one, for the Quick demo: the same layers, started from the main patterns of the pictures.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cifar.backend import keras_module
from cifar.batches import IMAGE_SHAPE
from cifar.config import SEED_RECIPE, TrainConfig, pca_filter_limit

if TYPE_CHECKING:
    import keras

PCA_PATCHES = 100_000  # random patches whose mean and covariance the principal-component filters come from
# Added to each component's variance before the inverse square root: a softened whitening, which
# learned faster than full whitening (the values tried are in bench/README.md).
PCA_EPSILON = 1.0
_SEED = SEED_RECIPE


def build_model(num_classes: int, conv_dropout: float = _SEED.conv_dropout, dense_dropout: float = _SEED.dense_dropout,
                *, conv_blocks: int = _SEED.conv_blocks, filters: int = _SEED.filters,
                kernel_size: int = _SEED.kernel_size, dense_units: int = _SEED.dense_units,
                input_shape: tuple[int, ...] = IMAGE_SHAPE) -> "keras.Model":
    """The seed ConvNet with its defaults; other settings give it more conv blocks, other filters,
    a 5x5 kernel or another dense layer (cifar.config.TrainConfig's network fields)."""
    keras = keras_module()
    layers = keras.layers
    blocks = []
    for block in range(1, conv_blocks + 1):
        suffix = block_suffix(block)
        blocks += [
            layers.Conv2D(filters * 2 ** (block - 1), (kernel_size, kernel_size), padding="same", activation="relu",
                          name=f"conv{suffix}"),
            layers.Dropout(conv_dropout, name=f"conv_dropout{suffix}"),
            layers.MaxPooling2D(name=f"pool{suffix}"),
        ]
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, dtype="uint8", name="pixels"),
            layers.Rescaling(1.0 / 255, name="scale_to_unit"),
            *blocks,
            layers.Flatten(name="flatten"),
            layers.Dense(dense_units, activation="relu", name="dense"),
            layers.Dropout(dense_dropout, name="dense_dropout"),
            layers.Dense(num_classes, activation="softmax", name="class_probabilities"),
        ],
        name="cifar_convnet",
    )


def model_for(config: TrainConfig, num_classes: int, input_shape: tuple[int, ...] = IMAGE_SHAPE) -> "keras.Model":
    """The network a run's config describes."""
    return build_model(num_classes, config.conv_dropout, config.dense_dropout, **config.network, input_shape=input_shape)


def block_suffix(block: int) -> str:
    """The first block's layers keep the seed's names (conv, conv_dropout, pool); later ones add _2, _3."""
    return "" if block == 1 else f"_{block}"


@dataclass(frozen=True)
class LayerRow:
    """One layer of the network as the sidebar's table shows it."""

    name: str
    kind: str
    output_shape: tuple[int, ...]  # without the batch axis
    parameters: int


def layer_table(config: TrainConfig, num_classes: int, input_shape: tuple[int, ...] = IMAGE_SHAPE) -> list[LayerRow]:
    """The layers `model_for(config, ...)` builds, their output shapes and parameter counts, in plain
    Python: the web server shows them before training without importing Keras. tests/test_model.py
    checks them against Keras's own model."""
    height, width, channels = input_shape
    rows = [LayerRow("scale_to_unit", "Rescaling", (height, width, channels), 0)]
    for block in range(1, config.conv_blocks + 1):
        suffix = block_suffix(block)
        filters = config.filters * 2 ** (block - 1)
        weights = config.kernel_size * config.kernel_size * channels * filters + filters
        rows.append(LayerRow(f"conv{suffix}", "Conv2D", (height, width, filters), weights))  # "same" padding
        rows.append(LayerRow(f"conv_dropout{suffix}", "Dropout", (height, width, filters), 0))
        height, width, channels = height // 2, width // 2, filters  # 2x2 pooling, "valid": odd edges are dropped
        rows.append(LayerRow(f"pool{suffix}", "MaxPooling2D", (height, width, channels), 0))
    flat = height * width * channels
    rows += [
        LayerRow("flatten", "Flatten", (flat,), 0),
        LayerRow("dense", "Dense", (config.dense_units,), flat * config.dense_units + config.dense_units),
        LayerRow("dense_dropout", "Dropout", (config.dense_units,), 0),
        LayerRow("class_probabilities", "Dense", (num_classes,), config.dense_units * num_classes + num_classes),
    ]
    return rows


def principal_component_filters(images: np.ndarray, filters: int, seed: int, epsilon: float = PCA_EPSILON,
                                kernel_size: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A starting kernel and bias for the first conv layer: the main patterns of its input patches.

    The filters are the top filters // 2 principal components of kernel_size x kernel_size patches
    of `images` (uint8, scaled to [0, 1] as the model's first layer does), each divided by the square
    root of its variance plus epsilon, and each also negated, so that relu keeps both signs of a
    response. The bias subtracts the mean patch. The conv layer then starts out responding to
    brightness, edges and colour contrasts, with uncorrelated responses, instead of to random
    mixtures of pixels, and the dense layer learns faster from it. The filters are still trained
    like any other weights. The Quick demo preset starts this way (cifar/config.py).
    """
    _, height, width, channels = images.shape
    dimensions = kernel_size * kernel_size * channels
    if filters % 2 or not 2 <= filters <= pca_filter_limit(kernel_size, channels):
        raise ValueError(f"principal-component filters come in pairs of a component and its negative: "
                         f"an even number of filters from 2 to {pca_filter_limit(kernel_size, channels)}, not {filters}")
    rng = np.random.default_rng(seed)
    rows, columns = height - kernel_size + 1, width - kernel_size + 1  # where a whole patch fits
    count = min(PCA_PATCHES, len(images) * rows * columns)
    which, top, left = rng.integers(len(images), size=count), rng.integers(rows, size=count), rng.integers(columns, size=count)
    offsets = np.arange(kernel_size)
    # (count, k, k, channels): rows top..top+k-1, columns left..left+k-1: the kernel's own (h, w, channel) order.
    patches = images[which[:, None, None], (top[:, None] + offsets)[:, :, None], (left[:, None] + offsets)[:, None, :]]
    patches = patches.reshape(count, dimensions).astype(np.float64) / 255.0
    variances, components = np.linalg.eigh(np.cov(patches, rowvar=False))  # ascending variances
    kept = slice(None, -(filters // 2) - 1, -1)  # the largest filters // 2, largest first
    top_components = components[:, kept] / np.sqrt(variances[kept] + epsilon)
    kernel = np.concatenate([top_components, -top_components], axis=1)
    bias = -patches.mean(axis=0) @ kernel
    return kernel.reshape(kernel_size, kernel_size, channels, filters).astype(np.float32), bias.astype(np.float32)
