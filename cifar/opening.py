"""Opening a model someone brings: a `.keras` file loaded with Keras's safe mode, checked to be a
classifier of 32x32 colour pictures, tested on the test set and added to the runs folder as a
saved run marked as uploaded, with the files the pages predict with.

`add_model_run` does the work, in a process that may import TensorFlow: `python -m cifar import`.
The web server never imports TensorFlow, so a page hands an upload to `ModelImports`, which runs
that command in a process of its own, one at a time and within a time limit, and reads its
progress from a small status file.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from cifar.batches import IMAGE_SHAPE
from cifar.store import METRICS_FILE, MODEL_FILE, PREDICTIONS_FILE, ModelFileError, new_run_id, read_metadata

if TYPE_CHECKING:
    import keras

KNOWN_CLASS_COUNTS = {10: "CIFAR-10", 100: "CIFAR-100"}
IMPORT_SECONDS = 300  # loading TensorFlow, the model and the data, testing 10,000 images, exporting: well under a minute
STATUS_FILE = "status.json"
KEPT_IMPORTS = 50  # finished imports remembered, for their pages to read the outcome
ROOT = Path(__file__).resolve().parent.parent
Progress = Callable[[dict[str, Any]], None]


def check_classifier(model: "keras.Model", name: str) -> int:
    """The number of classes of a model that takes one 32x32x3 picture and gives class probabilities;
    ModelFileError, in words, for any other."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFileError(f"{name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs: a classifier "
                             "here takes one picture and gives one set of class probabilities.")
    pixels, answer = model.inputs[0], model.outputs[0]
    if tuple(pixels.shape[1:]) != IMAGE_SHAPE:
        raise ModelFileError(f"{name} takes inputs of shape {tuple(pixels.shape[1:])}, not 32×32 colour pictures "
                             f"{IMAGE_SHAPE}.")
    if not (pixels.dtype == "uint8" or str(pixels.dtype).startswith("float")):
        raise ModelFileError(f"{name} takes {pixels.dtype} inputs, not pixels (uint8 or float).")
    classes = tuple(answer.shape[1:])
    if len(classes) != 1 or classes[0] not in KNOWN_CLASS_COUNTS:
        raise ModelFileError(f"{name} gives outputs of shape {classes}: not probabilities for the 10 classes of "
                             "CIFAR-10 or the 100 of CIFAR-100.")
    if not any(type(layer).__name__ == "Conv2D" for layer in model.layers):
        raise ModelFileError(f"{name} has no Conv2D layer at its top level: the app shows what a conv layer learned.")
    from cifar.predict import predict_probabilities

    probe = np.random.default_rng(0).integers(0, 256, (8, *IMAGE_SHAPE), dtype=np.uint8)
    probabilities = predict_probabilities(model, probe)
    if not (np.isfinite(probabilities).all() and probabilities.min() >= -1e-6
            and np.abs(probabilities.sum(axis=1) - 1).max() < 1e-3):
        raise ModelFileError(f"{name} does not give class probabilities (each at least 0, together 1): a classifier "
                             "here ends with a softmax.")
    return classes[0]


