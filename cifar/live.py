"""A training run as its watchers see it: the curve events read from the store as they arrive,
and the live figures built from them, both shared by every page watching the run.

A classroom of 30 pages polling one run costs one read of the new events and one figure build
per change, not thirty: each page then sends the same small, thinned figures.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

from cifar import charts
from cifar.runstore import Event, RunRecord, RunStore, Speeds

LIVE_POINTS = 150  # curve points in the live figure: enough for a projector, small for 30 phones
READ_SECONDS = 0.5  # pages polling within this of the last read share it
BUILD_SECONDS = 2.0  # the live figures are rebuilt at most this often, so a page redrawing every 5 s is at most 2 s behind
SETTLED_SECONDS = 8.0  # training time after which the time-left estimate is shown


class LiveRun:
    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.events: list[Event] = []
        self.seq = 0
        self._read_at = 0.0
        self._figures: Optional[Any] = None
        self._figure_seq = -1
        self._built_at = 0.0
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Read the events after the last one held, unless another page just did; returns the last seq."""
        with self._lock:
            if time.monotonic() - self._read_at >= READ_SECONDS:
                new = self.store.events_after(self.run_id, self.seq)
                self.events.extend(new)
                self.seq = new[-1]["seq"] if new else self.seq
                self._read_at = time.monotonic()
            return self.seq

    def batches(self) -> list[Event]:
        return [event for event in self.events if event["event"] == "batch"]

    def history(self) -> list[Event]:
        return [event for event in self.events if event["event"] == "epoch"]

    def of_kind(self, kind: str) -> list[Event]:
        return [event for event in self.events if event["event"] == kind]

    def pauses(self) -> list[float]:
        """Where the run was paused, in epochs."""
        epochs = next((event["epochs"] for event in self.events if event["event"] == "start"), None)
        return pause_positions(self.events, epochs) if epochs else []

    def validation_label(self) -> str:
        start = next((event for event in self.events if event["event"] == "start"), {})
        return charts.validation_label(start.get("validation"))

    def figures(self, epochs: int, x_max: Optional[float] = None) -> Any:
        """The live learning curves (loss, accuracy), rebuilt when new points came and the last build is BUILD_SECONDS old."""
        with self._lock:
            stale = self._figure_seq != self.seq and time.monotonic() - self._built_at >= BUILD_SECONDS
            if self._figures is None or stale or x_max is not None:
                self._figures = charts.learning_curves(self.batches(), self.history(), epochs, x_max=x_max,
                                                      max_points=LIVE_POINTS, lean=True,
                                                      validation=self.validation_label(), pauses=self.pauses())
                self._figure_seq, self._built_at = self.seq, time.monotonic()
            return self._figures


def pause_positions(events: list[Event], epochs: int) -> list[float]:
    """Where each pause among a run's events happened, in epochs (a run's events or a saved run's "pauses")."""
    return [event["progress"] * epochs for event in events if event.get("event") == "paused"]


class Board:
    """What trains now and what waits, read from the store at most every READ_SECONDS and shared
    by every page: thirty pages polling each second cost two queries a second, not sixty."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._read_at = 0.0
        self._running: list[RunRecord] = []
        self._queued: list[RunRecord] = []
        self._speeds = Speeds()
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at >= READ_SECONDS:
            self._running, self._queued = self.store.running(), self.store.queue()
            self._speeds = self.store.latest_speeds()
            self._read_at = time.monotonic()

    def snapshot(self) -> tuple[list[RunRecord], list[RunRecord], Speeds]:
        """(running, queued in order, the training speeds measured, by network)."""
        with self._lock:
            self._refresh()
            return self._running, self._queued, self._speeds

    def run(self, run_id: str) -> Optional[RunRecord]:
        """A run as of the last read if it is training or queued, else as the store has it now."""
        running, queued, _ = self.snapshot()
        known = next((run for run in running + queued if run.run_id == run_id), None)
        return known or self.store.get(run_id)

    def changed(self) -> None:
        """Forget the last read: this page just changed the queue and must see it at once."""
        with self._lock:
            self._read_at = 0.0


def duration(seconds: Optional[float]) -> str:
    """ "42 s", "3 min 05 s"; "estimating…" when not known yet."""
    if seconds is None:
        return "estimating…"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def training_status(record: RunRecord) -> tuple[float, str]:
    """The progress bar's share and its words: epoch, speed and time left."""
    progress = record.progress
    if progress.get("event") == "download" and progress.get("bytes_total"):
        done, total = progress["bytes_done"], progress["bytes_total"]
        return done / total, f"Downloading {progress.get('dataset', 'CIFAR-10')}: {done / 1e6:.0f} of {total / 1e6:.0f} MB"
    if "progress" not in progress:
        return 0.0, "Loading the data and building the network…"
    status = "Stopping…" if record.stop_requested else "Training…"
    if progress.get("event") == "end" or progress.get("progress", 0) >= 1:
        status = "Testing on the test set and saving…"
    elif record.pause_requested and not record.stop_requested:  # a paused run that is stopped says so
        where = f"epoch {progress['epoch']} of {record.config.epochs}"
        if not progress.get("paused"):
            return min(1.0, progress["progress"]), f"Pausing at the next step… {where}"
        passing = " · queued runs are training meanwhile" if record.queue_may_pass else ""
        return min(1.0, progress["progress"]), f"Paused in {where}: Resume goes on from the same step{passing}"
    # The first seconds run slower than the rest (tracing, warm caches): a time left from them overstates.
    settled = progress.get("elapsed", 0) >= SETTLED_SECONDS
    left = f"{duration(progress.get('remaining'))} left" if settled else "time left: estimating…"
    return min(1.0, progress["progress"]), (
        f"{status} epoch {progress['epoch']} of {record.config.epochs} · "
        f"{progress.get('images_per_second', 0):,.0f} images per second · {left}")
