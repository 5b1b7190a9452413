"""What the network learns, recorded while it trains (cifar.snapshots): the held-out validation
split, a snapshot at step 0 and after every epoch, watched pictures that the network learns to
name, the story of a picture's predictions, and a pause that goes on from the same step."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar.config import TrainConfig
from cifar.model import build_model
from cifar.snapshots import default_watch_list, item_pixels, predictions_story, resolve_watch_list, upload_item
from cifar.train import fit, split_validation, train_new_model
from tests.synthetic import CIFAR10_CLASSES, learnable_images


def numbered_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixels spell their own index, so a split can be checked by identity."""
    x = np.zeros((count, 32, 32, 3), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(count) % 256, np.arange(count) // 256
    return x, np.arange(count) % 10


def ids(x: np.ndarray) -> set[int]:
    return set((x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 0, 1].astype(int)).tolist())


@pytest.mark.parametrize("size, held", [(None, 5_000), (10_000, 1_000), (800, 80)])
def test_the_validation_images_are_held_out_of_the_training_images(size, held):
    x, y = numbered_images(50_000)
    (train_x, _), (valid_x, valid_y) = split_validation(x, y, size, seed=3)
    assert len(valid_x) == held and len(train_x) == (size or 50_000) - held
    assert not ids(train_x) & ids(valid_x)
    assert ids(train_x) | ids(valid_x) <= set(range(50_000))
    assert np.array_equal(valid_y, np.array(sorted(ids(valid_x))) % 10)  # labels travel with their images
    again = split_validation(x, y, size, seed=3)[1][0]
    assert np.array_equal(again, valid_x)  # reproducible from the seed


def test_a_run_validates_on_held_out_training_images_never_the_test_set():
    x, y = numbered_images(2_000)
    test = numbered_images(2_300)[0][2_000:], np.arange(300) % 10  # images the training set does not have
    seen_by_validation = {}

    def spy(model, x_eval, y_eval, *rest):
        seen_by_validation.setdefault("ids", ids(x_eval))
        return 1.0, 0.1

    import cifar.train as train_module
    original = train_module.loss_and_accuracy
    train_module.loss_and_accuracy = spy
    try:
        events = []
        train_new_model((x, y), test, CIFAR10_CLASSES, TrainConfig(epochs=1, train_size=1_000, seed=2), events.append)
    finally:
        train_module.loss_and_accuracy = original
    start = events[0]
    assert start["validation"] == {"source": "held_out", "images": 100} and start["train_size"] == 900
    assert len(seen_by_validation["ids"]) == 100
    assert not seen_by_validation["ids"] & ids(test[0])
    old_way = []
    train_new_model((x, y), test, CIFAR10_CLASSES, TrainConfig(epochs=1, train_size=200, validation="test"), old_way.append)
    assert old_way[0]["validation"] == {"source": "test", "images": 300}


def test_snapshots_come_at_step_0_and_after_each_epoch_and_the_watched_pictures_are_learned():
    train, test = learnable_images(1_200, seed=0), learnable_images(300, seed=1)
    items = default_watch_list(test[1])
    watched, resolved = resolve_watch_list(items, *test)
    events = []
    train_new_model(train, test, CIFAR10_CLASSES, TrainConfig(epochs=3, seed=1), events.append, watched=watched)
    snapshots = [event for event in events if event["event"] == "snapshot"]
    assert [snapshot["epoch"] for snapshot in snapshots] == [0, 1, 2, 3]
    assert events.index(snapshots[0]) < next(i for i, e in enumerate(events) if e["event"] == "batch")
    labels = np.array([item["label"] for item in resolved])
    first, last = (np.array(snapshots[i]["watch"]) for i in (0, -1))
    assert first.shape == last.shape == (8, 10)
    rows = np.arange(8)
    # A reference the snapshot cannot fake: the true class's probability, before training and after.
    assert last[rows, labels].mean() > first[rows, labels].mean() + 0.5
    assert np.mean(last.argmax(axis=1) == labels) >= 0.75
    kernels = [np.array(snapshot["filters"]) for snapshot in snapshots]
    assert kernels[0].shape == (3, 3, 3, 32) and not np.allclose(kernels[0], kernels[-1])
    assert all(snapshot["seconds"] >= 0 for snapshot in snapshots)


def test_the_default_watch_list_covers_eight_classes_and_uploads_travel_as_pixels():
    labels = np.repeat(np.arange(10), 30)
    items = default_watch_list(labels)
    classes = [int(labels[item["test_index"]]) for item in items]
    assert len(items) == 8 and len(set(classes)) == 8
    three = default_watch_list(np.arange(60) % 3)
    assert len(three) == 8 and len({int(i["test_index"]) % 3 for i in three}) == 3
    picture = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x_test = np.zeros((5, 32, 32, 3), np.uint8)
    images, resolved = resolve_watch_list([upload_item("cat.jpg", picture), {"test_index": 99}, {"test_index": 2}],
                                          x_test, np.arange(5))
    assert np.array_equal(images[0], picture) and np.array_equal(item_pixels(resolved[0]), picture)
    assert [item.get("label") for item in resolved] == [None, 2]  # the unknown test image is left out


def test_a_pictures_story_names_what_it_was_called_over_the_epochs():
    names = ["cat", "frog"]
    rows = [[0.2, 0.8], [0.4, 0.6], [0.45, 0.55], [0.9, 0.1], [0.8, 0.2]]
    assert predictions_story(rows, names) == "frog at epochs 0–2, cat from epoch 3 on"
    assert predictions_story(rows[:1], names) == "frog at epoch 0"
    assert predictions_story([[0.9, 0.1]] * 3, names) == "cat at epochs 0–2"


@pytest.mark.parametrize("fast_step", [True, False], ids=["fast path", "plain path"])
def test_a_pause_stops_the_steps_and_a_resume_goes_on_from_the_same_step_to_the_same_weights(fast_step):
    train = learnable_images(2_000, seed=4)
    config = TrainConfig(epochs=2, seed=5, validation="none", fast_step=fast_step)  # plain: Keras's own dropout masks
    keras.utils.set_random_seed(config.seed)
    reference = build_model(10)
    fit(reference, train, config)

    keras.utils.set_random_seed(config.seed)
    model = build_model(10)
    pause, events, paused_seen = threading.Event(), [], threading.Event()
    calls = []

    def on_event(event):
        events.append(event)
        if event["event"] == "batch" and event["epoch"] == 1 and not pause.is_set() and not paused_seen.is_set():
            pause.set()
        if event["event"] == "paused":
            paused_seen.set()

    worker = threading.Thread(target=fit, args=(model, train, config),
                              kwargs=dict(on_event=on_event, pause=pause, while_paused=lambda: calls.append(1)))
    worker.start()
    assert paused_seen.wait(60)
    count = len(events)
    time.sleep(1.0)
    assert len(events) == count  # no step while paused
    pause.clear()
    worker.join(60)
    paused = next(e for e in events if e["event"] == "paused")
    resumed = next(e for e in events if e["event"] == "resumed")
    after = events[events.index(resumed) + 1]
    assert resumed["step"] == paused["step"] and resumed["paused_seconds"] >= 1.0 and calls
    assert after["event"] == "batch" and after["step"] > paused["step"] and after["epoch"] == paused["epoch"]
    assert events[-1]["status"] == "finished" and events[0]["path"] == ("fast" if fast_step else "plain")
    for ours, theirs in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
