"""One training run from start to saved result, and the background job the app watches.

`run_training` is what the CLI and the app both do: load the data, train while streaming
events, evaluate on the test set, save model and metrics. `TrainingJob` runs it in a thread
and keeps every event, so any number of viewers (page refreshes, second tabs, other
students) can read the same run from any point. It never calls Streamlit.

Besides training's events (cifar/train.py), a run reports ``{"event": "loading", "message"}``,
``{"event": "download", "bytes_done", "bytes_total"}`` while a first download arrives,
``{"event": "evaluating", "message"}`` and ``{"event": "saved", "folder", "test_loss",
"test_accuracy"}``; a job that fails ends with ``{"event": "failed", "message"}``.
"""
from __future__ import annotations

import gc
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from cifar.config import TrainConfig
from cifar.data import DataError, load_data

Event = dict[str, Any]
FINISHED_JOBS_KEPT = 8  # ended jobs whose event logs stay in memory, for pages still showing them
Dataset = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str]]


def run_training(config: TrainConfig, out_dir: str | Path, data: Optional[str | Path] = None,
                 on_event: Optional[Callable[[Event], None]] = None, stop: Optional[threading.Event] = None,
                 dataset: Optional[Dataset] = None) -> dict[str, Any]:
    """Train, evaluate and save into out_dir (model.keras and metrics.json); returns the metrics.

    A run stopped before its first step trains, tests and saves nothing: its metrics hold just
    its config, status and reason, and out_dir is left as it was.
    """
    out_dir = Path(out_dir)
    made_here = not out_dir.exists()
    # Made first, so a folder that cannot be written fails at once rather than after the training.
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train_test_and_save(config, out_dir, data, on_event or (lambda event: None), stop, dataset)
    finally:
        if made_here and not any(out_dir.iterdir()):
            out_dir.rmdir()


def _train_test_and_save(config: TrainConfig, out_dir: Path, data: Optional[str | Path], emit: Callable[[Event], None],
                         stop: Optional[threading.Event], dataset: Optional[Dataset]) -> dict[str, Any]:
    from cifar.store import METRICS_FILE, MODEL_FILE, PREDICTIONS_FILE, save_model, write_metrics
    from cifar.train import evaluate, train_new_model

    started = time.perf_counter()
    if dataset is None:
        emit({"event": "loading", "message": "Loading CIFAR-10…"})
        dataset = load_data(data, progress=emit)
    (x_train, y_train), (x_test, y_test), class_names = dataset
    train_size = len(x_train) if config.train_size is None else min(len(x_train), config.train_size)
    batches: list[Event] = []

    def record(event: Event) -> None:
        if event["event"] == "batch":
            batches.append({key: event[key] for key in ("epoch", "step", "progress", "loss", "accuracy")})
        emit(event)

    model, result = train_new_model((x_train, y_train), (x_test, y_test), class_names, config, record, stop)
    if not result.steps_done:
        return {"config": config.to_dict(), "status": result.status, "reason": result.reason}
    emit({"event": "evaluating", "message": f"Testing on {len(x_test):,} test images…"})
    test = evaluate(model, x_test, y_test, class_names, config.eval_batch_size)
    np.save(out_dir / PREDICTIONS_FILE, test.pop("predicted").astype(np.int16))
    metrics = {
        "config": config.to_dict(), "class_names": class_names, "status": result.status, "reason": result.reason,
        "history": result.history, "batches": batches, "train_size": train_size,
        "test_loss": test["test_loss"], "test_accuracy": test["test_accuracy"],
        "per_class_accuracy": test["per_class_accuracy"], "confusion_matrix": test["confusion_matrix"],
        "images_per_second": result.images_per_second, "train_seconds": result.wall_seconds,
        "wall_seconds": time.perf_counter() - started, "created": time.time(),
    }
    save_model(model, out_dir / MODEL_FILE, metrics)
    write_metrics(out_dir / METRICS_FILE, metrics)
    emit({"event": "saved", "folder": str(out_dir), "test_loss": metrics["test_loss"],
          "test_accuracy": metrics["test_accuracy"]})
    return metrics


def import_tensorflow_for_a_server(after_seconds: float = 0.0) -> None:
    """Import TensorFlow, then exempt everything loaded so far from garbage collection.

    Streamlit collects garbage after every script run, and with Keras loaded it also calls
    keras.backend.clear_session(), which collects again. With TensorFlow's 350,000 objects
    tracked that took about 220 ms holding the GIL, for every poll of every viewer: a training
    run in the same process slowed from 2,400 to 1,300 images/s with one browser watching.
    Those objects live as long as the server; frozen (gc.freeze), a collection skips them
    and takes under a millisecond.
    """
    from cifar.backend import keras_module

    time.sleep(after_seconds)
    keras_module()
    gc.freeze()


