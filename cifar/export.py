"""A trained model for other runtimes: LiteRT (`.tflite`, phones and microcontrollers) and ONNX.

Both are Keras's own exporters (`model.export(path, format="litert" | "onnx")`; ONNX goes
through tf2onnx). An export is the plain classifier the `.keras` file is: one input, the same
32x32x3 pixels (uint8 for this project's models), one output, the class probabilities. The
pages' own LiteRT copy (cifar/inference.py) is another file, with a second output for "Inside
the network".

The training worker writes the download files into each saved run's folder when it has
nothing to train (cifar/worker.py), so the web server, which never imports TensorFlow, only
hands out files; `download_state` tells a page whether one is ready, failed, or still to come.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import keras

FORMATS = {"litert": ".tflite", "onnx": ".onnx"}  # Keras's format names, and the file ending each gets
FORMAT_NAMES = {"litert": "LiteRT", "onnx": "ONNX"}
DOWNLOAD_FILES = {name: "classifier" + ending for name, ending in FORMATS.items()}  # in a run's folder
FAILED_ENDING = ".failed"  # beside a download file that could not be made: holds the reason


class ExportError(RuntimeError):
    """An export Keras or its converter could not make."""


def export_model(model: "keras.Model", path: str | Path, format: str) -> Path:
    """Write `model` to `path` in `format` ("litert" or "onnx"); a reader never sees a half-written file."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    path = Path(path)
    # Keras picks what to write by the file's ending, so the partial file keeps the format's own.
    partial = path.with_name(path.name + ".partial" + FORMATS[format])
    try:
        _call_once(model)
        model.export(str(partial), format=format, verbose=False)
    except ImportError as error:  # tf2onnx or onnx missing: name what to install
        partial.unlink(missing_ok=True)
        raise ExportError(f"{FORMAT_NAMES[format]} export needs a package that is not installed: {error}") from None
    except Exception as error:  # a converter's failure must not leave a partial file
        partial.unlink(missing_ok=True)
        raise ExportError(f"{FORMAT_NAMES[format]} export failed: {type(error).__name__}: {_first_line(error)}") from None
    partial.replace(path)
    return path


def _call_once(model: "keras.Model") -> None:
    """Keras's ONNX exporter refuses a model never called ("has never called"), as one just loaded is."""
    import numpy as np

    pixels = model.inputs[0]
    model(np.zeros((1, *pixels.shape[1:]), dtype=pixels.dtype), training=False)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else ""


def needs_downloads(folder: str | Path) -> bool:
    """Whether a saved run lacks a download file that has not failed before."""
    from cifar.store import MODEL_FILE

    folder = Path(folder)
    return (folder / MODEL_FILE).is_file() and any(download_state(folder, name).pending for name in FORMATS)


def write_downloads(model: "keras.Model", folder: str | Path, most: Optional[int] = None) -> dict[str, float]:
    """Export the run's model in every format not yet written (at most `most` of them); a failure is
    kept as a note beside the file, so the page can say why and the worker does not try again.
    Returns seconds per format made."""
    folder = Path(folder)
    seconds: dict[str, float] = {}
    for name, file_name in DOWNLOAD_FILES.items():
        if not download_state(folder, name).pending:
            continue
        if most is not None and len(seconds) >= most:
            break
        started = time.perf_counter()
        try:
            export_model(model, folder / file_name, name)
            seconds[name] = time.perf_counter() - started
        except ExportError as error:
            (folder / (file_name + FAILED_ENDING)).write_text(str(error))
    return seconds


@dataclass(frozen=True)
class DownloadState:
    """One download file of a run, as a page sees it: ready (path), failed (why), or still to be made."""

    path: Optional[Path]
    failure: str = ""

    @property
    def pending(self) -> bool:
        return self.path is None and not self.failure


def download_state(folder: str | Path, format: str) -> DownloadState:
    folder = Path(folder)
    file = folder / DOWNLOAD_FILES[format]
    if file.is_file():
        return DownloadState(file)
    failed = file.with_name(file.name + FAILED_ENDING)
    if failed.is_file():
        return DownloadState(None, failed.read_text().strip() or f"{FORMAT_NAMES[format]} export failed.")
    return DownloadState(None)
