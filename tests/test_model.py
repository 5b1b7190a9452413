"""The model is the seed recipe, layer by layer, and its loss and optimizer are the recipe's."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar.config import SEED_RECIPE, TrainConfig
from cifar.model import build_model


def recipe_model(num_classes: int) -> "keras.Model":
    """The tutorial's model as its post writes it, on [0, 1] float input."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=(32, 32, 3)),
        layers.Conv2D(32, (3, 3), padding="same", activation="relu"),
        layers.Dropout(0.2),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ])


LAYER_SETTINGS = ("filters", "kernel_size", "strides", "padding", "activation", "rate", "pool_size", "units", "use_bias")


@pytest.mark.parametrize("num_classes", [10, 100])
def test_model_matches_the_recipe_layer_by_layer(num_classes):
    ours = build_model(num_classes)
    reference = recipe_model(num_classes)
    assert type(ours.layers[0]).__name__ == "Rescaling"  # our one addition: raw pixels in
    assert ours.layers[0].get_config()["scale"] == pytest.approx(1 / 255)
    assert len(ours.layers[1:]) == len(reference.layers)
    for mine, theirs in zip(ours.layers[1:], reference.layers):
        assert type(mine) is type(theirs)
        mine_config, their_config = mine.get_config(), theirs.get_config()
        for key in LAYER_SETTINGS:
            assert mine_config.get(key) == their_config.get(key), (mine.name, key)
        assert [w.shape for w in mine.weights] == [w.shape for w in theirs.weights]
    assert ours.count_params() == reference.count_params()
    if num_classes == 10:
        assert ours.count_params() == 4_200_842


def test_model_takes_raw_pixels_and_computes_the_recipe_function():
    ours, reference = build_model(10), recipe_model(10)
    reference.set_weights(ours.get_weights())
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    expected = reference(pixels.astype("float32") / 255, training=False)
    np.testing.assert_allclose(ours(pixels, training=False), expected, rtol=1e-5, atol=1e-6)


def test_dropout_rates_come_from_the_config():
    model = build_model(10, conv_dropout=0.35, dense_dropout=0.0)
    assert [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"] == [0.35, 0.0]


def test_recipe_optimizer_is_plain_sgd_at_keras_default_rate():
    # tests/test_steps.py checks that the training step's SGD updates the weights as this optimizer does.
    default = keras.optimizers.get("sgd")  # what the recipe's optimizer='sgd' gives
    assert SEED_RECIPE.optimizer == "sgd" and SEED_RECIPE.schedule == "constant"
    assert SEED_RECIPE.learning_rate == pytest.approx(float(default.learning_rate))
    assert default.momentum == 0 and not default.nesterov


def test_config_rejects_nonsense_with_a_clear_message():
    with pytest.raises(ValueError, match="conv_dropout"):
        TrainConfig(conv_dropout=1.0)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
