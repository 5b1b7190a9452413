"""Class probabilities for images the model has never seen, and which test images to show: a random
pick for the gallery, or one cell of the confusion matrix."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    import keras


def predict_probabilities(model: "keras.Model", images: np.ndarray, batch_size: int = 128,
                          stop: Optional[threading.Event] = None) -> Optional[np.ndarray]:
    """(N, *the model's input shape) uint8 pixels (or one such image) to (N, num_classes) probabilities.

    A chunk at a time straight from numpy: no tensor copy of a whole dataset, and a stop
    request (if given) is honoured between chunks, returning None.
    """
    images = np.asarray(images, dtype=np.uint8)
    expected = tuple(model.input_shape[1:])
    if images.ndim == len(expected):
        images = images[None]
    if images.shape[1:] != expected:
        raise ValueError(f"expected images of shape (N, {', '.join(map(str, expected))}), got {images.shape}")
    probabilities = np.zeros((len(images), model.output_shape[-1]), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        if stop is not None and stop.is_set():
            return None
        # predict_on_batch runs Keras's compiled predict function; model.predict would first
        # build a dataset, which dominates for the few pictures a user uploads.
        probabilities[start : start + batch_size] = model.predict_on_batch(images[start : start + batch_size])
    return probabilities


def pick_test_images(labels: np.ndarray, predicted: np.ndarray, class_index: Optional[int] = None,
                     mistakes_only: bool = False, count: int = 24, seed: int = 0) -> tuple[int, np.ndarray]:
    """Up to `count` random test-image indices among those matching: of one true class (or any),
    and only the ones the model got wrong (or all); and how many match in all."""
    keep = np.ones(len(labels), bool)
    if class_index is not None:
        keep &= labels == class_index
    if mistakes_only:
        keep &= predicted != labels
    matching = np.flatnonzero(keep)
    picked = np.random.default_rng(seed).choice(matching, size=min(count, len(matching)), replace=False)
    return len(matching), picked


def cell_images(labels: np.ndarray, predicted: np.ndarray, true_index: int, predicted_index: int,
                confidence: Optional[np.ndarray] = None) -> np.ndarray:
    """The test-image indices in one cell of the confusion matrix: true class `true_index`, said to be
    `predicted_index`. In index order, or, given each image's confidence, the surest first."""
    matching = np.flatnonzero((np.asarray(labels) == true_index) & (np.asarray(predicted) == predicted_index))
    if confidence is None:
        return matching
    return matching[np.argsort(-np.asarray(confidence)[matching], kind="stable")]


def surest_in_cell(labels: np.ndarray, probabilities: np.ndarray, true_index: int, predicted_index: int) -> np.ndarray:
    """One cell's test images from every test image's probabilities, the ones the network was surest of first."""
    probabilities = np.asarray(probabilities)
    return cell_images(labels, probabilities.argmax(axis=1), true_index, predicted_index,
                       confidence=probabilities.max(axis=1))


def first_of_each_class(labels: np.ndarray, class_count: int, limit: Optional[int] = None) -> list[tuple[int, int]]:
    """(class, test-image index) of the first test image of each class that has one; with a limit and
    more classes than that, of `limit` classes spread evenly over them all."""
    labels = np.asarray(labels)
    classes = range(class_count)
    if limit is not None and class_count > limit:
        classes = sorted({int(round(c)) for c in np.linspace(0, class_count - 1, limit)})
    firsts = [(label, np.flatnonzero(labels == label)) for label in classes]
    return [(int(label), int(found[0])) for label, found in firsts if len(found)]
