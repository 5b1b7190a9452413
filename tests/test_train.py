"""Training streams events, learns, stops on request, is deterministic and guards against NaN."""
from __future__ import annotations

import math
import os
import sys
import threading
import time

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar.config import TrainConfig
from cifar.model import build_model
from cifar.train import evaluate, fit, train_new_model
from tests.synthetic import CIFAR10_CLASSES, learnable_images


@pytest.fixture(scope="module")
def learnable():
    return learnable_images(1200, seed=0), learnable_images(300, seed=1)


def test_training_on_learnable_data_lowers_the_loss_and_reaches_high_accuracy(learnable):
    train, test = learnable
    events = []
    config = TrainConfig(epochs=4, seed=3)  # the recipe itself: SGD at 0.01, batch size 32
    model, result = train_new_model(train, test, CIFAR10_CLASSES, config, events.append)
    assert result.status == "finished"
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 4
    batches = [event for event in events if event["event"] == "batch"]
    assert len(batches) >= 8  # several points per epoch for the live curve
    assert all(0 < b["progress"] <= 1 and b["images_per_second"] > 0 for b in batches)
    assert batches[-1]["remaining"] == pytest.approx(0, abs=1e-6)
    losses = [entry["loss"] for entry in result.history]
    assert losses[-1] < losses[0] * 0.5
    assert result.history[-1]["val_accuracy"] > 0.9
    assert evaluate(model, *test, CIFAR10_CLASSES)["test_accuracy"] > 0.9


@pytest.mark.parametrize("batch_size", [32, 128])
def test_the_per_step_loss_reported_is_the_mean_of_the_steps_since_the_last_event(learnable, batch_size):
    train, _ = learnable
    size = 1100  # 35 and 9 steps an epoch: neither a whole number of Keras's groups of steps
    events = []
    fit(build_model(10), (train[0][:size], train[1][:size]), TrainConfig(epochs=2, batch_size=batch_size, validation="none"),
        on_event=events.append)
    for epoch in (1, 2):
        batches = [e for e in events if e["event"] == "batch" and e["epoch"] == epoch]
        assert batches[-1]["step"] == math.ceil(size / batch_size)
        sizes = np.diff([0] + [min(b["step"] * batch_size, size) for b in batches])
        assert all(b["loss"] > 0 and 0 <= b["accuracy"] <= 1 for b in batches)
        # The chunk means, weighted by their image counts, must add back up to Keras's epoch mean.
        assert np.average([b["loss"] for b in batches], weights=sizes) == pytest.approx(batches[-1]["epoch_loss"], rel=1e-4)
        assert np.average([b["accuracy"] for b in batches], weights=sizes) == pytest.approx(batches[-1]["epoch_accuracy"], abs=1e-4)
        # The epoch's short last batch (12 or 76 images) never stands alone: it would draw a spike.
        assert [b["images"] for b in batches] == list(sizes) and min(sizes) > size % batch_size
    assert [e["progress"] for e in events if e["event"] == "batch"][-1] == pytest.approx(1.0)


def test_evaluate_reports_what_keras_evaluate_reports(learnable):
    train, test = learnable
    model, _ = train_new_model(train, test, CIFAR10_CLASSES, TrainConfig(epochs=1, validation="none"))
    ours = evaluate(model, *test, CIFAR10_CLASSES)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    keras_loss, keras_accuracy = model.evaluate(*test, batch_size=128, verbose=0)
    assert ours["test_loss"] == pytest.approx(keras_loss, rel=1e-4)
    assert ours["test_accuracy"] == pytest.approx(keras_accuracy)
    confusion = np.array(ours["confusion_matrix"])
    assert confusion.sum() == len(test[0])
    assert np.trace(confusion) / confusion.sum() == pytest.approx(ours["test_accuracy"])


def test_a_stop_request_lands_within_a_second_and_leaves_a_usable_model():
    train = learnable_images(20000, seed=5)
    model = build_model(10)
    stop, first_batch, outcome = threading.Event(), threading.Event(), {}

    def on_event(event):
        if event["event"] == "batch":
            first_batch.set()

    def run():
        outcome["result"] = fit(model, train, TrainConfig(epochs=50, validation="none"), on_event=on_event, stop=stop)
        outcome["returned"] = time.perf_counter()

    worker = threading.Thread(target=run)
    worker.start()
    assert first_batch.wait(60)
    time.sleep(0.3)
    asked = time.perf_counter()
    stop.set()
    worker.join(10)
    assert not worker.is_alive()
    assert outcome["returned"] - asked < 1.0
    assert outcome["result"].status == "stopped"
    probabilities = model.predict(train[0][:16], verbose=0)
    assert np.all(np.isfinite(probabilities)) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)


