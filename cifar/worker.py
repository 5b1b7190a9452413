"""The training worker: a process of its own that takes queued runs from the run store, trains
them one at a time, and writes their events back, so no page's work ever competes with
training for Python's lock.

    python -m cifar.worker --runs-dir runs [--data PATH] [--worker-id local-1]

The web server starts one itself (cifar/service.py) and restarts it if it dies. The worker
keeps the data loaded between runs (one CIFAR copy, CIFAR-10 or CIFAR-100, and one small image
set at a time: a hosted app has 2.7 GB for everything), checks the store for a stop or pause request four
times a second, and after each save also writes the small files the pages predict with
(cifar/inference.py); when it has nothing to train, the LiteRT and ONNX downloads
(cifar/export.py). A paused run holds the worker, so queued runs wait, unless the teacher
lets them pass: the worker then trains them while the paused run waits in memory, and comes
back to it. Started by a server, it ends when that server ends, even on kill -9.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from cifar.backend import release_freed_memory
from cifar.config import TrainConfig
from cifar.data import DataError, load_data
from cifar.datasets import Loaded, SourceKey, load_source, run_dataset, source_key, source_words
from cifar.runner import Dataset, run_training
from cifar.runstore import CURVE_POINTS, RunRecord, RunStore, summary_of

log = logging.getLogger("cifar.worker")
IDLE_POLL_SECONDS = 0.3  # how soon a queued run starts once the worker is free
STOP_POLL_SECONDS = 0.25  # Stop takes effect within this plus one group of steps
PROGRESS_SECONDS = 0.5  # how often the run's speed and time left are rewritten in the store
Event = dict[str, Any]


class StoppedWhileLoading(Exception):
    """Raised through the data loader's progress reports when the run's stop was requested."""


class RunRecorder:
    """Writes one run's events to the store: training's every-few-batches events become at most
    CURVE_POINTS curve points (each the mean over the batches it covers, never across an epoch's
    end), and the latest speed and time left go to the run's row, at most every half second."""

    def __init__(self, store: RunStore, run_id: str, points: int = CURVE_POINTS) -> None:
        self.store, self.run_id, self.points = store, run_id, points
        self.images_per_point = 1.0
        self.next_point = 0.0
        self._loss = self._correct = 0.0
        self._images = 0
        self._last_batch: Optional[Event] = None
        self._progress_written = 0.0

    def __call__(self, event: Event) -> None:
        kind = event["event"]
        if kind == "start":
            self.images_per_point = max(1.0, event["epochs"] * event["train_size"] / self.points)
            self.next_point = self.images_per_point
        if kind == "batch":
            self._batch(event)
            return
        if kind == "download":
            self._write_progress(event, force=False)
            return
        if kind in ("epoch", "end", "paused"):
            self._flush()  # a curve point never mixes two epochs, and a run stopped or paused mid-epoch keeps its last batches
        self.store.append(self.run_id, [event])
        if kind in ("epoch", "end", "paused", "resumed"):
            self._write_progress({**(self._last_batch or {}), **event, "paused": kind == "paused"}, force=True)

    def _batch(self, event: Event) -> None:
        self._loss += event["loss"] * event["images"]
        self._correct += event["accuracy"] * event["images"]
        self._images += event["images"]
        self._last_batch = event
        if event["images_done"] >= self.next_point:
            self._flush()
            while self.next_point <= event["images_done"]:
                self.next_point += self.images_per_point
        self._write_progress(event, force=False)

    def _flush(self) -> None:
        if not self._images or self._last_batch is None:
            return
        last = self._last_batch
        point = {key: last[key] for key in ("epoch", "step", "steps_per_epoch", "progress", "images_done", "elapsed")}
        point.update(event="batch", loss=self._loss / self._images, accuracy=self._correct / self._images,
                     images=self._images)
        self.store.append(self.run_id, [point])
        self._loss = self._correct = 0.0
        self._images = 0

    def _write_progress(self, event: Event, force: bool) -> None:
        now = time.monotonic()
        if force or now - self._progress_written >= PROGRESS_SECONDS:
            self._progress_written = now
            self.store.set_progress(self.run_id, {**event, "time": time.time()})