class _StoppedWhileLoading(Exception):
    """Raised through the data loader's progress reports when the run's stop was requested."""


class TrainingJob:
    """A run in a background thread, with the full event log for late-joining viewers."""

    def __init__(self, run_id: str, config: TrainConfig, out_dir: Path, data: Optional[str] = None,
                 dataset_loader: Optional[Callable[[Callable[[Event], None]], Dataset]] = None) -> None:
        self.run_id, self.config, self.out_dir, self.data = run_id, config, Path(out_dir), data
        self.dataset_loader = dataset_loader
        self.events: list[Event] = []
        self.stop_requested = threading.Event()
        self.state = "starting"  # starting, running, finished, stopped, diverged, failed
        self.error: Optional[str] = None
        self.metrics: Optional[dict[str, Any]] = None
        self.started = time.time()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"training-{run_id}", daemon=True)

    def start(self) -> "TrainingJob":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_requested.set()

    @property
    def active(self) -> bool:
        return self._thread.is_alive()

    def events_since(self, index: int) -> list[Event]:
        with self._lock:
            return self.events[index:]

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    def _emit(self, event: Event) -> None:
        with self._lock:
            self.events.append({**event, "time": time.time()})
            if event["event"] == "start":
                self.state = "running"

    def _loading_progress(self, event: Event) -> None:
        if self.stop_requested.is_set():
            raise _StoppedWhileLoading  # ends a download between two chunks, leaving no partial file
        self._emit(event)

    def _run(self) -> None:
        try:
            dataset = None
            if self.dataset_loader is not None:
                self._emit({"event": "loading", "message": "Loading CIFAR-10…"})
                dataset = self.dataset_loader(self._loading_progress)
            self.metrics = run_training(self.config, self.out_dir, self.data, self._emit, self.stop_requested, dataset)
            self.state = self.metrics["status"]
        except _StoppedWhileLoading:
            self._emit({"event": "end", "status": "stopped",
                        "reason": "Stopped by request while the data was loading: nothing was trained."})
            self.state = "stopped"
        except DataError as error:
            self._fail(str(error))
        except Exception as error:  # the thread must end with a readable state, whatever happened
            traceback.print_exc()
            self._fail(f"Training failed: {type(error).__name__}: {error}")

    def _fail(self, message: str) -> None:
        self.error = message
        self._emit({"event": "failed", "message": message})
        self.state = "failed"


class TrainingBusy(RuntimeError):
    """Another run is training in this process; the host has two cores, so one run at a time."""


class JobBoard:
    """This server process's one training slot, its jobs by id, and the dataset all runs share."""

    def __init__(self, runs_dir: str | Path, data: Optional[str] = None) -> None:
        self.runs_dir, self.data = Path(runs_dir), data
        self.jobs: dict[str, TrainingJob] = {}
        self._lock = threading.Lock()
        self._dataset: Optional[Dataset] = None
        self._dataset_lock = threading.Lock()
        self._warming: Optional[threading.Thread] = None

    def dataset(self, progress: Optional[Callable[[Event], None]] = None) -> Dataset:
        """Load the data once per process; later callers wait for the first and share its arrays."""
        with self._dataset_lock:
            if self._dataset is None:
                self._dataset = load_data(self.data, progress=progress)
            return self._dataset

    def warm_up(self, after_seconds: float = 0.0) -> None:
        """Import TensorFlow in the background, once, so the first Train does not wait for it."""
        with self._lock:
            if self._warming is None:
                self._warming = threading.Thread(target=import_tensorflow_for_a_server, args=(after_seconds,),
                                                 name="import-tensorflow", daemon=True)
                self._warming.start()

    def active_job(self) -> Optional[TrainingJob]:
        with self._lock:
            return self._active_job_locked()

    def _active_job_locked(self) -> Optional[TrainingJob]:
        return next((job for job in self.jobs.values() if job.active), None)

    def get(self, run_id: str) -> Optional[TrainingJob]:
        with self._lock:
            return self.jobs.get(run_id)

    def start(self, config: TrainConfig) -> TrainingJob:
        from cifar.store import new_run_id

        with self._lock:
            if self._active_job_locked() is not None:
                raise TrainingBusy("A training run is already in progress on this server; watch it, or wait "
                                   "for it to finish before starting another.")
            run_id = new_run_id()
            job = TrainingJob(run_id, config, self.runs_dir / run_id, self.data, dataset_loader=self.dataset)
            ended = [old_id for old_id, old in self.jobs.items() if not old.active]  # oldest first
            for old_id in ended[: max(0, len(ended) - FINISHED_JOBS_KEPT)]:
                del self.jobs[old_id]  # a long-lived server must not keep every run's events forever
            self.jobs[run_id] = job
            return job.start()
