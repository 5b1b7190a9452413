"""The pages' one interface to training: submit a run, stop or cancel it, read its events.

`Trainer` is that interface. `LocalTrainer`, the embedded default, is the run store in the runs
folder plus the worker processes this server starts itself (`python -m cifar.worker`), and
restarts when one dies: the run it was training is then marked interrupted. Workers on other
machines, run by a job engine, can take the same place by implementing `Trainer`, without
touching the pages.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Optional, Protocol

from cifar.config import TrainConfig
from cifar.runstore import QUEUE_LIMIT, RUNS_KEPT, Event, RunRecord, RunStore

log = logging.getLogger(__name__)
WATCH_SECONDS = 1.0  # how soon a dead worker is noticed and replaced
ROOT = Path(__file__).resolve().parent.parent


class Trainer(Protocol):
    store: RunStore

    def submit(self, config: TrainConfig, owner: str, owner_name: str = "",
               watch: Optional[list[dict[str, Any]]] = None) -> str: ...
    def stop(self, run_id: str) -> bool: ...
    def pause(self, run_id: str, paused: bool = True) -> bool: ...
    def cancel(self, run_id: str) -> bool: ...
    def run(self, run_id: str) -> Optional[RunRecord]: ...
    def events(self, run_id: str, after: int = 0) -> list[Event]: ...


class LocalTrainer:
    """The run store plus `workers` local worker processes, started now and kept alive."""

    def __init__(self, runs_dir: str | Path, data: Optional[str] = None, workers: int = 1,
                 runs_kept: int = RUNS_KEPT, queue_limit: int = QUEUE_LIMIT) -> None:
        self.runs_dir, self.data = Path(runs_dir), data
        self.runs_kept, self.queue_limit = runs_kept, queue_limit
        self.store = RunStore(self.runs_dir)
        # No worker of this server is alive yet: whatever the store says is running was cut short.
        interrupted = self.store.interrupt()
        if interrupted:
            log.warning("runs interrupted by the last shutdown: %s", ", ".join(interrupted))
        self.store.clean_debris()
        self.store.adopt_folders()
        self.store.prune(self.runs_kept)
        self._workers: dict[str, Optional[subprocess.Popen]] = {f"local-{i + 1}": None for i in range(max(1, workers))}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # Workers start from this long-lived thread only: Linux ends a worker with the thread that started it
        # (PR_SET_PDEATHSIG), and the thread that makes a trainer may be a page's, which ends with the page run.
        threading.Thread(target=self._watch, name="worker-watch", daemon=True).start()

    def _start_worker(self, worker_id: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "cifar.worker", "--runs-dir", str(self.runs_dir), "--worker-id", worker_id,
                   "--parent-pid", str(os.getpid())]
        if self.data:
            command += ["--data", self.data]
        return subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL)

    def keep_workers_alive(self) -> None:
        with self._lock:
            if self._closed.is_set():  # a worker ended by shutdown() is not replaced
                return
            for worker_id, process in self._workers.items():
                if process is not None and process.poll() is None:
                    continue
                if process is not None:
                    lost = self.store.interrupt(worker_id)
                    self.store.clean_debris()  # the interrupted run's folder holds no model
                    log.warning("worker %s ended (exit code %s); interrupted %s; starting a new one",
                                worker_id, process.returncode, lost or "no run")
                self._workers[worker_id] = self._start_worker(worker_id)

    def _watch(self) -> None:
        while not self._closed.is_set():
            try:
                self.keep_workers_alive()
                self.store.prune(self.runs_kept)
            except Exception:  # the watcher must outlive any one failure
                log.exception("keeping the workers alive failed")
            self._closed.wait(WATCH_SECONDS)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [process.pid for process in self._workers.values() if process is not None and process.poll() is None]

    def submit(self, config: TrainConfig, owner: str, owner_name: str = "",
               watch: Optional[list[dict[str, Any]]] = None) -> str:
        return self.store.submit(config, owner, owner_name, self.queue_limit, watch)

    def stop(self, run_id: str) -> bool:
        return self.store.request_stop(run_id)

    def pause(self, run_id: str, paused: bool = True) -> bool:
        return self.store.request_pause(run_id, paused)

    def cancel(self, run_id: str) -> bool:
        return self.store.cancel(run_id)

    def run(self, run_id: str) -> Optional[RunRecord]:
        return self.store.get(run_id)

    def events(self, run_id: str, after: int = 0) -> list[Event]:
        return self.store.events_after(run_id, after)

    def shutdown(self) -> None:
        self._closed.set()
        with self._lock:
            for process in self._workers.values():
                if process is not None and process.poll() is None:
                    process.terminate()
            for process in self._workers.values():
                if process is not None:
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        process.kill()
