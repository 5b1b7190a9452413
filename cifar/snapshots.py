"""What the network has learned so far, recorded during training: after step 0 and after every
epoch, the conv layer's filters and the class probabilities of a few watched pictures.

A run's watch-list is a list of plain items: ``{"test_index": i}`` for a test image, or
``{"name": "my cat.jpg", "pixels": base64 of its 32x32x3 uint8 pixels}`` for an upload. With
none given, `default_watch_list` picks one test image from each of 8 classes spread over all of
them. A snapshot is the event

    {"event": "snapshot", "epoch": 0 (before training) .. epochs, "filters": the conv kernel
     (3, 3, 3, filters) as rounded numbers, "watch": one row of probabilities per watched
     picture, "seconds": what taking it cost}

a few kilobytes, so every page watching a run can replay them all.
"""
from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    import keras

WATCH_COUNT = 8  # pictures on the default watch-list: one row on a projector, two on a phone
WATCH_LIMIT = 16  # at most this many, so a snapshot stays small
DIGITS = 4  # decimals kept: a filter's weights are around 0.1, a probability needs no more
Item = dict[str, Any]


def default_watch_list(labels: np.ndarray, count: int = WATCH_COUNT) -> list[Item]:
    """The first test image of each of `count` classes spread evenly over all the classes (all of
    them, round and round, when there are fewer classes than pictures)."""
    labels = np.asarray(labels)
    classes = int(labels.max()) + 1 if len(labels) else 0
    if classes == 0:
        return []
    if classes >= count:
        chosen = sorted({int(round(c)) for c in np.linspace(0, classes - 1, count)})
        return [{"test_index": int(np.flatnonzero(labels == c)[0])} for c in chosen if np.any(labels == c)]
    by_class = [np.flatnonzero(labels == c) for c in range(classes)]
    items = []
    for round_ in range(count):
        for indices in by_class:
            if round_ < len(indices) and len(items) < count:
                items.append({"test_index": int(indices[round_])})
    return items


def upload_item(name: str, pixels: np.ndarray) -> Item:
    """A user's picture (already the network's 32x32x3 input) as a watch-list item."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    return {"name": name, "pixels": base64.b64encode(pixels.tobytes()).decode("ascii"), "shape": list(pixels.shape)}


def item_pixels(item: Item, x_test: Optional[np.ndarray] = None) -> np.ndarray:
    """The picture a watch-list item names."""
    if "pixels" in item:
        return np.frombuffer(base64.b64decode(item["pixels"]), np.uint8).reshape(item["shape"])
    if x_test is None:
        raise ValueError("a test image on the watch-list needs the test images")
    return x_test[int(item["test_index"])]


def resolve_watch_list(items: Sequence[Item], x_test: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, list[Item]]:
    """The watched pictures as one batch, and the items with each test image's true class added.
    Items that name no test image of this dataset, or a picture of another shape, are left out."""
    resolved, pictures = [], []
    for item in list(items)[:WATCH_LIMIT]:
        try:
            if "pixels" not in item and not 0 <= int(item["test_index"]) < len(x_test):
                continue
            pixels = item_pixels(item, x_test)
        except (KeyError, TypeError, ValueError):
            continue
        if pixels.shape != x_test.shape[1:]:
            continue
        entry = dict(item)
        if "test_index" in item and "pixels" not in item:
            entry["label"] = int(y_test[int(item["test_index"])])
        resolved.append(entry)
        pictures.append(pixels)
    images = np.stack(pictures) if pictures else np.zeros((0, *x_test.shape[1:]), np.uint8)
    return images, resolved


def first_conv_kernel(model: "keras.Model") -> np.ndarray:
    conv = next(layer for layer in model.layers if type(layer).__name__ == "Conv2D")
    return np.asarray(conv.kernel)


def take_snapshot(model: "keras.Model", watched: Optional[np.ndarray], epoch: int) -> dict[str, Any]:
    """The snapshot event for the model as it is now."""
    started = time.perf_counter()
    kernel = first_conv_kernel(model)
    probabilities = np.zeros((0, int(model.output_shape[-1])), np.float32)
    if watched is not None and len(watched):
        probabilities = np.asarray(model.predict_on_batch(np.asarray(watched, np.uint8)))
    return {"event": "snapshot", "epoch": epoch, "filters": np.round(kernel.astype(np.float64), DIGITS).tolist(),
            "watch": np.round(probabilities.astype(np.float64), DIGITS).tolist(),
            "seconds": time.perf_counter() - started}


def watch_answer(probabilities: Sequence[float], class_names: Sequence[str], item: Item) -> tuple[str, float, Optional[str]]:
    """What the network calls one watched picture, how sure it is (0 to 1), and its true class (None
    for a user's picture, whose class nobody knows)."""
    values = np.asarray(probabilities, dtype=float)
    best = int(values.argmax())
    truth = class_names[item["label"]] if "label" in item else None
    return class_names[best], float(np.clip(values[best], 0, 1)), truth


def predictions_story(probabilities: Sequence[Sequence[float]], class_names: Sequence[str],
                      epochs: Optional[Sequence[int]] = None) -> str:
    """What one watched picture was called over the epochs, in words: "frog at epochs 0-2, cat
    from epoch 3 on". `probabilities` has one row per snapshot, in epoch order."""
    epochs = list(epochs) if epochs is not None else list(range(len(probabilities)))
    said = [class_names[int(np.argmax(row))] for row in probabilities]
    if not said:
        return ""
    spans: list[tuple[str, int, int]] = []
    for epoch, name in zip(epochs, said):
        if spans and spans[-1][0] == name:
            spans[-1] = (name, spans[-1][1], epoch)
        else:
            spans.append((name, epoch, epoch))
    words = []
    for position, (name, first, last) in enumerate(spans):
        if position == len(spans) - 1 and position > 0:
            words.append(f"{name} from epoch {first} on" if first != last else f"{name} at epoch {first}")
        elif first == last:
            words.append(f"{name} at epoch {first}")
        else:
            words.append(f"{name} at epochs {first}–{last}")
    return ", ".join(words)
