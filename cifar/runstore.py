"""The run store: every run's config, owner, state, place in the queue and events, in one SQLite
file in the runs folder, which the training worker writes and every page reads.

SQLite in WAL mode lets one writer and any number of readers work at once, across processes,
and a transaction is either all there or not at all after a crash. A run's life:

    queued -> running -> finished | stopped | diverged | failed
    queued -> cancelled                running -> interrupted (its worker died mid-run)

Events are the plain dicts of cifar/train.py and cifar/runner.py, numbered per run (``seq``),
so a page asks only for those after the last one it has. The latest batch figures (speed,
time left) live in the run's own row instead, rewritten as they change, so events stay few:
at most CURVE_POINTS curve points per run, plus one per epoch and a handful of others.
Model files stay in the run's folder beside the store (cifar/store.py).
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from cifar.config import SEED_NETWORK, TrainConfig, held_out_size
from cifar.store import METRICS_FILE, MODEL_FILE, new_run_id, valid_run_id

STORE_FILE = "runs.sqlite3"
QUEUE_LIMIT = 20  # queued runs at most: a class of 30 cannot bury the teacher's next run
RUNS_KEPT = 50  # ended runs kept in the folder; older ones not pinned are pruned (about 68 MB each with their downloads)
CURVE_POINTS = 1000  # curve points stored per run at most, whatever its length
ENDED = ("finished", "stopped", "diverged", "failed", "cancelled", "interrupted")
SAVED = ("finished", "stopped", "diverged")  # ended with a model
Event = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    owner_name TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    ended REAL,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    pinned INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    message TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL DEFAULT '{}',
    progress TEXT NOT NULL DEFAULT '{}',
    last_seq INTEGER NOT NULL DEFAULT 0,
    watch TEXT,
    pause_requested INTEGER NOT NULL DEFAULT 0,
    queue_may_pass INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, submitted);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    heartbeat REAL NOT NULL,
    run_id TEXT
);
"""


# Columns added since the first stores were made: a store made before them gets them on opening.
_ADDED_COLUMNS = {"watch": "TEXT", "pause_requested": "INTEGER NOT NULL DEFAULT 0",
                  "queue_may_pass": "INTEGER NOT NULL DEFAULT 0"}


class QueueFull(RuntimeError):
    """The queue already holds QUEUE_LIMIT runs."""


@dataclass(frozen=True)
class RunRecord:
    """One run as the store knows it."""

    run_id: str
    owner: str
    owner_name: str
    config: TrainConfig
    state: str
    submitted: float
    started: Optional[float]
    ended: Optional[float]
    stop_requested: bool
    pinned: bool
    message: str
    summary: dict[str, Any] = field(default_factory=dict)  # what a saved run's metrics say, in brief
    progress: dict[str, Any] = field(default_factory=dict)  # the latest batch figures while it trains
    last_seq: int = 0
    watch: Optional[list[dict[str, Any]]] = None  # the pictures its snapshots follow; None: the default list
    pause_requested: bool = False
    queue_may_pass: bool = False  # the teacher let queued runs train while this one is paused

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


def _record(row: sqlite3.Row) -> RunRecord:
    config = json.loads(row["config"])
    known = set(TrainConfig.__dataclass_fields__)
    return RunRecord(
        run_id=row["run_id"], owner=row["owner"], owner_name=row["owner_name"],
        config=TrainConfig(**{key: value for key, value in config.items() if key in known}),
        state=row["state"], submitted=row["submitted"], started=row["started"], ended=row["ended"],
        stop_requested=bool(row["stop_requested"]), pinned=bool(row["pinned"]), message=row["message"],
        summary=json.loads(row["summary"]), progress=json.loads(row["progress"]), last_seq=row["last_seq"],
        watch=json.loads(row["watch"]) if row["watch"] else None, pause_requested=bool(row["pause_requested"]),
        queue_may_pass=bool(row["queue_may_pass"]),
    )