@dataclass
class _Training:
    """A run this worker holds: training, or paused while queued runs pass."""

    run_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    pause: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Takes runs from the store and trains them, one at a time."""

    def __init__(self, runs_dir: str | Path, data: Optional[str] = None, worker_id: str = "local-1") -> None:
        self.store = RunStore(runs_dir)
        self.runs_dir, self.data, self.worker_id = Path(runs_dir), data, worker_id
        self.holding: list[_Training] = []  # the run training now last; paused runs before it
        self._loaded: dict[str, tuple[SourceKey, Loaded]] = {}  # "cifar" and "images": at most one of each kept

    def serve(self, until: Callable[[], bool] = lambda: False) -> None:
        """Train queued runs until `until()` says so (never, for a server's worker)."""
        threading.Thread(target=self._watch, name="heartbeat-and-stop", daemon=True).start()
        while not until():
            run = self.store.claim(self.worker_id)
            if run is None:
                self._prepare_saved_runs_for_pages()
                time.sleep(IDLE_POLL_SECONDS)
                continue
            self.train(run)

    def _watch(self) -> None:
        """Beat the worker's heart in the store each second; pass on stop and pause requests for the runs it holds."""
        beat = 0.0
        while True:
            if time.monotonic() - beat >= 1.0:
                self.store.heartbeat(self.worker_id, os.getpid())
                beat = time.monotonic()
            for held in list(self.holding):  # each run's own events: a late request never reaches another run
                stop, pause, _ = self.store.controls(held.run_id)
                if stop:
                    held.stop.set()
                if pause:
                    held.pause.set()
                else:
                    held.pause.clear()
            time.sleep(STOP_POLL_SECONDS)

    def is_loaded(self, config: TrainConfig) -> bool:
        key = source_key(config)
        return any(kept == key for kept, _ in self._loaded.values())

    def dataset(self, config: TrainConfig, progress: Callable[[Event], None]) -> Dataset:
        """The run's splits, from the data kept since an earlier run or loaded now in place of the
        kept one of its kind, which is let go first, so two CIFAR copies are never held at once."""
        key = source_key(config)
        slot = "images" if config.data_source == "images" else "cifar"
        kept = self._loaded.get(slot)
        if kept is None or kept[0] != key:
            kept = None
            if self._loaded.pop(slot, None) is not None:
                release_freed_memory()
            if config.data_source == "cifar10":
                loaded: Loaded = load_data(self.data, progress=progress)
            else:
                loaded = load_source(config, self.runs_dir, None, progress)  # self.data is the CIFAR-10 copy
            kept = self._loaded[slot] = (key, loaded)
        return run_dataset(config, kept[1])

    def train(self, run: RunRecord) -> None:
        held = _Training(run.run_id)
        self.holding.append(held)
        record = RunRecorder(self.store, run.run_id)

        def loading_progress(event: Event) -> None:
            if held.stop.is_set() or self.store.stop_requested(run.run_id):
                raise StoppedWhileLoading  # ends a download between two chunks, leaving no partial file
            record(event)

        try:
            if not self.is_loaded(run.config):
                record({"event": "loading", "message": f"Loading {source_words(run.config)}…"})
            dataset = self.dataset(run.config, loading_progress)
            metrics = run_training(run.config, self.runs_dir / run.run_id, self.data, record, held.stop, dataset,
                                   for_pages=True, watch_list=run.watch, pause=held.pause,
                                   while_paused=lambda: self._let_queue_pass(run.run_id))
            self.store.finish(run.run_id, metrics["status"], metrics.get("reason", ""), summary_of(metrics))
        except StoppedWhileLoading:
            reason = "Stopped by request while the data was loading: nothing was trained."
            record({"event": "end", "status": "stopped", "reason": reason})
            self.store.finish(run.run_id, "stopped", reason)
        except DataError as error:
            self._fail(run.run_id, record, str(error))
        except Exception as error:  # the run must end with a readable state, whatever happened
            traceback.print_exc()
            self._fail(run.run_id, record, f"Training failed: {type(error).__name__}: {error}")
        finally:
            self.holding.remove(held)

    def _let_queue_pass(self, paused_run: str) -> None:
        """While a run is paused: if the teacher lets the queue pass, train the next queued run now."""
        if self.store.controls(paused_run)[2] and (run := self.store.claim(self.worker_id)) is not None:
            log.info("run %s is paused; training %s meanwhile", paused_run, run.run_id)
            self.train(run)

    def _fail(self, run_id: str, record: RunRecorder, message: str) -> None:
        record({"event": "failed", "message": message})
        self.store.finish(run_id, "failed", message)

    def _prepare_saved_runs_for_pages(self) -> None:
        """Write the pages' inference files for saved runs that lack them (runs trained by the CLI, or
        before pages predicted without TensorFlow), one run per idle moment, then the download files
        (LiteRT, ONNX), one file per idle moment. Made here, between runs, not as a run ends: the next
        queued run need not wait for files few will download, and this process already holds TensorFlow."""
        from cifar.export import DOWNLOAD_FILES, FAILED_ENDING, needs_downloads, write_downloads
        from cifar.inference import FAILED_MARK, needs_page_files, save_page_files
        from cifar.store import load_model

        folders = [self.runs_dir / run.run_id for run in self.store.runs()]
        for folder in folders:
            if needs_page_files(folder):
                try:
                    model, _ = load_model(folder)
                    save_page_files(model, folder)
                except Exception as error:  # a damaged model must not stop the worker; the page says it cannot open it
                    log.warning("could not prepare %s for the pages: %s", folder.name, error)
                    (folder / FAILED_MARK).touch()
                return
        for folder in folders:
            if needs_downloads(folder):
                try:
                    # One file a time: a run queued meanwhile waits for one export only.
                    made = write_downloads(load_model(folder)[0], folder, most=1)
                    log.info("download files for %s: %s", folder.name, made)
                except Exception as error:  # as above; its .keras download still works
                    log.warning("could not make the download files of %s: %s", folder.name, error)
                    for file_name in DOWNLOAD_FILES.values():
                        (folder / (file_name + FAILED_ENDING)).write_text(f"The model could not be loaded: {error}")
                return


def _end_with_parent() -> None:
    """Linux: the kernel kills this process when the server that started it dies, even by kill -9."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar.worker", description="Train the runs queued in a run store.")
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--data", help="the CIFAR-10 copy (default: CIFAR10_DATA, then the Keras cache); CIFAR-100 "
                                       "comes from CIFAR100_DATA, then the Keras cache")
    parser.add_argument("--worker-id", default="local-1")
    parser.add_argument("--parent-pid", type=int, help="end when this process is gone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    parent = args.parent_pid
    if parent:
        _end_with_parent()
    worker = Worker(args.runs_dir, args.data, args.worker_id)
    # Where the kernel cannot end us with the parent, notice it between runs.
    worker.serve(until=lambda: bool(parent) and os.getppid() != parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
