"""Training that streams: fit the model while reporting plain-dict events to one callback.

Every consumer (the CLI's progress bars, the app's background job, the tests) reads the same
events, so what the app draws is exactly what the CLI prints:

- ``{"event": "start", "epochs", "steps_per_epoch", "train_size", "config", "validation", "path"}``, where
  path says which training step trains the model: "fast" (cifar/steps.py, the seed ConvNet only) or
  "plain" (cifar/plain_steps.py, any model)
- ``{"event": "batch", "epoch", "step", "steps_per_epoch", "loss", "accuracy", "images", "images_done",
  "epoch_loss", "epoch_accuracy", "images_per_second", "elapsed", "remaining", "progress"}`` every few
  batches; ``loss`` and ``accuracy`` cover just the ``images`` since the previous event (an epoch's
  short last batch always comes with the steps before it), ``epoch_*`` the
  epoch so far, ``images_done`` the whole run so far
- ``{"event": "epoch", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", ...}``
- ``{"event": "snapshot", "epoch", "filters", "watch", "seconds"}`` at step 0 and after each epoch,
  when there is a watch-list (cifar/snapshots.py)
- ``{"event": "paused", "epoch", "step", "progress", "images_done"}`` and ``{"event": "resumed",
  ..., "paused_seconds"}`` around a pause
- ``{"event": "end", "status": "finished" | "stopped" | "diverged", "reason"}``

A stop or pause request is honoured between two groups of steps, which take well under a
second; a stop leaves the weights of the last completed step, a pause goes on from the same step.
"""
from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import numpy as np

from cifar.backend import keras_module
from cifar.config import TrainConfig, held_out_size
from cifar.model import model_for, principal_component_filters
from cifar.predict import predict_probabilities
from cifar.snapshots import take_snapshot
from cifar.plain_steps import PlainSteps
from cifar.steps import TrainSteps, seed_convnet_difference, steps_per_call

if TYPE_CHECKING:
    import keras

Event = dict[str, Any]
OnEvent = Callable[[Event], None]
Arrays = tuple[np.ndarray, np.ndarray]


@dataclass
class TrainResult:
    status: str  # "finished", "stopped" or "diverged"
    reason: str
    history: list[Event] = field(default_factory=list)  # one entry per completed epoch
    images_per_second: float = 0.0  # training throughput, validation excluded
    wall_seconds: float = 0.0
    steps_done: int = 0


def subset(x: np.ndarray, y: np.ndarray, size: Optional[int], seed: int) -> Arrays:
    """A class-balanced-by-chance random subset; the arrays themselves when size covers them all."""
    if size is None or size >= len(x):
        return x, y
    picked = np.sort(np.random.default_rng(seed).permutation(len(x))[:size])
    return x[picked], y[picked]


