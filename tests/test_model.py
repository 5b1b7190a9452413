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
    with pytest.raises(ValueError, match="conv_start"):
        TrainConfig(conv_start="zeros")


def test_principal_component_filters_make_the_conv_layers_responses_uncorrelated():
    from cifar.model import principal_component_filters
    from tests.synthetic import learnable_images

    images, _ = learnable_images(400, seed=3)
    kernel, bias = principal_component_filters(images, filters=32, seed=0)
    assert kernel.shape == (3, 3, 3, 32) and bias.shape == (32,)
    np.testing.assert_array_equal(kernel[..., 16:], -kernel[..., :16])  # each component with both signs
    # The conv layer's own linear response (before its relu), away from the zero-padded border.
    model = build_model(10)
    model.get_layer("conv").set_weights([kernel, bias])
    conv = model.get_layer("conv")
    responses = keras.ops.convert_to_numpy(
        keras.ops.conv(images.astype("float32") / 255, conv.kernel, padding="same") + conv.bias
    )[:, 1:-1, 1:-1, :16].reshape(-1, 16).astype(np.float64)
    covariance = np.cov(responses, rowvar=False)
    variances = np.diag(covariance)
    correlations = covariance / np.sqrt(np.outer(variances, variances))
    assert np.abs(correlations - np.eye(16)).max() < 0.05
    assert np.abs(responses.mean(axis=0)).max() < 0.05  # the bias centres them
    # Principal components: orthogonal directions, largest variance first, each variance
    # lambda / (lambda + epsilon) after the division by sqrt(lambda + epsilon), so below 1.
    directions = kernel[..., :16].reshape(27, 16)
    gram = directions.T @ directions
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-5)
    assert np.all(np.diff(variances) < 0.01) and np.all(variances < 1.0)


def test_pca_start_comes_from_the_training_images_and_is_what_training_starts_from():
    import threading

    from cifar.model import principal_component_filters
    from cifar.train import train_new_model
    from tests.synthetic import CIFAR10_CLASSES, learnable_images

    train, test = learnable_images(300, seed=1), learnable_images(50, seed=2)
    stopped = threading.Event()
    stopped.set()  # stopped before its first step: the model keeps its starting weights
    config = TrainConfig(conv_start="pca", seed=4, validation="none")
    model, result = train_new_model(train, test, CIFAR10_CLASSES, config, stop=stopped)
    assert result.steps_done == 0
    expected_kernel, expected_bias = principal_component_filters(train[0], 32, seed=4)
    kernel, bias = model.get_layer("conv").get_weights()
    np.testing.assert_array_equal(kernel, expected_kernel)
    np.testing.assert_array_equal(bias, expected_bias)
    random_start = train_new_model(train, test, CIFAR10_CLASSES, config.replace(conv_start="random"), stop=stopped)[0]
    assert not np.allclose(random_start.get_layer("conv").get_weights()[0], kernel)


def test_principal_component_filters_come_in_pairs():
    from cifar.model import principal_component_filters

    with pytest.raises(ValueError, match="an even number of filters"):
        principal_component_filters(np.zeros((10, 32, 32, 3), np.uint8), filters=33, seed=0)
