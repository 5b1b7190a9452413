"""One training run from start to saved result: what the CLI and the app's worker both do.

`run_training` loads the data, trains while streaming events, evaluates on the test set and
saves model and metrics. The CLI runs it in its own process; the app's runs go through the
run store to the training worker (cifar/runstore.py, cifar/worker.py), which runs it too.

Besides training's events (cifar/train.py), a run reports ``{"event": "loading", "message"}``,
``{"event": "download", "bytes_done", "bytes_total"}`` while a first download arrives,
``{"event": "watch_list", "items"}`` (the pictures its snapshots follow, cifar/snapshots.py),
``{"event": "evaluating", "message"}`` and ``{"event": "saved", "folder", "test_loss",
"test_accuracy"}``; a job that fails ends with ``{"event": "failed", "message"}``.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from cifar.config import TrainConfig

Event = dict[str, Any]
Dataset = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str]]


def run_training(config: TrainConfig, out_dir: str | Path, data: Optional[str | Path] = None,
                 on_event: Optional[Callable[[Event], None]] = None, stop: Optional[threading.Event] = None,
                 dataset: Optional[Dataset] = None, for_pages: bool = False,
                 watch_list: Optional[Sequence[dict[str, Any]]] = None, pause: Optional[threading.Event] = None,
                 while_paused: Optional[Callable[[], None]] = None) -> dict[str, Any]:
    """Train, evaluate and save into out_dir (model.keras and metrics.json); returns the metrics.

    With for_pages, also save the files the app's pages predict with, without TensorFlow
    (cifar/inference.py): the test set's probabilities and a LiteRT copy of the model.

    Without `dataset`, the config's data is loaded: CIFAR-10 or CIFAR-100 from `data` (or where
    cifar.data finds it), or an image set kept in out_dir's parent, the runs folder (cifar/datasets.py).

    A run stopped before its first step trains, tests and saves nothing: its metrics hold just
    its config, status and reason, and out_dir is left as it was.

    The run's snapshots follow `watch_list` (test images and uploads), or with None the default
    list of cifar/snapshots.py; `pause` and `while_paused` are training's (cifar/train.py).
    """
    out_dir = Path(out_dir)
    made_here = not out_dir.exists()
    # Made first, so a folder that cannot be written fails at once rather than after the training.
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train_test_and_save(config, out_dir, data, on_event or (lambda event: None), stop, dataset, for_pages,
                                    watch_list, pause, while_paused)
    finally:
        if made_here and not any(out_dir.iterdir()):
            out_dir.rmdir()


def _train_test_and_save(config: TrainConfig, out_dir: Path, data: Optional[str | Path], emit: Callable[[Event], None],
                         stop: Optional[threading.Event], dataset: Optional[Dataset], for_pages: bool,
                         watch_list: Optional[Sequence[dict[str, Any]]], pause: Optional[threading.Event],
                         while_paused: Optional[Callable[[], None]]) -> dict[str, Any]:
    from cifar.snapshots import default_watch_list, resolve_watch_list
    from cifar.store import METRICS_FILE, MODEL_FILE, PREDICTIONS_FILE, save_model, write_metrics
    from cifar.train import evaluate, train_new_model

    started = time.perf_counter()
    if dataset is None:
        from cifar.datasets import load_source, run_dataset, source_words

        emit({"event": "loading", "message": f"Loading {source_words(config)}…"})
        dataset = run_dataset(config, load_source(config, out_dir.parent, data, progress=emit))
    (x_train, y_train), (x_test, y_test), class_names = dataset
    train_size = len(x_train) if config.train_size is None else min(len(x_train), config.train_size)
    watched, items = resolve_watch_list(default_watch_list(y_test) if watch_list is None else watch_list, x_test, y_test)
    emit({"event": "watch_list", "items": items})
    batches: list[Event] = []
    snapshots: list[Event] = []
    pauses: list[Event] = []
    checked_on: dict[str, Any] = {}
    trained_by: dict[str, str] = {}

    def record(event: Event) -> None:
        kind = event["event"]
        if kind == "batch":
            batches.append({key: event[key] for key in ("epoch", "step", "progress", "loss", "accuracy")})
        elif kind == "snapshot":
            snapshots.append({key: value for key, value in event.items() if key != "event"})
        elif kind in ("paused", "resumed"):
            pauses.append(dict(event))
        elif kind == "start":
            checked_on.update(event["validation"])
            trained_by["path"] = event["path"]
        emit(event)

    model, result = train_new_model((x_train, y_train), (x_test, y_test), class_names, config, record, stop,
                                    watched, pause, while_paused)
    if not result.steps_done:
        return {"config": config.to_dict(), "status": result.status, "reason": result.reason}
    emit({"event": "evaluating", "message": f"Testing on {len(x_test):,} test images…"})
    test = evaluate(model, x_test, y_test, class_names, config.eval_batch_size)
    np.save(out_dir / PREDICTIONS_FILE, test.pop("predicted").astype(np.int16))
    metrics = {
        "config": config.to_dict(), "class_names": class_names, "status": result.status, "reason": result.reason,
        "history": result.history, "batches": batches, "train_size": train_size, "validation": checked_on,
        "training_path": trained_by["path"],
        "watch_list": items, "snapshots": snapshots, "pauses": pauses,
        "test_loss": test["test_loss"], "test_accuracy": test["test_accuracy"],
        "per_class_accuracy": test["per_class_accuracy"], "confusion_matrix": test["confusion_matrix"],
        "images_per_second": result.images_per_second, "train_seconds": result.wall_seconds,
        "wall_seconds": time.perf_counter() - started, "created": time.time(),
    }
    if for_pages:
        from cifar.inference import save_page_files

        save_page_files(model, out_dir, test.pop("probabilities"))
    test.pop("probabilities", None)
    save_model(model, out_dir / MODEL_FILE, metrics)
    write_metrics(out_dir / METRICS_FILE, metrics)  # last: a folder with metrics.json is a complete run
    emit({"event": "saved", "folder": str(out_dir), "test_loss": metrics["test_loss"],
          "test_accuracy": metrics["test_accuracy"]})
    return metrics
