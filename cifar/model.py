"""The seed ConvNet, layer for layer as in the tutorial.

The one deliberate addition is the first layer: the model takes raw uint8 pixels and scales
them to [0, 1] itself, so the dataset stays uint8 in memory and a saved model takes pixels
as any image gives them. Its loss and optimizer live in the training step (cifar/steps.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from cifar.backend import keras_module

if TYPE_CHECKING:
    import keras

IMAGE_SHAPE = (32, 32, 3)


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

