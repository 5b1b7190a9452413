"""Training that streams: fit the model while reporting plain-dict events to one callback.

Every consumer (the CLI's progress bars, the app's background job, the tests) reads the same
events, so what the app draws is exactly what the CLI prints:

- ``{"event": "start", "epochs", "steps_per_epoch", "train_size", "config"}``
- ``{"event": "batch", "epoch", "step", "loss", "accuracy", "epoch_loss", "epoch_accuracy",
  "images_per_second", "elapsed", "remaining", "progress"}`` every few batches; ``loss`` and
  ``accuracy`` cover just the batches since the previous event, ``epoch_*`` the epoch so far
- ``{"event": "epoch", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", ...}``
- ``{"event": "end", "status": "finished" | "stopped" | "diverged", "reason"}``

A stop request is honoured between two groups of steps, which take well under a second, and
leaves the weights of the last completed step.
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from cifar.backend import keras_module, tensorflow_module
from cifar.config import TrainConfig
from cifar.model import build_model, compile_model
from cifar.predict import predict_probabilities

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

Event = dict[str, Any]
OnEvent = Callable[[Event], None]
Arrays = tuple[np.ndarray, np.ndarray]

# Keras runs this many steps inside one compiled call before returning to Python: fewer
# round-trips into the Python callback (about 1.3x at batch size 32), while a group of steps
# still finishes well within the 1 s a stop request may take.
IMAGES_PER_EXECUTION = 512


@dataclass
class TrainResult:
    status: str  # "finished", "stopped" or "diverged"
    reason: str
    history: list[Event] = field(default_factory=list)  # one entry per completed epoch
    images_per_second: float = 0.0  # training throughput, validation excluded
    wall_seconds: float = 0.0
    steps_done: int = 0


def steps_per_execution_for(batch_size: int) -> int:
    return max(1, IMAGES_PER_EXECUTION // batch_size)


def subset(x: np.ndarray, y: np.ndarray, size: Optional[int], seed: int) -> Arrays:
    """A class-balanced-by-chance random subset; the arrays themselves when size covers them all."""
    if size is None or size >= len(x):
        return x, y
    picked = np.sort(np.random.default_rng(seed).permutation(len(x))[:size])
    return x[picked], y[picked]



def shuffled_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, flip: bool = False) -> "tf.data.Dataset":
    """One epoch of shuffled batches gathered straight from the uint8 arrays; a new order each epoch.

    Handing Keras the arrays themselves makes it copy the whole training set into a tensor
    (about 300 MB for CIFAR-10); gathering each batch from numpy costs microseconds and no copy.
    The dataset is finite, with its length declared, so Keras starts each epoch on a fresh
    iterator and a group of steps never runs past an epoch's last batch into the next epoch.
    """
    tf = tensorflow_module()
    epochs = itertools.count()

    def one_epoch():
        rng = np.random.default_rng([seed, next(epochs)])
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            picked = order[start : start + batch_size]
            images = x[picked]  # a copy, so mirroring it leaves the dataset alone
            if flip:
                mirrored = rng.random(len(picked)) < 0.5
                images[mirrored] = images[mirrored, :, ::-1]
            yield images, y[picked]

    signature = (tf.TensorSpec((None, *x.shape[1:]), tf.uint8), tf.TensorSpec((None,), tf.int32))
    batches = tf.data.Dataset.from_generator(one_epoch, output_signature=signature)
    steps = math.ceil(len(x) / batch_size)
    return batches.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(4)


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


def _make_reporter(**kwargs: Any) -> "keras.callbacks.Callback":
    keras = keras_module()

    class Reporter(keras.callbacks.Callback):
        """Turns Keras callback calls into the plain events described in this module's docstring."""

        def __init__(self, on_event: OnEvent, stop: threading.Event, epochs: int, steps_per_epoch: int,
                     batch_size: int, train_size: int, validation: Optional[Arrays], eval_batch_size: int) -> None:
            super().__init__()
            self.on_event, self.stop, self.epochs = on_event, stop, epochs
            self.validation, self.eval_batch_size = validation, eval_batch_size
            self.steps_per_epoch, self.batch_size, self.train_size = steps_per_epoch, batch_size, train_size
            self.status, self.reason = "finished", ""
            self.history: list[Event] = []
            self.train_seconds = 0.0
            self.images_seen = 0
            self.steps_done = 0
            self.started = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
            self.epoch = epoch + 1
            self.last_step, self.last_loss_sum, self.last_correct = 0, 0.0, 0.0
            self.chunk_started = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
            now = time.perf_counter()
            self.train_seconds += now - self.chunk_started
            step = min(batch + 1, self.steps_per_epoch)  # Keras numbers an epoch's last group of steps as if full
            images_in_epoch = min(step * self.batch_size, self.train_size)
            images_before = min(self.last_step * self.batch_size, self.train_size)
            new_images = images_in_epoch - images_before
            self.images_seen += new_images
            self.steps_done += step - self.last_step
            epoch_loss, epoch_accuracy = float(logs["loss"]), float(logs["accuracy"])
            # Keras reports means since the epoch began; the difference of the running sums is
            # the exact mean over just the steps since the last event.
            loss_sum, correct = epoch_loss * images_in_epoch, epoch_accuracy * images_in_epoch
            loss = (loss_sum - self.last_loss_sum) / max(1, new_images)
            accuracy = (correct - self.last_correct) / max(1, new_images)
            self.last_step, self.last_loss_sum, self.last_correct = step, loss_sum, correct
            if not math.isfinite(epoch_loss):
                self.status = "diverged"
                self.reason = (f"The loss became {epoch_loss} in epoch {self.epoch}, step {step}: training "
                               "diverged. Try a lower learning rate.")
                self.model.stop_training = True
            elif self.stop.is_set():
                self.status, self.reason = "stopped", f"Stopped by request in epoch {self.epoch}, step {step}."
                self.model.stop_training = True
            speed = self.images_seen / self.train_seconds if self.train_seconds else 0.0
            total_images = self.epochs * self.train_size
            done_images = (self.epoch - 1) * self.train_size + images_in_epoch
            self.on_event({
                "event": "batch", "epoch": self.epoch, "step": step, "steps_per_epoch": self.steps_per_epoch,
                "loss": loss, "accuracy": accuracy, "epoch_loss": epoch_loss, "epoch_accuracy": epoch_accuracy,
                "images_per_second": speed, "elapsed": now - self.started,
                "remaining": (total_images - done_images) / speed if speed else None,
                "progress": done_images / total_images,
            })
            self.chunk_started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
            logs = logs or {}
            if self.last_step < self.steps_per_epoch:
                return  # an interrupted epoch is not a data point of the per-epoch curves
            entry = {"epoch": epoch + 1, "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"])}
            if self.validation is not None and self.status == "finished":
                scores = loss_and_accuracy(self.model, *self.validation, self.eval_batch_size, self.stop)
                if scores is None:
                    self.status, self.reason = "stopped", f"Stopped by request after epoch {self.epoch}."
                    self.model.stop_training = True
                else:
                    entry.update(val_loss=scores[0], val_accuracy=scores[1])
            self.history.append(entry)
            speed = self.images_seen / self.train_seconds if self.train_seconds else 0.0
            remaining_images = (self.epochs - epoch - 1) * self.train_size
            self.on_event({"event": "epoch", **entry, "epochs": self.epochs, "images_per_second": speed,
                           "elapsed": time.perf_counter() - self.started,
                           "remaining": remaining_images / speed if speed else None})

    return Reporter(**kwargs)


