"""The fast training path: the seed ConvNet's step as one compiled TensorFlow function, the same math, faster.

Training has two paths with one interface (`inputs(groups, seed, epoch)` adds what a path's
`run(images, labels, ...) -> (loss_sum, correct)` takes for a group of steps besides the
batches), and cifar/train.py streams the same events from either:

- the plain path (cifar/plain_steps.py, `PlainSteps`): Keras's own layers, loss and optimizer
  over `model(x, training=True)`. It trains any model and is the reference;
- the fast path (here, `TrainSteps`): only for a model that provably is the seed's
  (`seed_convnet_difference` compares every layer's config with `cifar.model.build_model`'s).

`model.fit` computes the recipe's step from general parts; this module computes the very same
function (the same layers and weights, float32 throughout, the same dropout distributions,
the same loss, and SGD or Adam with Keras's update rules) with fewer passes over memory
(bench/README.md has what each change bought):

1. Dropout masks come from numpy (`keep_mask`, `TrainSteps.inputs`), drawn in a background
   thread with the next group's images (cifar/train.py `prefetched`), instead of TensorFlow's Philox generator inside the step.
2. The pixels' 1/255 and conv dropout's 1 / (1 - rate), positive factors that pass through the
   convolution, relu and max-pooling, scale the 896 numbers of the conv kernel and bias instead
   of the images and the pooled outputs; the conv layer's relu and dropout gradients are one
   ReluGrad on the pooled tensor, a quarter of the size (`_conv_dropout_pool`).
3. The Dense(8192->512) input gradient is computed as (W g^T)^T, the faster form of the same
   product, and before the kernel gradient, which then runs beside the conv layer's backward pass.
4. Optimizer updates are TensorFlow's fused kernels (ResourceApplyGradientDescent,
   ResourceApplyAdam): one pass over the 16 MB dense kernel where Keras's update makes several.
5. A whole group of steps runs in one call (`IMAGES_PER_CALL`), like Keras's
   steps_per_execution; with SGD, each step's dense kernel update runs at the start of the next
   step, beside its conv layer (`_steps`).

tests/test_steps.py checks, step against step, that this computes what Keras's compiled
recipe computes, and that the gradients through dropout are those of Keras's layers;
tests/test_plain_path.py that it trains the seed ConvNet to the plain path's weights and events.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Optional

import numpy as np

from cifar.backend import keras_module, tensorflow_module
from cifar.config import SEED_NETWORK, TrainConfig
from cifar.model import build_model

if TYPE_CHECKING:
    import keras

# Images per compiled call: 16 steps at batch size 32, 4 at 128. Fewer round trips into Python,
# while a call still ends well within the second a stop request may take.
IMAGES_PER_CALL = 512

MASK_CHUNK = 1 << 18  # random bytes per draw: 256 KB, which stays in a core's cache

# Keras's Adam defaults, which the app's Adam is.
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7


def steps_per_call(batch_size: int) -> int:
    return max(1, IMAGES_PER_CALL // batch_size)


def keep_mask(bits: np.random.BitGenerator, shape: tuple[int, ...], rate: float) -> np.ndarray:
    """Booleans that are True independently with probability 1 - rate: which units dropout keeps.

    Each element takes one random byte: below floor(256 rate) it is dropped, above it kept;
    the one byte value in between (1 in 256) is settled by 32 more random bits. The drop
    probability is rate to within 2^-40, finer than Keras's own float32 draws (2^-23).
    Drawn a cache-sized chunk at a time, which is twice as fast as one pass over a big mask.
    """
    size = math.prod(shape)
    keep = np.ones(size, dtype=bool)
    if rate == 0:
        return keep.reshape(shape)
    scaled = rate * 256
    whole = int(scaled)
    tie_threshold = round((scaled - whole) * 2**32)
    for start in range(0, size, MASK_CHUNK):
        stop = min(size, start + MASK_CHUNK)
        first = bits.random_raw((stop - start + 7) // 8).view(np.uint8)[: stop - start]
        np.greater(first, whole, out=keep[start:stop])
        ties = np.flatnonzero(first == whole)
        if ties.size:
            keep[start + ties] = (bits.random_raw(ties.size) >> np.uint64(32)) >= tie_threshold
    return keep.reshape(shape)


# What a layer's config may differ in without changing the step: names, the initial weights'
# initializers (the step starts from whatever weights the model has) and dropout's seed (the
# fast path draws its own masks from the run's seed).
IRRELEVANT_TO_THE_STEP = ("name", "kernel_initializer", "bias_initializer", "seed")


def seed_convnet_difference(model: "keras.Model") -> Optional[str]:
    """None if the model is, layer for layer, what `cifar.model.build_model` makes with the default
    network settings (with the model's own class count and dropout rates), so TrainSteps computes its training step; otherwise the
    first difference found, in words. Every config value that changes the step counts:
    activations, padding, dilation, the Rescaling offset, regularisers, constraints, dtypes."""
    keras = keras_module()
    if type(model) is not keras.Sequential:  # a subclass or functional model may call its layers otherwise
        return f"the model is a {type(model).__name__}, not a keras.Sequential"
    rates = [layer.rate for layer in model.layers if type(layer) is keras.layers.Dropout]
    try:
        num_classes = model.output_shape[-1]
        inputs = (tuple(model.input_shape), model.inputs[0].dtype)
    except (AttributeError, ValueError):
        return "the model has no defined input"
    if len(rates) != 2 or not isinstance(num_classes, int):
        return f"the model has layers {[layer.name for layer in model.layers]}"
    expected_inputs, expected_layers = _seed_convnet_layers(num_classes, *rates)
    if inputs != expected_inputs:
        return f"its input is {inputs}, not {expected_inputs}"
    if [type(layer) for layer in model.layers] != [kind for kind, _ in expected_layers]:
        return f"its layers are {[type(layer).__name__ for layer in model.layers]}"
    for layer, (_, expected) in zip(model.layers, expected_layers):
        config = _step_config(layer)
        if config != expected:
            different = sorted(key for key in config.keys() | expected.keys() if config.get(key) != expected.get(key))
            return f"its layer {layer.name!r} differs in {', '.join(different)}"
    if model.losses:
        return "the model adds losses of its own"
    return None


@functools.lru_cache(maxsize=8)
def _seed_convnet_layers(num_classes: int, conv_dropout: float, dense_dropout: float) -> tuple[tuple, list]:
    """The default network's input (shape, dtype) and its layers' (class, config): kept, because building
    the reference's four million weights takes a noticeable fraction of a second."""
    reference = build_model(num_classes, conv_dropout, dense_dropout, **SEED_NETWORK)
    return ((tuple(reference.input_shape), reference.inputs[0].dtype),
            [(type(layer), _step_config(layer)) for layer in reference.layers])


def _step_config(layer: "keras.layers.Layer") -> dict:
    return {key: value for key, value in layer.get_config().items() if key not in IRRELEVANT_TO_THE_STEP}


class TrainSteps:
    """Groups of training steps of a model made by `cifar.model.build_model`, updating it in place:
    the fast path, for that model only (`seed_convnet_difference`).

    `run(images, labels, *masks)` takes k batches stacked on a first axis (uint8 images
    (k, b, *input shape), labels (k, b), and one keep mask per non-zero dropout from
    `mask_shapes`) and returns the summed loss (each step's mean loss times its batch size)
    and the number of correct predictions.
    """

    def __init__(self, model: "keras.Model", config: TrainConfig, steps_per_epoch: int) -> None:
        tf, keras = tensorflow_module(), keras_module()
        difference = seed_convnet_difference(model)
        if difference is not None:
            raise ValueError(f"TrainSteps computes the seed ConvNet of cifar.model.build_model only, and {difference}; "
                             "train it with cifar.plain_steps.PlainSteps")
        self.tf = tf
        self.config = config
        # By position, not name: seed_convnet_difference has checked every layer but their names.
        scale_to_unit, self.conv, conv_dropout, _, flatten, self.dense, dense_dropout, self.output = model.layers
        self.scale = float(scale_to_unit.get_config()["scale"])
        self.variables = [variable.value for variable in model.trainable_variables]  # the tf.Variables themselves
        self.rates = {"conv_dropout": float(conv_dropout.rate), "dense_dropout": float(dense_dropout.rate)}
        self.mask_shapes = {
            name: tuple(layer.output.shape[1:])
            for name, layer in (("conv_dropout", self.conv), ("dense_dropout", self.dense))
            if self.rates[name] > 0
        }
        self.flat_size = math.prod(flatten.output.shape[1:])
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.learning_rate = (
            keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch))
            if config.schedule == "cosine" else None
        )
        self.moments = [
            (tf.Variable(tf.zeros_like(variable), trainable=False), tf.Variable(tf.zeros_like(variable), trainable=False))
            for variable in self.variables
        ] if config.optimizer == "adam" else []
        images_shape = tuple(model.input_shape[1:])
        signature = [tf.TensorSpec((None, None, *images_shape), tf.uint8), tf.TensorSpec((None, None), tf.int32)]
        signature += [tf.TensorSpec((None, None, *shape), tf.bool) for shape in self.mask_shapes.values()]
        # One trace for every group size; without AutoGraph (the loop is an explicit while_loop) the
        # trace takes 0.12 s instead of 0.33 s, paid once per run.
        self._run = tf.function(self._steps, input_signature=signature, autograph=False)

    def inputs(self, groups: Iterable[tuple[np.ndarray, np.ndarray]], seed: int,
               epoch: int) -> Iterator[tuple[np.ndarray, ...]]:
        """What `run` takes for each group of batches: its images and labels, then a keep mask
        (k, b, *shape) for each of `mask_shapes`, drawn from the run's seed and the epoch."""
        bits = np.random.SFC64([seed, epoch])  # a fast generator for the masks' millions of draws
        for images, labels in groups:
            yield (images, labels, *(keep_mask(bits, (*labels.shape, *shape), self.rates[name])
                                     for name, shape in self.mask_shapes.items()))

    def run(self, images: np.ndarray, labels: np.ndarray, *masks: np.ndarray) -> tuple[float, float]:
        loss_sum, correct = self._run(images, labels.astype(np.int32, copy=False), *masks)
        return float(loss_sum), float(correct)

    def _steps(self, images, labels, *masks):
        tf = self.tf
        batch_size = tf.cast(tf.shape(labels)[1], tf.float32)
        kernel = self.dense.kernel.value
        # With SGD, each step's update of the dense kernel is applied at the start of the next step,
        # where it runs beside that step's conv layer (which does not need it) instead of last: fit()
        # on 10,000 images ran at 4,070-4,285 images/s against 3,811-3,946 (with the pooled gradient
        # of _conv_dropout_pool). Adam's bigger update slowed that conv layer more than it gained
        # (18.5-19.0 ms a step against 18.0-18.7 at batch 64), so Adam updates in place.
        deferred = self.config.optimizer == "sgd"

        def one_step(index, loss_sum, correct, *pending):
            if deferred:
                tf.cond(index > 0, lambda: self._update(kernel, *pending), tf.no_op)
            step_loss, step_correct, kernel_update = self._step(images[index], labels[index],
                                                                [mask[index] for mask in masks], deferred)
            return (index + 1, loss_sum + step_loss * batch_size, correct + step_correct, *kernel_update)

        start = (tf.constant(0), tf.constant(0.0), tf.constant(0.0))
        pending = (tf.zeros_like(kernel), *self._scalars()) if deferred else ()
        _, loss_sum, correct, *last = tf.while_loop(lambda index, *rest: index < tf.shape(images)[0], one_step,
                                                    (*start, *pending))
        if deferred:  # the last step's kernel update, so the model is whole between calls
            with tf.control_dependencies([self._update(kernel, *last)]):
                return tf.identity(loss_sum), tf.identity(correct)
        return loss_sum, correct

    def _step(self, images, labels, masks, defer_kernel: bool):
        """One training step. Returns its loss and correct count, and, if defer_kernel, the dense
        kernel's gradient and update scalars for the caller to apply before the kernel is next read."""
        tf = self.tf
        with tf.GradientTape() as tape:
            logits = self._logits(images, dict(zip(self.mask_shapes, masks)))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        gradients = tape.gradient(loss, self.variables)
        scalars = self._scalars()
        kernel_update = ()
        for variable, gradient in zip(self.variables, gradients):
            if defer_kernel and variable is self.dense.kernel.value:
                kernel_update = (gradient, *scalars)
            else:
                self._update(variable, gradient, *scalars)
        self.iterations.assign_add(1)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels), tf.float32))
        return loss, correct, kernel_update

    def _logits(self, images, masks):
        """The model's forward pass in training mode, layer by layer, with the given dropout masks."""
        tf = self.tf
        pixels = tf.cast(images, tf.float32)
        kernel, bias = (tf.convert_to_tensor(variable.value) for variable in (self.conv.kernel, self.conv.bias))
        # Both scalings are positive factors, which pass through the convolution, relu and max-pooling:
        # relu(conv(pixels * scale, K) + b) * d == relu(conv(pixels, K * scale * d) + b * d), with d
        # dropout's 1 / (1 - rate). Applied to the 896 numbers of the kernel and bias instead of the
        # images and the pooled outputs, they take two ops off every step's critical path.
        dropout_scale = 1.0 / (1.0 - self.rates["conv_dropout"]) if "conv_dropout" in masks else 1.0
        kernel, bias = kernel * (self.scale * dropout_scale), bias * dropout_scale
        hidden = self._conv_dropout_pool(pixels, kernel, bias, masks.get("conv_dropout"))
        hidden = tf.reshape(hidden, [-1, self.flat_size])
        hidden = tf.nn.relu(tf.nn.bias_add(self._dense_matmul(hidden, tf.convert_to_tensor(self.dense.kernel.value)), self.dense.bias.value))
        if "dense_dropout" in masks:  # Keras's inverted dropout: kept units times 1 / (1 - rate), dropped ones zero
            hidden = hidden * (tf.cast(masks["dense_dropout"], tf.float32) * (1.0 / (1.0 - self.rates["dense_dropout"])))
        return tf.nn.bias_add(tf.matmul(hidden, self.output.kernel.value), self.output.bias.value)

    def _conv_dropout_pool(self, pixels, kernel, bias, keep):
        """max_pool(relu(conv(pixels) + bias) * keep), with a gradient that makes no relu or
        dropout pass over the conv layer's output.

        Max-pooling's gradient goes to each window's largest unit. Where the pooled value is
        positive, that unit was kept and passed by relu, so its own relu and dropout gradients
        are 1; where it is 0, they are 0 for whichever unit gets it. So one ReluGrad on the
        pooled tensor, a quarter of the size, stands for both (TensorFlow's own gradient would
        multiply by the mask and apply ReluGrad at full size). The pixels need no gradient.
        """
        tf = self.tf

        @tf.custom_gradient
        def conv_dropout_pool(kernel, bias):
            kept = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(pixels, kernel, 1, "SAME"), bias))
            if keep is not None:
                kept = kept * tf.cast(keep, tf.float32)
            pooled = tf.nn.max_pool2d(kept, 2, 2, "VALID")

            def gradient(upstream):
                at_conv = tf.raw_ops.MaxPoolGrad(orig_input=kept, orig_output=pooled,
                                                 grad=tf.raw_ops.ReluGrad(gradients=upstream, features=pooled),
                                                 ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="VALID")
                kernel_gradient = tf.raw_ops.Conv2DBackpropFilter(
                    input=pixels, filter_sizes=tf.shape(kernel), out_backprop=at_conv, strides=[1, 1, 1, 1],
                    padding="SAME")
                return kernel_gradient, tf.raw_ops.BiasAddGrad(out_backprop=at_conv)

            return pooled, gradient

        return conv_dropout_pool(kernel, bias)

    def _dense_matmul(self, inputs, kernel):
        """inputs @ kernel, with the input gradient computed in the faster of two equal forms."""
        tf = self.tf

        @tf.custom_gradient
        def matmul(inputs, kernel):
            def gradient(upstream):
                inputs_gradient = tf.transpose(tf.matmul(kernel, upstream, transpose_b=True))
                with tf.control_dependencies([inputs_gradient]):  # first what the conv layer waits for
                    kernel_gradient = tf.matmul(inputs, upstream, transpose_a=True)
                return inputs_gradient, kernel_gradient

            return tf.matmul(inputs, kernel), gradient

        return matmul(inputs, kernel)

    def _scalars(self):
        """This step's learning rate, and for Adam beta_1 and beta_2 to the power of the step number."""
        tf = self.tf
        step = self.iterations
        learning_rate = (tf.cast(self.learning_rate(step), tf.float32) if self.learning_rate is not None
                         else tf.constant(self.config.learning_rate, tf.float32))
        if self.config.optimizer != "adam":
            return (learning_rate,)
        power = tf.cast(step + 1, tf.float32)
        return learning_rate, tf.pow(ADAM_BETA_1, power), tf.pow(ADAM_BETA_2, power)

    def _update(self, variable, gradient, *scalars):
        """The optimizer's update of one variable, by TensorFlow's fused kernel for it."""
        tf = self.tf
        if self.config.optimizer == "adam":
            # Keras's Adam, fused: the same moments, bias correction and epsilon outside the root.
            learning_rate, beta_1_power, beta_2_power = scalars
            m, v = self.moments[next(i for i, known in enumerate(self.variables) if known is variable)]
            return tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power, beta2_power=beta_2_power,
                lr=learning_rate, beta1=tf.constant(ADAM_BETA_1), beta2=tf.constant(ADAM_BETA_2),
                epsilon=tf.constant(ADAM_EPSILON), grad=gradient)
        return tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=scalars[0], delta=gradient)