class RunStore:
    """The store in a runs folder. Safe to share between threads; each thread gets its own connection."""

    def __init__(self, runs_dir: str | Path) -> None:
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.runs_dir / STORE_FILE
        self._local = threading.local()
        self._db().executescript(_SCHEMA)  # each statement commits on its own; CREATE ... IF NOT EXISTS is idempotent
        self._add_columns()

    def _add_columns(self) -> None:
        present = {row["name"] for row in self._all("PRAGMA table_info(runs)")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in present:
                try:
                    self._db().execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError:  # another process added it a moment ago
                    pass

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: transactions are opened explicitly, so a writer takes the lock at once
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps every commit atomic; NORMAL skips an fsync per commit
            self._local.db = db
        return db

    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: Any, *rest: Any) -> None:
            self.db.execute("ROLLBACK" if kind else "COMMIT")

    def _write(self) -> "RunStore._Transaction":
        return RunStore._Transaction(self._db())

    def _one(self, query: str, *args: Any) -> Optional[sqlite3.Row]:
        return self._db().execute(query, args).fetchone()

    def _all(self, query: str, *args: Any) -> list[sqlite3.Row]:
        return self._db().execute(query, args).fetchall()

    def submit(self, config: TrainConfig, owner: str, owner_name: str = "", limit: int = QUEUE_LIMIT,
               watch: Optional[list[dict[str, Any]]] = None) -> str:
        """Queue a run; returns its id. Raises QueueFull when `limit` runs already wait. `watch` is
        the run's watch-list (cifar/snapshots.py); None gives the default one."""
        run_id = new_run_id()
        with self._write() as db:
            (waiting,) = db.execute("SELECT COUNT(*) FROM runs WHERE state = 'queued'").fetchone()
            if waiting >= limit:
                raise QueueFull(f"The queue is full: {limit} runs are waiting. Try again when one has started.")
            db.execute("INSERT INTO runs (run_id, owner, owner_name, config, state, submitted, watch) "
                       "VALUES (?, ?, ?, ?, 'queued', ?, ?)", (run_id, owner, owner_name, json.dumps(config.to_dict()),
                                                             time.time(), None if watch is None else json.dumps(watch)))
        return run_id

    def claim(self, worker_id: str) -> Optional[RunRecord]:
        """The oldest queued run, now marked running on this worker; None if the queue is empty."""
        with self._write() as db:
            row = db.execute("SELECT run_id FROM runs WHERE state = 'queued' ORDER BY submitted, run_id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE runs SET state = 'running', started = ?, worker = ? WHERE run_id = ?",
                       (time.time(), worker_id, row["run_id"]))
            db.execute("UPDATE workers SET run_id = ? WHERE worker_id = ?", (row["run_id"], worker_id))
        return self.get(row["run_id"])

    def append(self, run_id: str, events: Iterable[Event]) -> int:
        """Add events to a run, numbering them; returns the last number."""
        with self._write() as db:
            (seq,) = db.execute("SELECT last_seq FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            rows = []
            for event in events:
                seq += 1
                rows.append((run_id, seq, json.dumps({**event, "seq": seq, "time": event.get("time", time.time())})))
            db.executemany("INSERT INTO events (run_id, seq, data) VALUES (?, ?, ?)", rows)
            db.execute("UPDATE runs SET last_seq = ? WHERE run_id = ?", (seq, run_id))
        return seq

    def set_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET progress = ? WHERE run_id = ?", (json.dumps(progress), run_id))

    def finish(self, run_id: str, state: str, message: str = "", summary: Optional[dict[str, Any]] = None) -> None:
        assert state in ENDED, state
        with self._write() as db:
            db.execute("UPDATE runs SET state = ?, ended = ?, message = ?, summary = ? WHERE run_id = ?",
                       (state, time.time(), message, json.dumps(summary or {}), run_id))
            db.execute("UPDATE workers SET run_id = NULL WHERE run_id = ?", (run_id,))

    def request_stop(self, run_id: str) -> bool:
        """Ask the worker training this run to stop; False if it is not running."""
        with self._write() as db:
            return db.execute("UPDATE runs SET stop_requested = 1 WHERE run_id = ? AND state = 'running'",
                              (run_id,)).rowcount == 1

    def stop_requested(self, run_id: str) -> bool:
        row = self._one("SELECT stop_requested FROM runs WHERE run_id = ?", run_id)
        return bool(row and row["stop_requested"])

    def request_pause(self, run_id: str, paused: bool = True) -> bool:
        """Ask the worker training this run to pause (or to resume); False if it is not running.
        Resuming also ends the teacher's leave for queued runs to go first."""
        with self._write() as db:
            return db.execute("UPDATE runs SET pause_requested = ?, queue_may_pass = queue_may_pass * ? "
                              "WHERE run_id = ? AND state = 'running'", (int(paused), int(paused), run_id)).rowcount == 1

    def let_queue_pass(self, run_id: str, allowed: bool = True) -> bool:
        """Let queued runs train while this paused run waits (the teacher's call); False if it is not paused."""
        with self._write() as db:
            return db.execute("UPDATE runs SET queue_may_pass = ? WHERE run_id = ? AND state = 'running' "
                              "AND pause_requested = 1", (int(allowed), run_id)).rowcount == 1

    def controls(self, run_id: str) -> tuple[bool, bool, bool]:
        """What the pages ask of a running run: (stop, pause, let the queue pass)."""
        row = self._one("SELECT stop_requested, pause_requested, queue_may_pass FROM runs WHERE run_id = ?", run_id)
        if row is None:
            return False, False, False
        return bool(row["stop_requested"]), bool(row["pause_requested"]), bool(row["queue_may_pass"])

    def cancel(self, run_id: str) -> bool:
        """Take a queued run out of the queue; False if it had already started or ended."""
        with self._write() as db:
            return db.execute("UPDATE runs SET state = 'cancelled', ended = ?, message = 'Cancelled before it started.' "
                              "WHERE run_id = ? AND state = 'queued'", (time.time(), run_id)).rowcount == 1

    def clear_queue(self) -> int:
        with self._write() as db:
            return db.execute("UPDATE runs SET state = 'cancelled', ended = ?, message = 'Cancelled before it started: "
                              "the queue was cleared.' WHERE state = 'queued'", (time.time(),)).rowcount

    def get(self, run_id: str) -> Optional[RunRecord]:
        row = self._one("SELECT * FROM runs WHERE run_id = ?", run_id)
        return _record(row) if row else None

    def events_after(self, run_id: str, seq: int = 0, limit: int = 100_000) -> list[Event]:
        rows = self._all("SELECT data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?", run_id, seq, limit)
        return [json.loads(row["data"]) for row in rows]

    def queue(self) -> list[RunRecord]:
        """Queued runs in the order they will start."""
        return [_record(row) for row in self._all("SELECT * FROM runs WHERE state = 'queued' ORDER BY submitted, run_id")]

    def running(self) -> list[RunRecord]:
        return [_record(row) for row in self._all("SELECT * FROM runs WHERE state = 'running' ORDER BY started")]

    def runs(self, states: Iterable[str] = SAVED, limit: int = 1000) -> list[RunRecord]:
        """Runs in these states, newest first."""
        states = tuple(states)
        marks = ",".join("?" * len(states))
        rows = self._all(f"SELECT * FROM runs WHERE state IN ({marks}) ORDER BY submitted DESC LIMIT ?", *states, limit)
        return [_record(row) for row in rows]

    def latest_speeds(self, looked_at: int = 50) -> "Speeds":
        """Images per second of the run training now and of the latest runs that measured one, by network
        and training path: the newest measurement of each."""
        measured: dict[tuple, float] = {}
        for row in self._all("SELECT config, progress, summary FROM runs WHERE state IN ('running', 'finished', 'stopped') "
                             "ORDER BY state = 'running' DESC, submitted DESC LIMIT ?", looked_at):
            config = TrainConfig.from_dict(json.loads(row["config"]))
            if config is None or speed_key(config) in measured:
                continue
            for blob in (row["progress"], row["summary"]):
                speed = json.loads(blob).get("images_per_second")
                if speed:
                    measured[speed_key(config)] = float(speed)
                    break
        return Speeds(measured)

    def heartbeat(self, worker_id: str, pid: int) -> None:
        with self._write() as db:
            db.execute("INSERT INTO workers (worker_id, pid, heartbeat) VALUES (?, ?, ?) ON CONFLICT (worker_id) "
                       "DO UPDATE SET pid = excluded.pid, heartbeat = excluded.heartbeat", (worker_id, pid, time.time()))

    def interrupt(self, worker_id: Optional[str] = None) -> list[str]:
        """Mark as interrupted the runs left running by a worker that died (any worker's if None)."""
        where, args = ("state = 'running' AND worker = ?", (worker_id,)) if worker_id else ("state = 'running'", ())
        with self._write() as db:
            ids = [row["run_id"] for row in db.execute(f"SELECT run_id FROM runs WHERE {where}", args)]
            for run_id in ids:
                (seq,) = db.execute("SELECT last_seq FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                message = ("Interrupted: the server or its training worker stopped while this run was training. "
                           "Its curves up to then are kept; no model was saved.")
                db.execute("INSERT INTO events (run_id, seq, data) VALUES (?, ?, ?)",
                           (run_id, seq + 1, json.dumps({"event": "end", "status": "interrupted", "reason": message,
                                                         "seq": seq + 1, "time": time.time()})))
                db.execute("UPDATE runs SET state = 'interrupted', ended = ?, message = ?, last_seq = ? WHERE run_id = ?",
                           (time.time(), message, seq + 1, run_id))
            if worker_id:
                db.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))
        return ids

    def pin(self, run_id: str, pinned: bool = True) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET pinned = ? WHERE run_id = ?", (int(pinned), run_id))

    def delete(self, run_id: str) -> bool:
        """Remove an ended run: its rows, its events and its folder. False if it is queued or running."""
        with self._write() as db:
            gone = db.execute(f"DELETE FROM runs WHERE run_id = ? AND state IN ({','.join('?' * len(ENDED))})",
                              (run_id, *ENDED)).rowcount == 1
            if gone:
                db.execute("DELETE FROM events WHERE run_id = ?", (run_id,))
        if gone and valid_run_id(run_id):
            shutil.rmtree(self.runs_dir / run_id, ignore_errors=True)
        return gone

    def prune(self, keep: int = RUNS_KEPT) -> list[str]:
        """Delete the oldest ended runs that are not pinned, so that at most `keep` ended runs remain."""
        marks = ",".join("?" * len(ENDED))
        rows = self._all(f"SELECT run_id, pinned FROM runs WHERE state IN ({marks}) ORDER BY submitted DESC", *ENDED)
        unpinned = [row["run_id"] for row in rows if not row["pinned"]]
        excess = max(0, len(rows) - keep)
        doomed = unpinned[len(unpinned) - min(excess, len(unpinned)):] if excess else []
        return [run_id for run_id in doomed if self.delete(run_id)]

    def adopt_folders(self) -> list[str]:
        """Add saved runs that exist only as folders (trained by the CLI into this folder, or uploaded) to the store."""
        known = {row["run_id"] for row in self._all("SELECT run_id FROM runs")}
        adopted = []
        for folder in sorted(self.runs_dir.iterdir()) if self.runs_dir.is_dir() else []:
            if folder.name in known or not valid_run_id(folder.name) or not (folder / MODEL_FILE).is_file():
                continue
            try:
                metrics = json.loads((folder / METRICS_FILE).read_text())
                config = TrainConfig(**{k: v for k, v in metrics.get("config", {}).items()
                                        if k in TrainConfig.__dataclass_fields__})
            except (OSError, ValueError, TypeError):
                continue
            created = float(metrics.get("created", folder.stat().st_mtime))
            state = metrics.get("status") if metrics.get("status") in SAVED else "finished"
            with self._write() as db:
                db.execute("INSERT INTO runs (run_id, owner, owner_name, config, state, submitted, started, ended, message, "
                           "summary) VALUES (?, '', ?, ?, ?, ?, ?, ?, ?, ?)",
                           (folder.name, "uploaded" if metrics.get("uploaded") else "command line",
                            json.dumps(config.to_dict()), state, created, created, created,
                            metrics.get("reason", ""), json.dumps(summary_of(metrics))))
            adopted.append(folder.name)
        return adopted

    def clean_debris(self) -> list[Path]:
        """Delete what a crash mid-run or mid-save leaves in the folders of ended runs: partial files,
        and folders with no saved model. Folders the store does not know (a command-line run still
        training, anything else in the folder) are left alone. Returns what was removed."""
        marks = ",".join("?" * len(ENDED))
        ended = [row["run_id"] for row in self._all(f"SELECT run_id FROM runs WHERE state IN ({marks})", *ENDED)]
        removed = []
        for folder in (self.runs_dir / run_id for run_id in ended if valid_run_id(run_id)):
            if not folder.is_dir():
                continue
            for partial in folder.glob("*.partial*"):
                partial.unlink(missing_ok=True)
                removed.append(partial)
            if not (folder / MODEL_FILE).is_file():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed


