"""The network settings: the layer table the sidebar shows without Keras against Keras's own model, which
path trains which network, and a two-block network that learns on the plain path."""
from __future__ import annotations

import numpy as np
import pytest

from cifar.config import PRESETS, SEED_RECIPE, TWO_BLOCKS, TrainConfig
from cifar.model import build_model, layer_table, model_for
from cifar.steps import TrainSteps, seed_convnet_difference
from cifar.train import train_new_model, training_path
from tests.synthetic import CIFAR10_CLASSES, learnable_images

NETWORKS = [
    SEED_RECIPE,
    TWO_BLOCKS,
    TrainConfig(conv_blocks=3, filters=8, kernel_size=5, dense_units=16),
    TrainConfig(conv_blocks=2, filters=64, kernel_size=5, dense_units=1024),
    TrainConfig(filters=16, dense_units=100),
]


@pytest.mark.parametrize("config", NETWORKS, ids=lambda config: str(config.network))
@pytest.mark.parametrize("num_classes,input_shape", [(10, (32, 32, 3)), (100, (32, 32, 3)), (3, (27, 21, 1))])
def test_the_layer_table_is_what_keras_builds(config, num_classes, input_shape):
    model = model_for(config, num_classes, input_shape)
    table = layer_table(config, num_classes, input_shape)
    assert [(row.name, row.kind) for row in table] == [(layer.name, type(layer).__name__) for layer in model.layers]
    for row, layer in zip(table, model.layers):
        assert (None, *row.output_shape) == tuple(layer.output.shape), row.name
        assert row.parameters == layer.count_params(), row.name
    assert sum(row.parameters for row in table) == model.count_params()


def test_the_default_settings_build_the_seed_convnet_with_its_layer_names():
    model = model_for(SEED_RECIPE, 10)
    assert [layer.name for layer in model.layers] == ["scale_to_unit", "conv", "conv_dropout", "pool", "flatten",
                                                      "dense", "dense_dropout", "class_probabilities"]
    assert model.count_params() == 4_200_842  # the tutorial's figure
    assert model.get_config() == build_model(10).get_config()
    deeper = model_for(TWO_BLOCKS, 10)
    assert [layer.name for layer in deeper.layers][1:7] == ["conv", "conv_dropout", "pool", "conv_2", "conv_dropout_2",
                                                           "pool_2"]
    assert deeper.get_layer("conv_2").filters == 64


@pytest.mark.parametrize("change", [{"conv_blocks": 2}, {"kernel_size": 5}, {"filters": 16}, {"dense_units": 256}])
def test_the_fast_step_refuses_every_other_network(change):
    model = model_for(SEED_RECIPE.replace(**change), 10)
    assert seed_convnet_difference(model) is not None
    assert training_path(model, SEED_RECIPE.replace(**change)) == "plain"
    with pytest.raises(ValueError, match="PlainSteps"):
        TrainSteps(model, SEED_RECIPE.replace(**change), steps_per_epoch=10)
    assert training_path(model_for(SEED_RECIPE, 10), SEED_RECIPE) == "fast"


def test_a_two_block_network_trains_on_the_plain_path_and_learns():
    train, test = learnable_images(600, seed=3), learnable_images(100, seed=4)
    config = TWO_BLOCKS.replace(epochs=4, train_size=None, validation="none", conv_start="random", learning_rate=2e-3,
                                schedule="constant", batch_size=32)
    events = []
    model, result = train_new_model(train, test, CIFAR10_CLASSES, config, on_event=events.append)
    start = next(event for event in events if event["event"] == "start")
    assert start["path"] == "plain" and result.status == "finished"
    assert model.get_layer("conv_2").filters == 64
    losses = [entry["loss"] for entry in result.history]
    assert losses[-1] < 0.6 * losses[0], losses
    probabilities = model.predict_on_batch(test[0])
    assert np.mean(probabilities.argmax(axis=1) == test[1]) > 0.5


def test_network_settings_are_checked_with_clear_messages():
    with pytest.raises(ValueError, match="conv_blocks must be between 1 and 3, not 4"):
        TrainConfig(conv_blocks=4)
    with pytest.raises(ValueError, match="filters must be between 8 and 64, not 4"):
        TrainConfig(filters=4)
    with pytest.raises(ValueError, match="kernel_size must be 3 or 5, not 7"):
        TrainConfig(kernel_size=7)
    with pytest.raises(ValueError, match="dense_units must be between 16 and 1024, not 4096"):
        TrainConfig(dense_units=4096)
    with pytest.raises(ValueError, match="with a 3x3 kernel it takes an even number of filters up to 54, not 64"):
        TrainConfig(conv_start="pca", filters=64)
    with pytest.raises(ValueError, match="not 33"):
        TrainConfig(conv_start="pca", filters=33)
    assert TrainConfig(conv_start="pca", filters=64, kernel_size=5).filters == 64  # 5x5x3 patches have 75 dimensions