def test_the_same_seed_and_config_give_the_same_metrics(learnable):
    train, test = learnable

    def run():
        events = []
        model, result = train_new_model(train, test, CIFAR10_CLASSES, TrainConfig(epochs=2, seed=7), events.append)
        return [e["loss"] for e in events if e["event"] == "batch"], result.history, model.get_weights()[0]

    first, second = run(), run()
    assert first[0] == second[0]
    assert first[1] == second[1]
    np.testing.assert_array_equal(first[2], second[2])
    other_seed = train_new_model(train, test, CIFAR10_CLASSES, TrainConfig(epochs=2, seed=8))[1].history
    assert other_seed != first[1]


def test_a_loss_that_becomes_nan_stops_the_run_with_a_clear_reason(learnable):
    train, _ = learnable
    model = build_model(10)
    bias = model.get_layer("class_probabilities").bias  # a NaN logit makes the loss NaN at once
    bias.assign(np.full(bias.shape, np.nan, dtype="float32"))
    events = []
    result = fit(model, train, TrainConfig(epochs=5, validation="none"), on_event=events.append)
    assert result.status == "diverged"
    assert "loss became nan" in result.reason.lower() and "learning rate" in result.reason
    assert result.history == []  # it stopped in the first epoch instead of running all five
    assert events[-1] == {"event": "end", "status": "diverged", "reason": result.reason}


def test_flipping_mirrors_about_half_the_pictures_and_leaves_the_dataset_alone(learnable):
    from cifar.train import batch_groups

    (x, y), _ = learnable
    x, y = x[:256], y[:256]
    original = x.copy()
    images, labels = next(batch_groups(x, y, batch_size=256, seed=0, epoch=0, flip=True))
    images, labels = images[0], labels[0]
    order = np.random.default_rng([0, 0]).permutation(256)
    same = np.all(images == x[order], axis=(1, 2, 3))
    mirrored = np.all(images == x[order][:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and 80 < mirrored.sum() < 176
    np.testing.assert_array_equal(labels, y[order])
    np.testing.assert_array_equal(x, original)


def test_an_epoch_of_batch_groups_shows_every_image_once_in_whole_batches_then_the_rest():
    from cifar.train import batch_groups

    x = np.arange(1100, dtype=np.uint8).repeat(32 * 32 * 3).reshape(1100, 32, 32, 3)  # image i is all i % 256
    y = np.arange(1100)
    groups = list(batch_groups(x, y, batch_size=32, seed=1, epoch=0))
    # 34 whole batches of 32 in calls of 16, then the last 12 images alone.
    assert [labels.shape for _, labels in groups] == [(16, 32), (16, 32), (2, 32), (1, 12)]
    seen = np.concatenate([labels.ravel() for _, labels in groups])
    assert sorted(seen) == list(range(1100))
    assert all(np.array_equal(images[..., 0, 0, 0], labels % 256) for images, labels in groups)
    next_epoch = np.concatenate([labels.ravel() for _, labels in batch_groups(x, y, 32, seed=1, epoch=1)])
    assert not np.array_equal(seen, next_epoch)


def test_prefetching_keeps_the_order_passes_errors_on_and_stops_when_the_caller_does():
    from cifar.train import prefetched

    assert list(prefetched(iter(range(5)))) == [0, 1, 2, 3, 4]

    def niceness():  # of the thread that makes the items
        yield os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    if sys.platform == "linux":
        ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert list(prefetched(niceness())) == [min(19, ours + 10)]

    def failing():
        yield 1
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(prefetched(failing()))
    made = []

    def counted():
        for item in range(100):
            made.append(item)
            yield item

    for item in prefetched(counted()):
        if item == 3:
            break
    time.sleep(0.1)
    assert made == [0, 1, 2, 3, 4]  # the one item ahead, and nothing after the caller stopped
    assert not any(thread.name.startswith("next-batches") for thread in threading.enumerate())