def add_model_run(model_file: str | Path, runs_dir: str | Path, data: Optional[str] = None,
                  name: Optional[str] = None, progress: Progress = lambda status: None) -> tuple[str, dict[str, Any]]:
    """Check, test and save a `.keras` classifier as a new saved run; returns its id and metrics."""
    from cifar.data import load_cifar100, load_data
    from cifar.inference import save_page_files
    from cifar.runstore import RunStore
    from cifar.store import load_model, save_model, write_metrics
    from cifar.train import evaluate

    name = name or Path(model_file).name
    runs_dir = Path(runs_dir)
    ours = read_metadata(model_file)  # this app's own file keeps its class names, settings and curves
    progress({"stage": "Loading the model with Keras's safe mode…"})
    model, _ = load_model(model_file, name)
    num_classes = check_classifier(model, name)
    progress({"stage": "Loading the test images…"})
    # A 100-class model is tested on CIFAR-100 (found by $CIFAR100_DATA or the Keras cache), a 10-class one on `data`.
    _, (x_test, y_test), data_classes = load_cifar100() if num_classes == 100 else load_data(data)
    if num_classes != len(data_classes):
        raise ModelFileError(f"{name} gives probabilities for {num_classes} classes ({KNOWN_CLASS_COUNTS[num_classes]}), "
                             f"but the test set here has {len(data_classes)}: it cannot be tested on this server.")
    class_names = ours.get("class_names") if len(ours.get("class_names") or []) == num_classes else data_classes
    progress({"stage": f"Testing it on {len(x_test):,} test images…"})
    test = evaluate(model, x_test, y_test, list(class_names))
    run_id = new_run_id()
    staging = runs_dir / f".import-{run_id}"  # not a run id: no list shows it until it is whole (ModelImports cleans up)
    progress({"stage": "Preparing it for the pages…", "staging": str(staging)})
    staging.mkdir(parents=True)
    try:
        metrics = {key: value for key, value in ours.items() if key != "uploaded"}
        metrics.update(
            class_names=list(class_names), status=ours.get("status", "finished"), reason=ours.get("reason", ""),
            uploaded={"file": name, "made_by_this_app": bool(ours)}, created=time.time(),
            data_source="cifar100" if num_classes == 100 else "cifar10",
            test_loss=test["test_loss"], test_accuracy=test["test_accuracy"],
            per_class_accuracy=test["per_class_accuracy"], confusion_matrix=test["confusion_matrix"])
        np.save(staging / PREDICTIONS_FILE, test["predicted"].astype(np.int16))
        save_page_files(model, staging, test["probabilities"])
        save_model(model, staging / MODEL_FILE, metrics)
        write_metrics(staging / METRICS_FILE, metrics)
        staging.rename(runs_dir / run_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    RunStore(runs_dir).adopt_folders()
    return run_id, metrics


def write_status(path: Optional[str | Path], status: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(status))
    partial.replace(path)


@dataclass(frozen=True)
class ImportState:
    """Where an upload stands: still opening (with what it is doing), opened as a run, or refused."""

    done: bool
    message: str
    run_id: Optional[str] = None

    @property
    def failed(self) -> bool:
        return self.done and self.run_id is None


class ModelImport:
    """One uploaded file being opened by `python -m cifar import` in a process of its own."""

    def __init__(self, content: bytes, file_name: str, runs_dir: str | Path, data: Optional[str] = None,
                 seconds: float = IMPORT_SECONDS) -> None:
        self.file_name, self.seconds = file_name, seconds
        self.folder = Path(tempfile.mkdtemp(prefix="cifar-upload-"))
        model_file = self.folder / "upload.keras"
        model_file.write_bytes(content)
        try:
            read_metadata(model_file, file_name)  # not a zip, or a zip but no Keras model: said at once, without TensorFlow
        except ModelFileError:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.status_file = self.folder / STATUS_FILE
        # --name=...: a file named "-x.keras" is still a value, not an option
        command = [sys.executable, "-m", "cifar", "import", f"--model={model_file}", f"--runs-dir={runs_dir}",
                   f"--name={file_name}", f"--status={self.status_file}"]
        if data:
            command.append(f"--data={data}")
        self.process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.deadline = time.monotonic() + seconds
        self._ended: Optional[ImportState] = None
        self._lock = threading.Lock()  # a page's script and its polling part may ask at once

    def _status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def state(self) -> ImportState:
        with self._lock:
            return self._ended or self._check()

    def _check(self) -> ImportState:
        status = self._status()
        code = self.process.poll()
        if code is None and time.monotonic() < self.deadline:
            return ImportState(False, status.get("stage", "Starting…"))
        if code is None:
            self.process.kill()
            self.process.wait()
            if status.get("staging"):
                shutil.rmtree(status["staging"], ignore_errors=True)
            ended = ImportState(True, f"Opening {self.file_name} took longer than {self.seconds:.0f} s and was given up.")
        elif status.get("run_id"):
            ended = ImportState(True, f"{self.file_name} opened as a saved run.", status["run_id"])
        else:
            ended = ImportState(True, status.get("error") or
                                f"{self.file_name} could not be opened: its process ended unexpectedly (exit code {code}).")
        shutil.rmtree(self.folder, ignore_errors=True)
        self._ended = ended
        return ended


class ImportBusy(RuntimeError):
    """Another upload is being opened: each one loads TensorFlow, so they go one at a time."""


class ModelImports:
    """The server's uploads being opened, one at a time: each process holds TensorFlow for a while."""

    def __init__(self, runs_dir: str | Path, data: Optional[str] = None) -> None:
        self.runs_dir, self.data = Path(runs_dir), data
        self._imports: dict[str, ModelImport] = {}
        self._lock = threading.Lock()
        self.remove_leftovers()

    def remove_leftovers(self) -> list[Path]:
        """Half-made runs of imports that died with an earlier server (none can still be working on them)."""
        old = [folder for folder in self.runs_dir.glob(".import-*")
               if folder.is_dir() and time.time() - folder.stat().st_mtime > IMPORT_SECONDS]
        for folder in old:
            shutil.rmtree(folder, ignore_errors=True)
        return old

    def start(self, content: bytes, file_name: str) -> str:
        """Start opening an upload; returns its id. ModelFileError for a file that is plainly no
        model, ImportBusy while another one is being opened."""
        with self._lock:
            if any(not job.state().done for job in self._imports.values()):
                raise ImportBusy("Another model is being opened on this server right now: try again in a moment.")
            import_id = uuid.uuid4().hex
            self._imports[import_id] = ModelImport(content, file_name, self.runs_dir, self.data)
            for old_id in list(self._imports)[:-KEPT_IMPORTS]:  # ended long ago: their pages have read them
                del self._imports[old_id]
            return import_id

    def state(self, import_id: str) -> Optional[ImportState]:
        job = self._imports.get(import_id)
        return job.state() if job is not None else None
