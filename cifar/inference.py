"""What the pages predict with, without TensorFlow in the web server.

A web process that imports Keras to predict holds about 650 MB; the training worker already
holds TensorFlow, and a hosted app has 2.7 GB for everything. So when the worker saves a run it
also writes, beside `model.keras`:

- `model.tflite`: the same network exported to LiteRT, with two outputs (the class
  probabilities and the first conv layer's activations, for "Inside the network");
- `conv_kernel.npy`: the first conv layer's filters, to draw them;
- `test_probabilities.npy`: every test image's probabilities, so the gallery predicts nothing.

`LiteModel` runs the LiteRT file with `ai-edge-litert`'s interpreter (about 75 MB). `KerasModel`
is the plain path beside it: the `.keras` file through Keras, the reference the LiteRT copy is
tested against, and the fallback where `ai-edge-litert` does not install (it has no Windows
wheels) or a run has no LiteRT copy yet.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol

import numpy as np

if TYPE_CHECKING:
    import keras

LITE_FILE = "model.tflite"
KERNEL_FILE = "conv_kernel.npy"
TEST_PROBABILITIES_FILE = "test_probabilities.npy"
FAILED_MARK = "page-files-failed"  # the worker could not convert this run; it does not try again
CHUNK = 256  # images per interpreter call
log = logging.getLogger(__name__)


class PageModel(Protocol):
    """A trained model as the pages use it."""

    num_classes: int
    input_shape: tuple[int, ...]  # one picture's (height, width, channels)

    def probabilities(self, images: np.ndarray) -> np.ndarray: ...
    def conv_activations(self, image: np.ndarray) -> np.ndarray: ...
    def conv_kernel(self) -> np.ndarray: ...


def _as_batch(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Images (or one image) as a uint8 batch of the model's input shape."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim == len(shape):
        images = images[None]
    if images.shape[1:] != shape:
        raise ValueError(f"expected images of shape (N, {', '.join(map(str, shape))}), got {images.shape}")
    return images


def _conv_layer(model: "keras.Model") -> Any:
    """The first conv layer: the one that looks at the pixels, whose filters can be drawn as pictures."""
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    if not convs:
        raise ValueError("this model has no convolution layer to look inside")
    return convs[0]


def _two_outputs(model: "keras.Model") -> "keras.Model":
    from cifar.backend import keras_module

    keras = keras_module()
    return keras.Model(model.inputs, [model.outputs[0], _conv_layer(model).output], name="for_pages")


class KerasModel:
    """The plain path: Keras itself."""

    def __init__(self, model: "keras.Model") -> None:
        self.model = model
        self.num_classes = int(model.output_shape[-1])
        self.input_shape = tuple(model.input_shape[1:])
        self._both = _two_outputs(model)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        from cifar.predict import predict_probabilities

        return predict_probabilities(self.model, _as_batch(images, self.input_shape))

    def conv_activations(self, image: np.ndarray) -> np.ndarray:
        from cifar.backend import keras_module

        outputs = self._both([_as_batch(image, self.input_shape)[:1]], training=False)  # a list, as the model's inputs are
        return keras_module().ops.convert_to_numpy(outputs[1])[0]

    def conv_kernel(self) -> np.ndarray:
        from cifar.backend import keras_module

        return keras_module().ops.convert_to_numpy(_conv_layer(self.model).kernel)


class LiteModel:
    """The fast path: the LiteRT copy, in a process that never imports TensorFlow."""

    def __init__(self, folder: str | Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        folder = Path(folder)
        self._interpreter = Interpreter(model_path=str(folder / LITE_FILE))
        self._kernel = np.load(folder / KERNEL_FILE)
        given = self._interpreter.get_input_details()[0]
        self._input, self.input_shape = given["index"], tuple(int(size) for size in given["shape"][1:])
        self._input_dtype = given["dtype"]  # uint8 for ours; an uploaded model may take floats
        outputs = self._interpreter.get_output_details()
        # Named by the exporter, not by us: the probabilities are the 2-D output, the activations the 4-D one.
        self._probabilities = next(o["index"] for o in outputs if len(o["shape"]) == 2)
        self._activations = next(o["index"] for o in outputs if len(o["shape"]) == 4)
        self.num_classes = int(next(o["shape"][-1] for o in outputs if len(o["shape"]) == 2))
        self._size = 0
        self._lock = threading.Lock()  # one interpreter, many page threads

    def _run(self, batch: np.ndarray) -> None:
        if len(batch) != self._size:
            self._interpreter.resize_tensor_input(self._input, batch.shape)
            self._interpreter.allocate_tensors()
            self._size = len(batch)
        self._interpreter.set_tensor(self._input, batch.astype(self._input_dtype, copy=False))
        self._interpreter.invoke()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        images = _as_batch(images, self.input_shape)
        result = np.zeros((len(images), self.num_classes), np.float32)
        with self._lock:
            for start in range(0, len(images), CHUNK):
                self._run(images[start : start + CHUNK])
                result[start : start + CHUNK] = self._interpreter.get_tensor(self._probabilities)
        return result

    def conv_activations(self, image: np.ndarray) -> np.ndarray:
        with self._lock:
            self._run(_as_batch(image, self.input_shape)[:1])
            return self._interpreter.get_tensor(self._activations)[0].copy()

    def conv_kernel(self) -> np.ndarray:
        return self._kernel


def lite_runtime_available() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def save_page_files(model: "keras.Model", folder: str | Path, test_probabilities: Optional[np.ndarray] = None) -> None:
    """Write the LiteRT copy, the conv kernel and (if given) the test set's probabilities into a run's folder."""
    from cifar.backend import keras_module

    folder = Path(folder)
    keras = keras_module()
    if test_probabilities is not None:
        _save_array(folder / TEST_PROBABILITIES_FILE, np.asarray(test_probabilities, np.float16))
    _save_array(folder / KERNEL_FILE, keras.ops.convert_to_numpy(_conv_layer(model).kernel))
    partial = folder / (LITE_FILE + ".partial.tflite")
    _two_outputs(model).export(str(partial), format="litert", verbose=False)
    partial.replace(folder / LITE_FILE)


def test_set_probabilities(folder: str | Path, model: PageModel, x_test: np.ndarray) -> np.ndarray:
    """Every test image's probabilities: as the worker saved them with the run, else computed now."""
    saved = Path(folder) / TEST_PROBABILITIES_FILE
    if saved.is_file():
        return np.load(saved).astype(np.float32)
    return model.probabilities(x_test)


