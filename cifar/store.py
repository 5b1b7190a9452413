"""Saving and reopening trained models: Keras's `.keras` file with our metadata inside it, and
the runs folder where every finished or stopped run is kept.

The metadata (class names, config, curves, final metrics) travels as an extra `cifar.json`
entry inside the `.keras` zip, so a model downloaded from the app still knows its classes.
A copy sits beside it as `metrics.json`, readable without TensorFlow.
"""
from __future__ import annotations

import json
import re
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from cifar.backend import keras_module
from cifar.batches import IMAGE_SHAPE
from cifar.config import TrainConfig

if TYPE_CHECKING:
    import keras

METADATA_ENTRY = "cifar.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "test_predictions.npy"  # the class each test image was given, for the gallery
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ModelFileError(RuntimeError):
    """A model file that is missing, corrupt, or not a model of this project's kind."""


def save_model(model: "keras.Model", path: str | Path, metadata: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.keras")  # Keras insists on the .keras suffix
    model.save(partial)
    with zipfile.ZipFile(partial, "a") as archive:
        archive.writestr(METADATA_ENTRY, json.dumps(metadata, indent=1))
    partial.replace(path)  # a reader never sees a half-written model
    return path


def read_metadata(path: str | Path, name: Optional[str] = None) -> dict[str, Any]:
    """The metadata stored in a `.keras` file, without loading TensorFlow; `name` is the file's name in messages."""
    path = Path(path)
    name = name or path.name
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelFileError(f"{name} is a zip file but not a Keras model (.keras).")
            if METADATA_ENTRY not in names:
                return {}
            return json.loads(archive.read(METADATA_ENTRY))
    except FileNotFoundError:
        raise ModelFileError(f"There is no model file at {path}.") from None
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ModelFileError(f"{name} is not a readable Keras model file (.keras): {error}.") from None


def load_model(path: str | Path, name: Optional[str] = None) -> tuple["keras.Model", dict[str, Any]]:
    """Load a `.keras` model with Keras's safe mode and check it classifies 32x32 RGB images."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    name = name or path.name
    metadata = read_metadata(path, name)
    keras = keras_module()
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises many types for a damaged or foreign file
        if "safe_mode" in str(error):
            raise ModelFileError(f"{name} holds Python code (a Lambda layer) that Keras's safe mode will not run: "
                                 "this app opens only models made of Keras's own layers.") from None
        raise ModelFileError(f"{name} could not be loaded as a Keras model: {_first_line(error)}") from None
    input_shape, output_shape = tuple(model.input_shape), tuple(model.output_shape)
    if input_shape[1:] != IMAGE_SHAPE or len(output_shape) != 2:
        raise ModelFileError(f"{name} is a Keras model, but not a CIFAR classifier: it takes "
                             f"{input_shape[1:]} and gives {output_shape[1:]}, not {'x'.join(map(str, IMAGE_SHAPE))} "
                             "images to class probabilities.")
    num_classes = output_shape[1]
    class_names = metadata.get("class_names") or [f"class {i}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ModelFileError(f"{name} has {num_classes} outputs but its metadata names {len(class_names)} classes.")
    metadata["class_names"] = list(class_names)
    return model, metadata


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


@dataclass(frozen=True)
class SavedRun:
    run_id: str
    folder: Path
    metrics: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def config(self) -> Optional[TrainConfig]:
        return TrainConfig.from_dict(self.metrics["config"]) if "config" in self.metrics else None

    @property
    def uploaded_as(self) -> Optional[str]:
        """The file name a model was uploaded as (cifar/opening.py); None for a run trained here."""
        return (self.metrics.get("uploaded") or {}).get("file")

    @property
    def epochs_trained(self) -> float:
        """Epochs trained, counting a partial one: 1.6 for a run stopped in its second epoch."""
        batches = self.metrics.get("batches", [])
        planned = self.metrics.get("config", {}).get("epochs", 0)
        completed = len(self.metrics.get("history", []))
        if batches and planned:
            return max(float(completed), batches[-1]["progress"] * planned)
        return float(completed)

    @property
    def epochs_text(self) -> str:
        """ "4 epochs", or "1.6 of 4 epochs" for a run that ended early."""
        if self.uploaded_as and not self.metrics.get("history"):
            return "trained elsewhere"
        planned = self.metrics.get("config", {}).get("epochs")
        trained = self.epochs_trained
        if planned and trained < planned - 1e-6:
            return f"{trained:.1f} of {planned} epochs"
        count = planned or round(trained)
        return f"{count} epoch{'s' if count != 1 else ''}"

    @property
    def title(self) -> str:
        """ "Quick demo, 2 Dec 00:43": the run's preset (or "Custom run") and when it started."""
        config = self.config
        moment = time.localtime(self.metrics.get("created", 0))
        created = f"{moment.tm_mday} {time.strftime('%b %H:%M', moment)}"
        if self.uploaded_as:
            return f"Uploaded {self.uploaded_as}, {created}"
        return f"{(config.preset if config else None) or 'Custom run'}, {created}"

    @property
    def label(self) -> str:
        accuracy = self.metrics.get("test_accuracy")
        shown = f"{accuracy:.1%}" if isinstance(accuracy, (int, float)) else "not tested"
        status = self.metrics.get("status", "")
        return f"{self.title} · {self.epochs_text} · test accuracy {shown}" + (f" · {status}" if status != "finished" else "")

    @property
    def settings_text(self) -> str:
        """The settings in words, as the sidebar would set them."""
        config = self.config
        if config is None and self.uploaded_as:
            return f"A model uploaded as {self.uploaded_as}, tested here on the test set"
        return config.in_words() if config else "settings not recorded"


def valid_run_id(run_id: str) -> bool:
    """A run id safe to join to the runs folder: it may come from a URL."""
    return bool(_RUN_ID.match(run_id))


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(metrics, indent=1))
    partial.replace(path)


def list_runs(runs_dir: str | Path) -> list[SavedRun]:
    """Saved runs, newest first; folders without a readable model and metrics are skipped."""
    runs = []
    root = Path(runs_dir)
    if not root.is_dir():
        return runs
    for folder in root.iterdir():
        if (run := _read_run(folder)) is not None:
            runs.append(run)
    return sorted(runs, key=lambda run: run.metrics.get("created", 0), reverse=True)


def open_run(runs_dir: str | Path, run_id: str) -> Optional[SavedRun]:
    """The saved run of that id, reading just its own folder; None if there is none (or the id is not one)."""
    # The id may come from a URL: checked before it is joined to a path, so "../x" never leaves runs_dir.
    return _read_run(Path(runs_dir) / run_id) if _RUN_ID.match(run_id) else None


def _read_run(folder: Path) -> Optional[SavedRun]:
    if not (_RUN_ID.match(folder.name) and (folder / MODEL_FILE).is_file()):
        return None
    try:
        metrics = json.loads((folder / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return SavedRun(folder.name, folder, metrics)

