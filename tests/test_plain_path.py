"""The plain training path (cifar/plain_steps.py): it trains any model as Keras does, the fast path
agrees with it on the seed ConvNet, fit takes the fast path for the seed's layers only, and the
plain path streams the same events, stops, pauses and repeats itself."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar.config import TrainConfig
from cifar.model import build_model
from cifar.plain_steps import PlainSteps
from cifar.steps import TrainSteps
from cifar.train import fit, training_path
from tests.synthetic import learnable_images

layers = keras.layers


def copy_of(model: "keras.Model") -> "keras.Model":
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def run_fit(model, train, config):
    events = []
    result = fit(model, train, config, on_event=events.append)
    return events, result


@pytest.mark.parametrize("optimizer", ["sgd", "adam-cosine"])
def test_both_paths_train_the_seed_convnet_to_the_same_weights_and_events(optimizer):
    # Without dropout nothing is random, so the fast path must compute the plain one's steps.
    train = learnable_images(5 * 32, seed=8)
    config = TrainConfig(epochs=2, conv_dropout=0.0, dense_dropout=0.0, validation="none")
    if optimizer == "adam-cosine":
        config = config.replace(optimizer="adam", schedule="cosine", learning_rate=2e-3)
    keras.utils.set_random_seed(0)
    fast_model = build_model(10, 0.0, 0.0)
    initial = fast_model.get_weights()
    plain_model = copy_of(fast_model)
    fast_events, fast = run_fit(fast_model, train, config)
    plain_events, plain = run_fit(plain_model, train, config.replace(fast_step=False))
    assert fast_events[0]["path"] == "fast" and plain_events[0]["path"] == "plain"
    assert [(e["event"], sorted(e)) for e in fast_events] == [(e["event"], sorted(e)) for e in plain_events]
    assert fast.status == plain.status == "finished" and fast.steps_done == plain.steps_done == 10
    for ours, theirs in zip(fast_events, plain_events):
        if ours["event"] in ("batch", "epoch"):
            assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
            assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-6)
    assert min(np.abs(after - before).max() for after, before in zip(plain_model.get_weights(), initial)) > 1e-5
    # Adam divides float rounding by tiny gradients' roots: 0.1% of the most a weight can move (10 x 2e-3).
    tolerance = 2e-5 if optimizer == "adam-cosine" else 2e-6
    for fast_weights, plain_weights in zip(fast_model.get_weights(), plain_model.get_weights()):
        np.testing.assert_allclose(fast_weights, plain_weights, rtol=1e-4, atol=tolerance)


def two_blocks(num_classes: int = 10) -> "keras.Model":
    return keras.Sequential([
        keras.Input((32, 32, 3), dtype="uint8"), layers.Rescaling(1 / 255),
        layers.Conv2D(16, 3, padding="same", activation="relu"), layers.Dropout(0.2), layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"), layers.Dropout(0.2), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(num_classes, activation="softmax"),
    ])


def test_the_plain_path_trains_a_two_block_network_and_repeats_itself_with_the_same_seed():
    train, validation = learnable_images(640, seed=9), learnable_images(200, seed=10)
    config = TrainConfig(epochs=3, optimizer="adam", learning_rate=2e-3, seed=4)

    keras.utils.set_random_seed(1)
    initial = two_blocks().get_weights()

    def run(config, built_with_seed):
        # The same initial weights, but Dropout layers born with other seeds: only the run's seed may matter.
        keras.utils.set_random_seed(built_with_seed)
        model = two_blocks()
        model.set_weights(initial)
        events = []
        result = fit(model, train, config, validation, on_event=events.append)
        return model, events, result

    model, events, result = run(config, built_with_seed=2)
    assert events[0]["path"] == "plain" and result.status == "finished"
    first_batch = next(e for e in events if e["event"] == "batch")
    assert result.history[-1]["loss"] < 0.5 * first_batch["loss"]
    assert result.history[-1]["val_accuracy"] > 0.6  # chance is 0.1
    again, _, _ = run(config, built_with_seed=3)
    for ours, theirs in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(ours, theirs)  # the Dropout layers' masks came from the run's seed
    other_seed, _, _ = run(config.replace(seed=5), built_with_seed=2)
    assert not np.array_equal(other_seed.get_weights()[0], model.get_weights()[0])


def seed_layers(activation="relu", kernel_regularizer=None, dilation_rate=1, offset=0.0,
                conv_dropout=0.2, dense_dropout=0.5) -> "keras.Model":
    """build_model's layers, written out, with one thing changed."""
    return keras.Sequential([
        keras.Input((32, 32, 3), dtype="uint8"), layers.Rescaling(1 / 255, offset=offset),
        layers.Conv2D(32, (3, 3), padding="same", activation="relu", dilation_rate=dilation_rate),
        layers.Dropout(conv_dropout), layers.MaxPooling2D(), layers.Flatten(),
        layers.Dense(512, activation=activation, kernel_regularizer=kernel_regularizer),
        layers.Dropout(dense_dropout), layers.Dense(10, activation="softmax"),
    ])