def _save_array(path: Path, array: np.ndarray) -> None:
    partial = path.with_name(path.name + ".partial.npy")
    np.save(partial, array)
    partial.replace(path)


def needs_page_files(folder: str | Path) -> bool:
    folder = Path(folder)
    from cifar.store import MODEL_FILE

    return (folder / MODEL_FILE).is_file() and not (folder / LITE_FILE).is_file() and not (folder / FAILED_MARK).exists()


def page_files_ready(folder: str | Path) -> bool:
    """Whether open_page_model can give a model now: the LiteRT copy is written, its conversion
    failed (Keras stands in), or there is no LiteRT runtime here at all."""
    folder = Path(folder)
    return not lite_runtime_available() or (folder / LITE_FILE).is_file() or (folder / FAILED_MARK).exists()


def open_page_model(folder: str | Path) -> Optional[PageModel]:
    """The run's model for the pages: its LiteRT copy where the runtime exists, else Keras (the plain
    path, which loads TensorFlow into this process). None while the worker has yet to write the copy."""
    folder = Path(folder)
    if lite_runtime_available():
        if (folder / LITE_FILE).is_file():
            return LiteModel(folder)
        if not (folder / FAILED_MARK).exists():
            return None
    from cifar.store import load_model

    log.info("predicting with Keras in the web process for %s", folder.name)
    return KerasModel(load_model(folder)[0])
