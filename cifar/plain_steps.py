"""The plain training path: Keras's own train step over `model(x, training=True)`, for any model.

It is what `model.fit` does for one batch (Keras's loss, the model's own added losses such as
regularisers, Keras's SGD or Adam, dropout from the model's Dropout layers), compiled with
tf.function a group of steps at a time. It is the reference the fast path of cifar/steps.py
is tested against, and the path for every model that is not provably the seed's. Its
interface is TrainSteps's, so cifar/train.py streams the same events from either.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from cifar.backend import keras_module, tensorflow_module
from cifar.config import TrainConfig

if TYPE_CHECKING:
    import keras


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """The config's learning rate as Keras's optimizers take it: a number, or the cosine decay over the
    whole run that TrainSteps also uses."""
    keras = keras_module()
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                      decay_steps=max(1, config.epochs * steps_per_epoch))
    return config.learning_rate


class PlainSteps:
    """Groups of Keras training steps of any model that takes the uint8 images and gives class
    probabilities, updating it in place.

    `run(images, labels)` takes k batches stacked on a first axis (images (k, b, *input shape),
    labels (k, b)) and returns the summed loss (each step's mean cross-entropy times its batch
    size) and the number of correct predictions. It takes no masks: dropout is the model's own.
    """

    def __init__(self, model: "keras.Model", config: TrainConfig, steps_per_epoch: int) -> None:
        tf, keras = tensorflow_module(), keras_module()
        self.tf, self.model, self.config = tf, model, config
        rate = learning_rate(config, steps_per_epoch)
        self.optimizer = keras.optimizers.Adam(rate) if config.optimizer == "adam" else keras.optimizers.SGD(rate)
        self.optimizer.build(model.trainable_variables)  # its slots exist before the step is traced
        self.loss = keras.losses.SparseCategoricalCrossentropy()
        self.input_dtype = tf.as_dtype(model.inputs[0].dtype)
        _seed_random_layers(model, config.seed)
        images_shape = tuple(model.input_shape[1:])
        signature = [tf.TensorSpec((None, None, *images_shape), tf.uint8), tf.TensorSpec((None, None), tf.int32)]
        self._run = tf.function(self._steps, input_signature=signature)

    def inputs(self, groups: Iterable[tuple[np.ndarray, np.ndarray]], seed: int,
               epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """What `run` takes for each group of batches: just its images and labels."""
        return groups

    def run(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        loss_sum, correct = self._run(images, labels.astype(np.int32, copy=False))
        return float(loss_sum), float(correct)

    def _steps(self, images, labels):
        tf = self.tf
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for index in tf.range(tf.shape(images)[0]):
            step_loss, step_correct = self._step(images[index], labels[index])
            loss_sum += step_loss * tf.cast(tf.shape(labels)[1], tf.float32)
            correct += step_correct
        return loss_sum, correct

    def _step(self, images, labels):
        """One step, as Keras's train_step makes it. Returns the cross-entropy and correct count of
        the model before the step."""
        tf, model = self.tf, self.model
        with tf.GradientTape() as tape:
            # The model prepares its own input (the seed's first layer scales pixels to [0, 1]).
            probabilities = model(tf.cast(images, self.input_dtype), training=True)
            cross_entropy = self.loss(labels, probabilities)
            # Regularisers and other added losses are trained on, as fit() does, but the loss reported
            # is the cross-entropy alone, which the validation and test losses are too.
            added = model.losses
            total = cross_entropy + tf.add_n(added) if added else cross_entropy
        gradients = tape.gradient(total, model.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return cross_entropy, tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))


def _seed_random_layers(model: "keras.Model", seed: int) -> None:
    """Start every random layer's generator (Dropout's) from the run's seed, so the same seed, config
    and initial weights give the same training, however and whenever the model was built."""
    keras = keras_module()
    states = [variable for variable in model.non_trainable_variables if variable.name == "seed_generator_state"]
    generator = np.random.default_rng([seed, 2])
    for state in states:
        state.assign(np.array([generator.integers(1, 2**30), 0], dtype=keras.backend.standardize_dtype(state.dtype)))