VARIANTS = {
    "dense tanh": dict(activation="tanh"),
    "kernel regulariser": dict(kernel_regularizer=keras.regularizers.L2(0.5)),
    "conv dilation": dict(dilation_rate=2),
    "rescaling offset": dict(offset=-0.5),
}


def test_the_same_layers_written_out_take_the_fast_path_and_anything_else_the_plain_one():
    assert training_path(seed_layers(), TrainConfig()) == "fast"  # other names, same step
    assert training_path(seed_layers(), TrainConfig(fast_step=False)) == "plain"
    seed = build_model(10)
    assert training_path(keras.Model(seed.inputs, seed.outputs), TrainConfig()) == "plain"  # may call them otherwise
    constrained = build_model(10)
    constrained.get_layer("dense").kernel_constraint = keras.constraints.MaxNorm(1.0)
    assert training_path(constrained, TrainConfig()) == "plain"


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_model_that_differs_in_one_setting_is_refused_by_the_fast_step_and_trained_as_keras_trains_it(variant):
    changes = VARIANTS[variant]
    model = seed_layers(**changes, conv_dropout=0.0, dense_dropout=0.0)
    assert training_path(model, TrainConfig()) == "plain"
    with pytest.raises(ValueError, match="seed ConvNet"):
        TrainSteps(model, TrainConfig(), 1)
    # The reference: Keras's own compiled fit on a copy, step for step (no dropout, nothing random).
    images, labels = learnable_images(4 * 32, seed=11)
    config = TrainConfig(learning_rate=0.05, conv_dropout=0.0, dense_dropout=0.0)
    reference = copy_of(model)
    reference.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    for step in range(4):
        reference.train_on_batch(images[32 * step : 32 * (step + 1)], labels[32 * step : 32 * (step + 1)])
    PlainSteps(model, config, 4).run(images.reshape(4, 32, 32, 32, 3), labels.reshape(4, 32))
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fit_trains_each_refused_model_on_the_plain_path_and_its_loss_falls(variant):
    train = learnable_images(640, seed=12)
    keras.utils.set_random_seed(2)
    events, result = run_fit(seed_layers(**VARIANTS[variant]), train,
                             TrainConfig(epochs=2, optimizer="adam", learning_rate=1e-3, validation="none"))
    assert events[0]["path"] == "plain" and result.status == "finished"
    first_batch = next(e for e in events if e["event"] == "batch")
    assert result.history[-1]["loss"] < 0.6 * first_batch["loss"]


def test_a_stop_request_on_the_plain_path_ends_the_run_between_groups_of_steps():
    train = learnable_images(4000, seed=13)
    model = two_blocks()
    stop, first_batch, outcome = threading.Event(), threading.Event(), {}

    def on_event(event):
        if event["event"] == "batch":
            first_batch.set()

    def run():
        outcome["result"] = fit(model, train, TrainConfig(epochs=50, validation="none", fast_step=False),
                                on_event=on_event, stop=stop)
        outcome["returned"] = time.perf_counter()

    worker = threading.Thread(target=run)
    worker.start()
    assert first_batch.wait(60)
    asked = time.perf_counter()
    stop.set()
    worker.join(30)
    assert not worker.is_alive()
    # One group of steps may still finish: well under a second alone, seconds on a busy shared machine.
    assert outcome["returned"] - asked < 5.0
    result = outcome["result"]
    assert result.status == "stopped" and 0 < result.steps_done < 50 * 125
    probabilities = model.predict(train[0][:16], verbose=0)
    assert np.all(np.isfinite(probabilities)) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
