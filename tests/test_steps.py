"""The compiled training step computes what Keras's compiled recipe computes, and its dropout
masks have the recipe's distribution."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar.config import TrainConfig
from cifar.model import build_model
from cifar.steps import TrainSteps, keep_mask
from tests.synthetic import learnable_images


def kept_fraction_bounds(rate: float, size: int) -> tuple[float, float]:
    # Six standard deviations of a binomial proportion: a sound sampler fails this about once in 10^9 runs.
    spread = 6 * np.sqrt(rate * (1 - rate) / size)
    return 1 - rate - spread, 1 - rate + spread


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.3, 0.05, 0.95])
def test_keep_masks_keep_each_unit_with_probability_one_minus_the_rate(rate):
    bits = np.random.SFC64(0)
    mask = keep_mask(bits, (64, 32, 32, 32), rate)
    assert mask.shape == (64, 32, 32, 32) and mask.dtype == bool
    low, high = kept_fraction_bounds(rate, mask.size)
    assert low < mask.mean() < high
    # Independent across units: neighbours agree as often as independent draws would.
    flat = mask.ravel()
    agree = np.mean(flat[1:] == flat[:-1])
    expected = rate**2 + (1 - rate) ** 2
    assert abs(agree - expected) < 6 * np.sqrt(expected * (1 - expected) / flat.size)
    assert not np.array_equal(mask, keep_mask(bits, (64, 32, 32, 32), rate))  # a new mask each draw


def test_the_rare_tied_byte_is_settled_by_more_random_bits():
    # At rate 1/512 only a zero byte can drop a unit, and then only if the extra bits say so:
    # half of the zero bytes, so 1 unit in 512. Deciding ties all one way would give 0 or 1 in 256.
    rate, size = 1 / 512, 4_000_000
    dropped = size - keep_mask(np.random.SFC64(1), (size,), rate).sum()
    expected = rate * size
    assert abs(dropped - expected) < 6 * np.sqrt(expected)


def test_rate_zero_keeps_everything():
    assert keep_mask(np.random.SFC64(2), (3, 5), 0.0).all()


def recipe_compiled(model: "keras.Model", optimizer) -> "keras.Model":
    """A copy of the model compiled as the recipe compiles it: one-hot categorical cross-entropy."""
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    reference.compile(optimizer=optimizer, loss="categorical_crossentropy")
    return reference


@pytest.mark.parametrize("optimizer", ["sgd", "sgd-cosine", "adam"])
def test_training_steps_update_the_weights_as_keras_fit_does(optimizer):
    # Without dropout nothing is random, so the two must agree step for step.
    images, labels = learnable_images(5 * 32, seed=4)
    steps_per_epoch = 5
    if optimizer == "sgd":
        config = TrainConfig(conv_dropout=0.0, dense_dropout=0.0)  # the recipe: SGD at 0.01, constant
        keras_optimizer = keras.optimizers.SGD(0.01)
    elif optimizer == "sgd-cosine":  # the dense kernel's update comes a step late: at its own step's rate?
        config = TrainConfig(conv_dropout=0.0, dense_dropout=0.0, schedule="cosine", learning_rate=0.05, epochs=1)
        keras_optimizer = keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.05, decay_steps=steps_per_epoch))
    else:
        config = TrainConfig(conv_dropout=0.0, dense_dropout=0.0, optimizer="adam", schedule="cosine",
                             learning_rate=2e-3, epochs=1)
        keras_optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps_per_epoch))
    keras.utils.set_random_seed(0)
    ours = build_model(10, 0.0, 0.0)
    initial = ours.get_weights()
    reference = recipe_compiled(ours, keras_optimizer)
    one_hot = keras.utils.to_categorical(labels, 10)
    for step in range(steps_per_epoch):
        batch = slice(32 * step, 32 * (step + 1))
        reference.train_on_batch(images[batch], one_hot[batch])
    TrainSteps(ours, config, steps_per_epoch).run(images.reshape(5, 32, 32, 32, 3), labels.reshape(5, 32))
    moved = [np.abs(after - before).max() for after, before in zip(reference.get_weights(), initial)]
    assert min(moved) > 1e-5  # every layer trained, so the comparison below means something
    # Float rounding differs between the two graphs; Adam divides it by tiny gradients' roots, so
    # it allows 0.1% of the most any weight can move in five steps (5 x 2e-3), SGD much less.
    tolerance = 1e-5 if optimizer == "adam" else 2e-6
    for mine, theirs in zip(ours.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=tolerance)


def test_the_step_loss_and_correct_count_are_those_of_the_model_before_the_step():
    images, labels = learnable_images(64, seed=5)
    model = build_model(10, 0.0, 0.0)
    probabilities = model.predict(images, verbose=0)
    expected_loss = float(keras.losses.sparse_categorical_crossentropy(labels[:32], probabilities[:32]).numpy().sum())
    loss_sum, correct = TrainSteps(model, TrainConfig(conv_dropout=0.0, dense_dropout=0.0), 2).run(
        images[:32][None], labels[:32][None])
    assert loss_sum == pytest.approx(expected_loss, rel=1e-4)
    assert correct == np.sum(probabilities[:32].argmax(axis=1) == labels[:32])


def test_dropout_masks_are_applied_and_scaled_as_keras_dropout_does():
    # With every unit kept the step's forward pass is the model's, scaled by 1 / (1 - rate) at each
    # dropout; dropping every conv unit leaves only the biases to decide.
    images, labels = learnable_images(32, seed=6)
    model = build_model(10, conv_dropout=0.5, dense_dropout=0.0)
    steps = TrainSteps(model, TrainConfig(), 1)
    assert list(steps.mask_shapes) == ["conv_dropout"] and steps.mask_shapes["conv_dropout"] == (32, 32, 32)
    all_kept = np.ones((32, 32, 32, 32), dtype=bool)
    twice = keras.Sequential(model.layers[:2] + [keras.layers.Lambda(lambda h: 2 * h)] + model.layers[3:])
    logits = steps._logits(images, {"conv_dropout": all_kept})
    expected = twice(images, training=False)
    np.testing.assert_allclose(keras.ops.softmax(logits), expected, rtol=1e-4, atol=1e-6)
    none_kept = steps._logits(images, {"conv_dropout": ~all_kept}).numpy()
    assert np.allclose(none_kept, none_kept[0])  # every picture looks the same once all is dropped


def test_the_fast_step_draws_a_mask_per_dropout_for_each_group_from_the_seed_and_epoch():
    from cifar.train import batch_groups

    x, y = learnable_images(300, seed=2)
    steps = TrainSteps(build_model(10, conv_dropout=0.0, dense_dropout=0.5), TrainConfig(), 10)
    groups = list(steps.inputs(batch_groups(x, y, 32, seed=4, epoch=1), seed=4, epoch=1))
    assert [tuple(part.shape for part in group[1:]) for group in groups] == [((9, 32), (9, 32, 512)), ((1, 12), (1, 12, 512))]
    again = list(steps.inputs(batch_groups(x, y, 32, seed=4, epoch=1), seed=4, epoch=1))
    assert all(np.array_equal(first[2], second[2]) for first, second in zip(groups, again))
    other_epoch = next(steps.inputs(batch_groups(x, y, 32, seed=4, epoch=2), seed=4, epoch=2))
    assert not np.array_equal(groups[0][2], other_epoch[2])
    assert 0.45 < np.mean(np.concatenate([group[2].ravel() for group in groups])) < 0.55


def test_gradients_through_dropout_are_those_of_keras_layers_with_the_same_masks():
    tf = pytest.importorskip("tensorflow")
    images, labels = learnable_images(32, seed=7)
    labels = labels.astype(np.int32)
    model = build_model(10, conv_dropout=0.3, dense_dropout=0.5)
    steps = TrainSteps(model, TrainConfig(), 1)
    bits = np.random.SFC64(3)
    masks = {name: keep_mask(bits, (32, *shape), steps.rates[name]) for name, shape in steps.mask_shapes.items()}
    assert set(masks) == {"conv_dropout", "dense_dropout"}
    layer = model.get_layer

    def keras_logits():  # the layers themselves, with dropout written out as Keras defines it
        hidden = layer("conv")(layer("scale_to_unit")(images)) * (masks["conv_dropout"] / np.float32(0.7))
        hidden = layer("dense")(layer("flatten")(layer("pool")(hidden))) * (masks["dense_dropout"] / np.float32(0.5))
        return hidden @ layer("class_probabilities").kernel + layer("class_probabilities").bias

    variables = [variable.value for variable in model.trainable_variables]
    results = []
    for logits in (keras_logits, lambda: steps._logits(images, masks)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits()))
        results.append((float(loss), tape.gradient(loss, variables)))
    (keras_loss, keras_gradients), (our_loss, our_gradients) = results
    assert our_loss == pytest.approx(keras_loss, rel=1e-5)
    for variable, theirs, mine in zip(variables, keras_gradients, our_gradients):
        assert np.abs(theirs).max() > 0, variable.name
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6 * np.abs(theirs).max(), err_msg=variable.name)


def test_only_the_seed_convnet_is_accepted():
    other = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="seed ConvNet"):
        TrainSteps(other, TrainConfig(), 1)
    # The same layer names with another padding: the step's SAME convolution would compute something else.
    valid_padding = build_model(10)
    valid_padding.get_layer("conv").padding = "valid"
    with pytest.raises(ValueError, match="seed ConvNet"):
        TrainSteps(valid_padding, TrainConfig(), 1)
