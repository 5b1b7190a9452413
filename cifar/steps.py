"""The training step of the seed ConvNet as one compiled TensorFlow function: the same math, faster.

`model.fit` computes the recipe's step from general parts; this module computes the very same
function (the same layers and weights, float32 throughout, the same dropout distributions,
the same loss, and SGD or Adam with Keras's update rules) with fewer passes over memory.
Measured on a 2-core Xeon at batch size 32, where a step of `model.fit` takes about 16 ms and
this one about 8 ms:

1. Dropout masks come from numpy (`keep_mask`), drawn in a background thread with the next
   group's images (cifar/train.py), instead of TensorFlow's Philox generator inside the step.
   Philox costs about 1.6 ms per step for the conv layer's million draws, plus 0.9 ms for its
   select ops; one random byte per unit (rarely more) costs about 0.5 ms, off the step's path.
2. The conv layer's relu and dropout share one gradient op (`_conv_relu_kept`): one pass fewer
   over the conv output. The pixels' 1/255 and dropout's 1 / (1 - rate), positive factors that
   pass through the convolution, relu and max-pooling, scale the 896 numbers of the conv kernel
   and bias instead of the images and the pooled outputs: two ops fewer on every step's path
   (fit() on 10,000 images: 3,338-3,720 images/s, mean 3,600, against 3,364-3,506, mean 3,449,
   in four alternating pairs).
3. The Dense(8192->512) input gradient is computed as (W g^T)^T: TensorFlow's matmul with a
   transposed second operand took 1.45 ms against 0.9 ms for this form of the same product.
   And it is computed before the kernel gradient, not beside it: the input gradient is on the
   way back to the conv layer, the kernel gradient and its update are not, so the kernel
   gradient then runs beside the conv layer's backward pass instead of slowing the input
   gradient down (a step took 7.7-8.4 ms instead of 9.0).
4. Optimizer updates are TensorFlow's fused kernels (ResourceApplyGradientDescent,
   ResourceApplyAdam): one pass over the 16 MB dense kernel where Keras's update makes
   several (about 0.3 ms a step for SGD, several ms for Adam).
5. A whole group of steps runs in one call (`IMAGES_PER_CALL`), like Keras's
   steps_per_execution, so Python is visited every half-second at most.

tests/test_steps.py checks, step against step, that this computes what Keras's compiled
recipe computes, and that the gradients through dropout are those of Keras's layers.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from cifar.backend import keras_module, tensorflow_module
from cifar.config import TrainConfig

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


class TrainSteps:
    """Groups of training steps of a model made by `cifar.model.build_model`, updating it in place.

    `run(images, labels, *masks)` takes k batches stacked on a first axis (uint8 images
    (k, b, 32, 32, 3), labels (k, b), and one keep mask per non-zero dropout from
    `mask_shapes`) and returns the summed loss (each step's mean loss times its batch size)
    and the number of correct predictions.
    """

    def __init__(self, model: "keras.Model", config: TrainConfig, steps_per_epoch: int) -> None:
        tf, keras = tensorflow_module(), keras_module()
        self._check_architecture(model)
        self.tf = tf
        self.config = config
        self.scale = float(model.get_layer("scale_to_unit").get_config()["scale"])
        self.conv, self.dense, self.output = (model.get_layer(name) for name in ("conv", "dense", "class_probabilities"))
        self.variables = [variable.value for variable in model.trainable_variables]  # the tf.Variables themselves
        self.rates = {name: float(model.get_layer(name).rate) for name in ("conv_dropout", "dense_dropout")}
        self.mask_shapes = {
            name: tuple(layer.output.shape[1:])
            for name, layer in (("conv_dropout", self.conv), ("dense_dropout", self.dense))
            if self.rates[name] > 0
        }
        self.flat_size = math.prod(model.get_layer("flatten").output.shape[1:])
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

    @staticmethod
    def _check_architecture(model: "keras.Model") -> None:
        names = [layer.name for layer in model.layers]
        expected = ["scale_to_unit", "conv", "conv_dropout", "pool", "flatten", "dense", "dense_dropout", "class_probabilities"]
        problem = f"TrainSteps computes the seed ConvNet of cifar.model.build_model, not layers {names}"
        if names != expected:
            raise ValueError(problem)
        conv, pool = model.get_layer("conv").get_config(), model.get_layer("pool").get_config()
        if (conv["strides"] != (1, 1) or conv["padding"] != "same" or conv["activation"] != "relu"
                or tuple(pool["pool_size"]) != (2, 2) or tuple(pool["strides"]) != (2, 2) or pool["padding"] != "valid"):
            raise ValueError(problem)

    def run(self, images: np.ndarray, labels: np.ndarray, *masks: np.ndarray) -> tuple[float, float]:
        loss_sum, correct = self._run(images, labels.astype(np.int32, copy=False), *masks)
        return float(loss_sum), float(correct)

    def _steps(self, images, labels, *masks):
        tf = self.tf
        batch_size = tf.cast(tf.shape(labels)[1], tf.float32)

        def one_step(index, loss_sum, correct):
            step_loss, step_correct = self._step(images[index], labels[index], [mask[index] for mask in masks])
            return index + 1, loss_sum + step_loss * batch_size, correct + step_correct

        _, loss_sum, correct = tf.while_loop(lambda index, *sums: index < tf.shape(images)[0], one_step,
                                             (tf.constant(0), tf.constant(0.0), tf.constant(0.0)))
        return loss_sum, correct

    def _step(self, images, labels, masks):
        tf = self.tf
        with tf.GradientTape() as tape:
            logits = self._logits(images, dict(zip(self.mask_shapes, masks)))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        self._apply(tape.gradient(loss, self.variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels), tf.float32))
        return loss, correct

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
        if "conv_dropout" in masks:
            hidden = tf.nn.max_pool2d(self._conv_relu_kept(pixels, kernel, bias, masks["conv_dropout"]), 2, 2, "VALID")
        else:
            hidden = tf.nn.max_pool2d(tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(pixels, kernel, 1, "SAME"), bias)), 2, 2, "VALID")
        hidden = tf.reshape(hidden, [-1, self.flat_size])
        hidden = tf.nn.relu(tf.nn.bias_add(self._dense_matmul(hidden, tf.convert_to_tensor(self.dense.kernel.value)), self.dense.bias.value))
        if "dense_dropout" in masks:  # Keras's inverted dropout: kept units times 1 / (1 - rate), dropped ones zero
            hidden = hidden * (tf.cast(masks["dense_dropout"], tf.float32) * (1.0 / (1.0 - self.rates["dense_dropout"])))
        return tf.nn.bias_add(tf.matmul(hidden, self.output.kernel.value), self.output.bias.value)

    def _conv_relu_kept(self, inputs, kernel, bias, keep):
        """relu(conv(inputs) + bias) with the dropped units zeroed, and its gradient in one pass fewer.

        A unit of the result is positive exactly when relu passed it and dropout kept it, so one
        ReluGrad on the result gives the gradient through both (TensorFlow's own gradient would
        multiply by the mask, then apply ReluGrad). The pixels need no gradient.
        """
        tf = self.tf

        @tf.custom_gradient
        def conv_relu_kept(kernel, bias):
            kept = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(inputs, kernel, 1, "SAME"), bias)) * tf.cast(keep, tf.float32)

            def gradient(upstream):
                before_relu = tf.raw_ops.ReluGrad(gradients=upstream, features=kept)
                kernel_gradient = tf.raw_ops.Conv2DBackpropFilter(
                    input=inputs, filter_sizes=tf.shape(kernel), out_backprop=before_relu, strides=[1, 1, 1, 1],
                    padding="SAME")
                return kernel_gradient, tf.raw_ops.BiasAddGrad(out_backprop=before_relu)

            return kept, gradient

        return conv_relu_kept(kernel, bias)

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

    def _apply(self, gradients) -> None:
        tf = self.tf
        step = self.iterations
        learning_rate = (tf.cast(self.learning_rate(step), tf.float32) if self.learning_rate is not None
                         else tf.constant(self.config.learning_rate, tf.float32))
        if self.config.optimizer == "adam":
            # Keras's Adam, fused: the same moments, bias correction and epsilon outside the root.
            power = tf.cast(step + 1, tf.float32)
            beta_1_power, beta_2_power = tf.pow(ADAM_BETA_1, power), tf.pow(ADAM_BETA_2, power)
            for variable, (m, v), gradient in zip(self.variables, self.moments, gradients):
                tf.raw_ops.ResourceApplyAdam(
                    var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power, beta2_power=beta_2_power,
                    lr=learning_rate, beta1=tf.constant(ADAM_BETA_1), beta2=tf.constant(ADAM_BETA_2),
                    epsilon=tf.constant(ADAM_EPSILON), grad=gradient)
        else:
            for variable, gradient in zip(self.variables, gradients):
                tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=learning_rate, delta=gradient)
        step.assign_add(1)