def fit(model: "keras.Model", train: Arrays, config: TrainConfig, validation: Optional[Arrays] = None,
        on_event: Optional[OnEvent] = None, stop: Optional[threading.Event] = None) -> TrainResult:
    """Train a built model in place, streaming events; returns how it went."""
    keras = keras_module()
    on_event = on_event or (lambda event: None)
    stop = stop or threading.Event()
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    x_train, y_train = subset(*train, config.train_size, config.seed)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    compile_model(model, config, steps_per_epoch, steps_per_execution_for(config.batch_size))
    on_event({"event": "start", "epochs": config.epochs, "steps_per_epoch": steps_per_epoch,
              "train_size": len(x_train), "config": config.to_dict()})
    reporter = _make_reporter(on_event=on_event, stop=stop, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                              batch_size=config.batch_size, train_size=len(x_train), validation=validation,
                              eval_batch_size=config.eval_batch_size)
    if not stop.is_set():
        model.fit(shuffled_batches(x_train, y_train, config.batch_size, config.seed, config.flip), epochs=config.epochs,
                  shuffle=False, callbacks=[reporter], verbose=0)
    else:
        reporter.status, reporter.reason = "stopped", "Stopped by request before the first step."
    result = TrainResult(
        status=reporter.status, reason=reporter.reason or f"Trained {config.epochs} epoch{'s' if config.epochs != 1 else ''}.",
        history=reporter.history, steps_done=reporter.steps_done,
        images_per_second=reporter.images_seen / reporter.train_seconds if reporter.train_seconds else 0.0,
        wall_seconds=time.perf_counter() - started,
    )
    on_event({"event": "end", "status": result.status, "reason": result.reason})
    return result


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
        "predicted": predicted,
    }


def train_new_model(train: Arrays, test: Arrays, class_names: list[str], config: TrainConfig,
                    on_event: Optional[OnEvent] = None, stop: Optional[threading.Event] = None
                    ) -> tuple["keras.Model", TrainResult]:
    """Build the seed ConvNet for these classes and train it as the config says."""
    keras_module().utils.set_random_seed(config.seed)
    model = build_model(len(class_names), config.conv_dropout, config.dense_dropout)
    validation = test if config.validation == "test" else None
    return model, fit(model, train, config, validation, on_event, stop)
