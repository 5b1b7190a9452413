"""The seed ConvNet, layer for layer as in the tutorial, plus its optimizer.

The one deliberate addition is the first layer: the model takes raw uint8 pixels and scales
them to [0, 1] itself, so the dataset stays uint8 in memory and a saved model takes pixels
as any image gives them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from cifar.backend import keras_module

if TYPE_CHECKING:
    import keras

    from cifar.config import TrainConfig

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


def make_optimizer(config: "TrainConfig", steps_per_epoch: int) -> "keras.optimizers.Optimizer":
    keras = keras_module()
    learning_rate: object = config.learning_rate
    if config.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch)
        )
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    return keras.optimizers.SGD(learning_rate=learning_rate)  # no momentum, as optimizer='sgd'


def compile_model(model: "keras.Model", config: "TrainConfig", steps_per_epoch: int, steps_per_execution: int = 1) -> None:
    # Sparse labels give the recipe's categorical cross-entropy without a one-hot copy of the labels.
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