def test_a_network_other_than_the_seeds_is_named_in_words():
    assert "conv block" not in SEED_RECIPE.in_words()
    assert TWO_BLOCKS.in_words().startswith("Two conv blocks: 2 conv blocks of 32, 64 3×3 filters, dense 512; 3 epochs")
    assert TrainConfig.from_dict({"epochs": 3, "conv_blocks": 2}).conv_blocks == 2
    assert TrainConfig.from_dict({"epochs": 3}).network == SEED_RECIPE.network  # a run saved before the settings
    assert PRESETS["Two conv blocks"] == TWO_BLOCKS


def test_a_time_is_promised_only_from_the_speed_of_the_same_network(tmp_path):
    from cifar.runstore import RunStore, expected_seconds, expected_starts

    store = RunStore(tmp_path)
    seed, deeper, plain_seed = SEED_RECIPE.replace(epochs=1), TWO_BLOCKS, SEED_RECIPE.replace(fast_step=False)
    assert not store.latest_speeds() and store.latest_speeds().of(seed) is None
    for config, speed in ((seed, 2000.0), (deeper, 600.0), (seed, 2100.0)):
        run_id = store.submit(config, owner="a")
        store.claim("worker-1")
        store.finish(run_id, "finished", summary={"images_per_second": speed})
    speeds = store.latest_speeds()
    assert speeds.of(seed) == 2100.0  # the newest of that network
    assert speeds.of(SEED_RECIPE.replace(conv_dropout=0.0)) == 2100.0  # the same network, trained otherwise
    assert speeds.of(deeper) == 600.0 and speeds.of(deeper.replace(epochs=9, batch_size=32)) == 600.0
    assert speeds.of(deeper.replace(kernel_size=5)) is None  # not measured: no promise
    assert speeds.of(plain_seed) is None  # the seed's network on the plain step trains at another speed
    queued = [store.get(store.submit(config, owner="b")) for config in (seed, deeper.replace(dense_units=64), seed)]
    starts = expected_starts([], queued, speeds)
    assert starts == [0.0, expected_seconds(seed, 2100.0), None]  # after an unmeasured network nothing is promised


def test_a_deeper_network_with_5x5_kernels_is_saved_for_the_pages_and_looked_inside(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from cifar.inference import KerasModel, LiteModel
    from cifar.inside import filters_above_maps
    from cifar.runner import run_training
    from cifar.store import load_model

    config = TrainConfig(epochs=1, validation="none", conv_blocks=2, kernel_size=5, filters=8, dense_units=32,
                         train_size=200)
    test_images, test_labels = learnable_images(40, seed=1)
    folder = tmp_path / "20260101-000000-abcdef"
    metrics = run_training(config, folder, for_pages=True,
                           dataset=(learnable_images(200, seed=0), (test_images, test_labels), list(CIFAR10_CLASSES)))
    assert metrics["training_path"] == "plain"
    lite, keras_model = LiteModel(folder), KerasModel(load_model(folder)[0])
    assert lite.input_shape == keras_model.input_shape == (32, 32, 3)
    np.testing.assert_allclose(lite.probabilities(test_images), keras_model.probabilities(test_images), atol=1e-5)
    kernel, activations = lite.conv_kernel(), lite.conv_activations(test_images[0])
    assert kernel.shape == (5, 5, 3, 8) and activations.shape == (32, 32, 8)  # the first conv layer's
    np.testing.assert_allclose(activations, keras_model.conv_activations(test_images[0]), atol=1e-4)
    grid = filters_above_maps(kernel, activations)
    assert grid.shape[1] == 8 * 64 + 7 * 8  # eight 64-px columns: each 5x5 filter enlarged to 60 px fits above its map


def test_a_pca_start_of_5x5_filters_is_the_principal_components_of_5x5_patches():
    import threading

    from cifar.model import principal_component_filters

    train, test = learnable_images(300, seed=1), learnable_images(50, seed=2)
    stopped = threading.Event()
    stopped.set()  # stopped before its first step: the model keeps its starting weights
    config = TrainConfig(conv_start="pca", kernel_size=5, filters=64, conv_blocks=2, seed=4, validation="none")
    model, result = train_new_model(train, test, CIFAR10_CLASSES, config, stop=stopped)
    assert result.steps_done == 0
    kernel, bias = model.get_layer("conv").get_weights()
    assert kernel.shape == (5, 5, 3, 64)
    expected_kernel, expected_bias = principal_component_filters(train[0], 64, seed=4, kernel_size=5)
    np.testing.assert_array_equal(kernel, expected_kernel)
    np.testing.assert_array_equal(bias, expected_bias)
    # Each filter's response to the patches it was made from: the components' responses are uncorrelated.
    patches = np.lib.stride_tricks.sliding_window_view(train[0] / 255.0, (5, 5, 3), axis=(1, 2, 3)).reshape(-1, 75)
    responses = patches @ kernel.reshape(75, 64)[:, :32]
    correlation = np.corrcoef(responses, rowvar=False)
    assert np.abs(correlation - np.eye(32)).max() < 0.1
