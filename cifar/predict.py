"""Class probabilities for images the model has never seen, and the top-k helper."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cifar.backend import keras_module

if TYPE_CHECKING:
    import keras


def predict_probabilities(model: "keras.Model", images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """(N, 32, 32, 3) uint8 pixels (or one such image) to (N, num_classes) probabilities."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"expected images of shape (N, 32, 32, 3), got {images.shape}")
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    # Direct calls avoid predict()'s per-call dataset set-up, which dominates for the handful
    # of pictures a user uploads.
    to_numpy = keras_module().ops.convert_to_numpy
    chunks = [to_numpy(model(images[i : i + batch_size], training=False)) for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks)


def top_k(probabilities: np.ndarray, class_names: list[str], k: int = 3) -> list[list[tuple[str, float]]]:
    """For each row, the k most likely classes with their probabilities, most likely first."""
    probabilities = np.atleast_2d(probabilities)
    k = min(k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[(class_names[i], float(row[i])) for i in picks] for row, picks in zip(probabilities, order)]