def split_validation(x: np.ndarray, y: np.ndarray, size: Optional[int], seed: int) -> tuple[Arrays, Arrays]:
    """A run's training images and the validation images held out of them, disjoint: the subset
    of `size` (all images when None) less a held-out 10% of it (5,000 of CIFAR's 50,000)."""
    picked = np.random.default_rng([seed, 1]).permutation(len(x))
    if size is not None and size < len(x):
        picked = picked[:size]
    held = min(held_out_size(size if size is not None and size < len(x) else None), len(picked) // 10 or 1)
    if len(picked) < 2:
        raise ValueError(f"{len(picked)} training image cannot be split into training and validation images")
    train, validation = np.sort(picked[held:]), np.sort(picked[:held])
    return (x[train], y[train]), (x[validation], y[validation])


def batch_groups(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int,
                 flip: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of shuffled batches, stacked a compiled call's worth at a time, gathered from the uint8 arrays.

    Yields (images (k, b, *image shape), labels (k, b)). Whole batches come first; the last,
    smaller batch of an epoch comes alone. Each epoch has its own order and mirrorings, from
    the seed. Gathering from numpy copies only the batches, never the training set.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(x))
    whole_batches, rest = divmod(len(x), batch_size)
    per_call = steps_per_call(batch_size)
    groups = [(first * batch_size, min(per_call, whole_batches - first), batch_size)
              for first in range(0, whole_batches, per_call)]
    if rest:
        groups.append((whole_batches * batch_size, 1, rest))
    for start, steps, size in groups:
        picked = order[start : start + steps * size]
        images = x[picked]  # a copy, so mirroring it leaves the dataset alone
        if flip:
            mirrored = rng.random(len(picked)) < 0.5
            images[mirrored] = images[mirrored, :, ::-1]
        yield images.reshape(steps, size, *x.shape[1:]), y[picked].reshape(steps, size)


BACKGROUND_NICENESS = 10  # added to the niceness of the thread that makes the next batches (19 is the lowest priority)


def prefetched(items: Iterator[Any]) -> Iterator[Any]:
    """What items yields, with the next item made in a background thread while the caller uses this one.

    Gathering a group of batches and drawing its masks then overlaps the previous group's
    compiled steps. If the caller stops early, the one item in progress is finished and dropped.
    The thread runs at a lower scheduling priority, so on a machine with as many cores as
    TensorFlow has threads it fills the gaps instead of taking turns with them (bench/README.md).
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="next-batches", initializer=_lower_priority) as pool:
        upcoming = pool.submit(next, items, None)
        while (item := upcoming.result()) is not None:
            upcoming = pool.submit(next, items, None)
            yield item


def _lower_priority() -> None:
    try:
        thread = threading.get_native_id()  # on Linux, PRIO_PROCESS with a thread's id sets just that thread
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICENESS))
    except (AttributeError, OSError):
        pass  # elsewhere it may name the process or not exist: then the thread keeps the usual priority


def loss_and_accuracy(model: "keras.Model", x: np.ndarray, y: np.ndarray, batch_size: int = 128,
                      stop: Optional[threading.Event] = None) -> Optional[tuple[float, float]]:
    """Mean loss and accuracy over a labelled set, a chunk at a time; None if a stop came first."""
    probabilities = predict_probabilities(model, x, batch_size, stop)
    if probabilities is None:
        return None
    return mean_loss(y, probabilities), float(np.mean(probabilities.argmax(axis=1) == y))


def mean_loss(y: np.ndarray, probabilities: np.ndarray) -> float:
    keras = keras_module()
    return float(keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, probabilities)))


class _Progress:
    """Counts what has been trained and turns it into the events described in this module's docstring."""

    def __init__(self, on_event: OnEvent, epochs: int, steps_per_epoch: int, train_size: int) -> None:
        self.on_event, self.epochs, self.steps_per_epoch, self.train_size = on_event, epochs, steps_per_epoch, train_size
        self.started = time.perf_counter()
        self.train_seconds = 0.0
        self.images_seen = 0
        self.steps_done = 0

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds else 0.0

    def remaining(self, images_left: int) -> Optional[float]:
        speed = self.images_per_second
        return images_left / speed if speed else None

    def batch(self, epoch: int, step: int, images_in_epoch: int, chunk: tuple[float, float, int],
              epoch_sums: tuple[float, float]) -> None:
        loss_sum, correct, images = chunk
        done_images = (epoch - 1) * self.train_size + images_in_epoch
        total_images = self.epochs * self.train_size
        self.on_event({
            "event": "batch", "epoch": epoch, "step": step, "steps_per_epoch": self.steps_per_epoch,
            "loss": loss_sum / images, "accuracy": correct / images, "images": images, "images_done": done_images,
            "epoch_loss": epoch_sums[0] / images_in_epoch, "epoch_accuracy": epoch_sums[1] / images_in_epoch,
            "images_per_second": self.images_per_second, "elapsed": time.perf_counter() - self.started,
            "remaining": self.remaining(total_images - done_images), "progress": done_images / total_images,
        })

    def epoch(self, entry: Event) -> None:
        self.on_event({"event": "epoch", **entry, "epochs": self.epochs, "images_per_second": self.images_per_second,
                       "elapsed": time.perf_counter() - self.started,
                       "remaining": self.remaining((self.epochs - entry["epoch"]) * self.train_size)})


def training_path(model: "keras.Model", config: TrainConfig) -> str:
    """"fast" (cifar/steps.py) when the model provably is the seed's and the config allows it, else "plain"."""
    return "fast" if config.fast_step and seed_convnet_difference(model) is None else "plain"


def fit(model: "keras.Model", train: Arrays, config: TrainConfig, validation: Optional[Arrays] = None,
        on_event: Optional[OnEvent] = None, stop: Optional[threading.Event] = None,
        watched: Optional[np.ndarray] = None, pause: Optional[threading.Event] = None,
        while_paused: Optional[Callable[[], None]] = None) -> TrainResult:
    """Train a built model in place, streaming events; returns how it went.

    The seed ConvNet trains on the fast path (cifar/steps.py) unless config.fast_step is off;
    any other model on the plain path (cifar/plain_steps.py). Both give the same events.

    A stop request is honoured before each compiled call of steps (a fraction of a second)
    and leaves the weights of the last completed step. While `pause` is set, training waits
    before its next step, calling `while_paused` now and then, and goes on from that step
    when it is cleared. With `watched` pictures, a snapshot is taken at step 0 and after each epoch.
    """
    keras = keras_module()
    on_event = on_event or (lambda event: None)
    stop = stop or threading.Event()
    started = time.perf_counter()
    path = training_path(model, config)  # before seeding: the check builds a reference model
    keras.utils.set_random_seed(config.seed)
    x_train, y_train = subset(*train, config.train_size, config.seed)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    steps = (TrainSteps if path == "fast" else PlainSteps)(model, config, steps_per_epoch)
    checked_on = {"source": config.validation if validation is not None else "none",
                  "images": len(validation[0]) if validation is not None else 0}
    on_event({"event": "start", "epochs": config.epochs, "steps_per_epoch": steps_per_epoch,
              "train_size": len(x_train), "config": config.to_dict(), "validation": checked_on, "path": path})
    progress = _Progress(on_event, config.epochs, steps_per_epoch, len(x_train))
    if watched is not None:
        on_event(take_snapshot(model, watched, 0))
    status, reason, history = "finished", "", []
    # An epoch whose images do not fill its last batch ends with a short one: a dozen pictures,
    # whose accuracy alone would draw a spike at every epoch boundary. It is reported together
    # with the chunk of steps before it instead.
    short_last_batch = len(x_train) % config.batch_size != 0
    for epoch in range(1, config.epochs + 1):
        step, images_in_epoch, loss_sum, correct = 0, 0, 0.0, 0.0
        held: Optional[tuple[float, float, int]] = None
        chunk_started = time.perf_counter()
        groups = steps.inputs(batch_groups(x_train, y_train, config.batch_size, config.seed, epoch - 1, config.flip),
                             config.seed, epoch - 1)
        for group in prefetched(groups):
            if pause is not None and pause.is_set() and not stop.is_set():
                _wait_while_paused(progress, epoch, step, images_in_epoch, pause, stop, while_paused)
                chunk_started = time.perf_counter()  # a pause is not training time
            if stop.is_set():
                if held is not None:
                    progress.batch(epoch, step, images_in_epoch, held, (loss_sum, correct))
                status, reason = "stopped", f"Stopped by request in epoch {epoch}, step {step}."
                break
            chunk_loss, chunk_correct = steps.run(*group)
            # The time of a chunk includes gathering its batches and masks: what training costs.
            progress.train_seconds += time.perf_counter() - chunk_started
            images = group[1].size
            step += len(group[1])
            images_in_epoch += images
            loss_sum, correct = loss_sum + chunk_loss, correct + chunk_correct
            progress.images_seen += images
            progress.steps_done += len(group[1])
            if not math.isfinite(chunk_loss):
                status = "diverged"
                reason = (f"The loss became {chunk_loss / images} in epoch {epoch}, step {step}: training diverged. "
                          "Try a lower learning rate.")
                break
            chunk = (chunk_loss, chunk_correct, images)
            if held is not None:
                chunk, held = (held[0] + chunk_loss, held[1] + chunk_correct, held[2] + images), None
            if short_last_batch and step == steps_per_epoch - 1:
                held = chunk  # the short batch comes next, alone
            else:
                progress.batch(epoch, step, images_in_epoch, chunk, (loss_sum, correct))
            chunk_started = time.perf_counter()
        if status != "finished":
            break  # an interrupted epoch is not a data point of the per-epoch curves
        entry: Event = {"epoch": epoch, "loss": loss_sum / images_in_epoch, "accuracy": correct / images_in_epoch}
        if validation is not None:
            scores = loss_and_accuracy(model, *validation, config.eval_batch_size, stop)
            if scores is None:
                status, reason = "stopped", f"Stopped by request after epoch {epoch}."
                break
            entry.update(val_loss=scores[0], val_accuracy=scores[1])
        history.append(entry)
        progress.epoch(entry)
        if watched is not None:
            on_event(take_snapshot(model, watched, epoch))
    if status == "stopped" and not progress.steps_done:
        reason = "Stopped by request before the first step."
    result = TrainResult(
        status=status, reason=reason or f"Trained {config.epochs} epoch{'s' if config.epochs != 1 else ''}.",
        history=history, steps_done=progress.steps_done, images_per_second=progress.images_per_second,
        wall_seconds=time.perf_counter() - started,
    )
    on_event({"event": "end", "status": result.status, "reason": result.reason})
    return result


PAUSE_POLL_SECONDS = 0.1  # a resume takes effect within this


def _wait_while_paused(progress: _Progress, epoch: int, step: int, images_in_epoch: int, pause: threading.Event,
                       stop: threading.Event, while_paused: Optional[Callable[[], None]]) -> None:
    images_done = (epoch - 1) * progress.train_size + images_in_epoch
    where = {"epoch": epoch, "step": step, "images_done": images_done,
             "progress": images_done / (progress.epochs * progress.train_size)}
    progress.on_event({"event": "paused", **where})
    paused_at = time.perf_counter()
    while pause.is_set() and not stop.is_set():
        if while_paused is not None:
            while_paused()
        time.sleep(PAUSE_POLL_SECONDS)
    if not stop.is_set():
        progress.on_event({"event": "resumed", **where, "paused_seconds": time.perf_counter() - paused_at})


def evaluate(model: "keras.Model", x_test: np.ndarray, y_test: np.ndarray, class_names: list[str],
             batch_size: int = 128) -> dict[str, Any]:
    """Test loss and accuracy as the recipe reports them, plus the confusion matrix and per-class accuracy."""
    probabilities = predict_probabilities(model, x_test, batch_size)
    # One pass gives everything: the mean loss over all images is what model.evaluate() reports.
    test_loss = mean_loss(y_test, probabilities)
    predicted = probabilities.argmax(axis=1)
    test_accuracy = float(np.mean(predicted == y_test))
    num_classes = len(class_names)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y_test.astype(np.int64), predicted), 1)
    per_class = confusion.diagonal() / np.maximum(1, confusion.sum(axis=1))
    return {
        "test_loss": float(test_loss), "test_accuracy": float(test_accuracy),
        "per_class_accuracy": {name: float(acc) for name, acc in zip(class_names, per_class)},
        "confusion_matrix": confusion.tolist(),
        "predicted": predicted, "probabilities": probabilities,
    }


def train_new_model(train: Arrays, test: Arrays, class_names: list[str], config: TrainConfig,
                    on_event: Optional[OnEvent] = None, stop: Optional[threading.Event] = None,
                    watched: Optional[np.ndarray] = None, pause: Optional[threading.Event] = None,
                    while_paused: Optional[Callable[[], None]] = None) -> tuple["keras.Model", TrainResult]:
    """Build the network the config describes (the seed ConvNet by default) for these classes and
    pictures, and train it as the config says."""
    keras_module().utils.set_random_seed(config.seed)
    model = model_for(config, len(class_names), input_shape=train[0].shape[1:])
    validation: Optional[Arrays] = None
    if config.validation == "held_out":
        train, validation = split_validation(*train, config.train_size, config.seed)
    elif config.validation == "test":
        validation = test
    if config.conv_start == "pca":  # from the images it will train on, never the validation or test images
        train = subset(*train, config.train_size, config.seed)  # fit() then finds it already the right size
        conv = model.get_layer("conv")
        conv.set_weights(list(principal_component_filters(train[0], conv.filters, config.seed,
                                                          kernel_size=config.kernel_size)))
    return model, fit(model, train, config, validation, on_event, stop, watched, pause, while_paused)