def summary_of(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few figures of a saved run's metrics that lists and labels need."""
    history = metrics.get("history", [])
    return {
        "test_accuracy": metrics.get("test_accuracy"), "test_loss": metrics.get("test_loss"),
        "epochs_trained": len(history), "images_per_second": metrics.get("images_per_second"),
        "train_seconds": metrics.get("train_seconds"),
    }


RUN_OVERHEAD_SECONDS = 15.0  # building the network, testing and saving, around the training itself
FULL_TRAINING_SET = 50_000  # CIFAR-10's training images, what a run with no train_size trains on
TEST_SET = 10_000  # CIFAR-10's test images


def speed_key(config: TrainConfig) -> tuple:
    """What a run's training speed depends on most: its network, and whether the fast step trains it."""
    fast = config.fast_step and config.network == SEED_NETWORK
    return (*config.network.values(), "fast" if fast else "plain")


@dataclass(frozen=True)
class Speeds:
    """The training speeds this server measured, by speed_key: a time is promised only from the speed
    of the same network, never from another's, which may train at a very different speed."""

    measured: dict[tuple, float] = field(default_factory=dict)

    def of(self, config: TrainConfig) -> Optional[float]:
        """Images per second this server trains the config's network at, if it has trained it."""
        return self.measured.get(speed_key(config))

    def __bool__(self) -> bool:
        return bool(self.measured)


def expected_seconds(config: TrainConfig, images_per_second: float) -> float:
    """How long a run of this config should take at the measured training speed."""
    images = config.train_size or FULL_TRAINING_SET
    checked = {"test": TEST_SET, "held_out": held_out_size(config.train_size), "none": 0}[config.validation]
    if config.validation == "held_out":
        images -= checked
    # Checking an image costs about a third of training on it.
    return RUN_OVERHEAD_SECONDS + config.epochs * (images + checked / 3) / images_per_second


def expected_starts(running: list[RunRecord], queued: list[RunRecord], speeds: Speeds) -> list[Optional[float]]:
    """Seconds from now until each queued run should start, one worker taking them in order; None
    from the first run on whose time is not known: a network this server has not measured yet."""
    wait: Optional[float] = 0.0
    for run in running:
        left = run.progress.get("remaining")
        speed = speeds.of(run.config)
        if left is None and speed is None:
            wait = None
            break
        done = run.progress.get("progress", 0.0)
        wait = max(wait, left if left is not None else expected_seconds(run.config, speed) * (1 - done))
    starts: list[Optional[float]] = []
    for run in queued:
        starts.append(wait)
        speed = speeds.of(run.config)
        wait = None if wait is None or speed is None else wait + expected_seconds(run.config, speed)
    return starts
