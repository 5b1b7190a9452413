"""The training worker and the trainer that keeps it alive (cifar.worker, cifar.service): curve
points thinned without changing what they say, a stop while the data loads, and, with real worker
processes on the tiny archive, a worker killed mid-run, a queued run that outlives a restart, the
queue's order, cancelling, a dead worker replaced, and a shutdown that stays shut."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest

from cifar.config import TrainConfig
from cifar.runstore import RunStore
from cifar.store import MODEL_FILE
from cifar.worker import RunRecorder, Worker

ROOT = Path(__file__).resolve().parent.parent
LONG = TrainConfig(epochs=50, validation="none")  # far longer than any test waits for
SHORT = TrainConfig(epochs=1, train_size=200, validation="none")
Event = dict[str, Any]


def wait_for(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.1)
    return result


def curve_points(store: RunStore, run_id: str) -> list[Event]:
    return [event for event in store.events_after(run_id) if event["event"] == "batch"]


def training_stream(epochs: int, train_size: int, images_per_event: int, seed: int, stop_after: int = 0) -> list[Event]:
    """Events shaped like cifar.train.fit's (see its docstring), with random losses; stop_after > 0 stops
    the run after that many batch events, mid-epoch, as a stop request does."""
    rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(train_size / 32)
    events: list[Event] = [{"event": "start", "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                            "train_size": train_size, "config": {}}]
    images_done = batches = 0
    for epoch in range(1, epochs + 1):
        images_in_epoch = 0
        while images_in_epoch < train_size:
            images = min(images_per_event, train_size - images_in_epoch)
            images_in_epoch += images
            images_done += images
            events.append({
                "event": "batch", "epoch": epoch, "step": math.ceil(images_in_epoch / 32), "steps_per_epoch": steps_per_epoch,
                "loss": float(rng.uniform(0.5, 2.5)), "accuracy": float(rng.uniform(0, 1)), "images": images,
                "images_done": images_done, "epoch_loss": 1.0, "epoch_accuracy": 0.5, "images_per_second": 1000.0,
                "elapsed": images_done / 1000, "remaining": 1.0, "progress": images_done / (epochs * train_size),
            })
            batches += 1
            if batches == stop_after:
                return events + [{"event": "end", "status": "stopped", "reason": "Stopped by request."}]
        events.append({"event": "epoch", "epoch": epoch, "loss": 1.0, "accuracy": 0.5})
    return events + [{"event": "end", "status": "finished", "reason": f"Trained {epochs} epochs."}]


def check_curve_points(points: list[Event], raw: list[Event], most: int) -> None:
    """Each stored point is the images-weighted mean of the raw batches since the point before, all of one epoch."""
    raw_batches = [event for event in raw if event["event"] == "batch"]
    assert len(raw_batches) > 3 * most  # far more batches than points, or nothing was thinned
    epochs = len({event["epoch"] for event in raw_batches})
    assert 0 < len(points) <= most + epochs
    covered_up_to = 0
    for point in points:
        covers = [b for b in raw_batches if covered_up_to < b["images_done"] <= point["images_done"]]
        assert covers, "a point that covers no batch"
        assert {b["epoch"] for b in covers} == {point["epoch"]}  # never across an epoch's end
        weights = [b["images"] for b in covers]
        assert point["images"] == sum(weights)
        assert point["loss"] == pytest.approx(np.average([b["loss"] for b in covers], weights=weights), rel=1e-12)
        assert point["accuracy"] == pytest.approx(np.average([b["accuracy"] for b in covers], weights=weights), rel=1e-12)
        assert (point["step"], point["progress"]) == (covers[-1]["step"], covers[-1]["progress"])
        covered_up_to = point["images_done"]
    assert covered_up_to == raw_batches[-1]["images_done"]  # the curve reaches the last batch trained


@pytest.mark.parametrize("stop_after", [0, 170], ids=["finished", "stopped mid-epoch"])
def test_the_recorder_thins_batches_to_weighted_means_that_never_cross_an_epoch(tmp_path, stop_after):
    store = RunStore(tmp_path)
    run_id = store.submit(LONG, owner="teacher")
    raw = training_stream(epochs=3, train_size=10_000, images_per_event=96, seed=stop_after, stop_after=stop_after)
    record = RunRecorder(store, run_id, points=20)  # 1,500 images a point: epochs of 10,000 end mid-point
    for event in raw:
        record(event)
    check_curve_points(curve_points(store, run_id), raw, most=20)
    others = [event for event in store.events_after(run_id) if event["event"] != "batch"]
    assert [(e["event"], e.get("epoch")) for e in others] == [(e["event"], e.get("epoch")) for e in raw if e["event"] != "batch"]
    last_batch = [event for event in raw if event["event"] == "batch"][-1]
    assert store.get(run_id).progress["images_done"] == last_batch["images_done"]  # the latest figures, in the run's row


def test_the_recorder_thins_a_real_training_stream(tmp_path):
    pytest.importorskip("keras")
    from cifar.model import build_model
    from cifar.train import fit
    from tests.synthetic import learnable_images

    raw: list[Event] = []
    fit(build_model(10), learnable_images(600, seed=0), TrainConfig(epochs=6, validation="none"), on_event=raw.append)
    store = RunStore(tmp_path)
    run_id = store.submit(LONG, owner="teacher")
    record = RunRecorder(store, run_id, points=3)
    for event in raw:
        record(event)
    check_curve_points(curve_points(store, run_id), raw, most=3)


def test_a_stop_while_the_data_loads_ends_the_run_stopped_and_leaves_no_folder(tmp_path, monkeypatch):
    worker = Worker(tmp_path, worker_id="local-1")
    run_id = worker.store.submit(TrainConfig(epochs=1), owner="teacher")
    run = worker.store.claim("local-1")
    reports = []

    def slow_download(path, progress):
        for chunk in range(1, 100):
            if chunk == 3:
                assert worker.store.request_stop(run_id)  # as a viewer pressing Stop during a download
            progress({"event": "download", "bytes_done": chunk, "bytes_total": 100})
            reports.append(chunk)
        raise AssertionError("the download went on after the stop")

    monkeypatch.setattr("cifar.worker.load_data", slow_download)
    worker.train(run)
    assert reports == [1, 2]  # the third report raised instead of continuing the download
    ended = worker.store.get(run_id)
    assert ended.state == "stopped" and "while the data was loading" in ended.message
    last = worker.store.events_after(run_id)[-1]
    assert last["event"] == "end" and last["status"] == "stopped" and "while the data was loading" in last["reason"]
    assert not (tmp_path / run_id).exists()


def test_a_run_whose_data_is_missing_fails_with_the_loaders_message(tmp_path):
    worker = Worker(tmp_path / "runs", data=str(tmp_path / "nowhere"), worker_id="local-1")
    run_id = worker.store.submit(TrainConfig(epochs=1), owner="teacher")
    worker.train(worker.store.claim("local-1"))
    run = worker.store.get(run_id)
    assert run.state == "failed" and "No CIFAR data at" in run.message
    last = worker.store.events_after(run_id)[-1]
    assert last["event"] == "failed" and last["message"] == run.message


@pytest.fixture(scope="module")
def restarted(tmp_path_factory, tiny_archive):
    """A worker killed with SIGKILL mid-run, a run queued while none runs, then the next server start: a
    LocalTrainer on the same folder, made (as Streamlit makes it) in a thread that then ends."""
    from cifar.service import LocalTrainer

    runs = tmp_path_factory.mktemp("runs")
    store = RunStore(runs)
    cut_short = store.submit(LONG, owner="teacher")
    worker = subprocess.Popen([sys.executable, "-m", "cifar.worker", "--runs-dir", str(runs), "--data", str(tiny_archive),
                               "--worker-id", "local-1", "--parent-pid", str(os.getpid())], cwd=ROOT)
    try:
        wait_for(lambda: len(curve_points(store, cut_short)) >= 2, 90, "the worker's first curve points")
        os.kill(worker.pid, signal.SIGSTOP)  # frozen first, so what it had stored is known when it dies
        stored_before = store.events_after(cut_short)
        folder_existed = (runs / cut_short).is_dir()
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        worker.kill()
    waiting = RunStore(runs).submit(SHORT, owner="student")  # that store is dropped: only the file remembers

    made: dict[str, Any] = {}

    def page_thread() -> None:
        made["trainer"] = trainer = LocalTrainer(runs, data=str(tiny_archive))
        made["clean"] = sorted(path.relative_to(runs) for path in runs.rglob("*") if "runs.sqlite3" not in path.name)
        wait_for(lambda: trainer.store.get(waiting).state == "running", 30, "the new worker to take the queued run")
        made["first_pid"] = trainer.worker_pids()

    thread = threading.Thread(target=page_thread)
    thread.start()
    thread.join(60)
    try:
        assert "first_pid" in made
        yield SimpleNamespace(runs=runs, cut_short=cut_short, stored_before=stored_before,
                              folder_existed=folder_existed, waiting=waiting, **made)
    finally:
        if "trainer" in made:
            made["trainer"].shutdown()


def test_a_worker_killed_mid_run_leaves_an_interrupted_run_with_all_its_events_and_no_debris(restarted):
    store = restarted.trainer.store
    run = store.get(restarted.cut_short)
    assert run.state == "interrupted" and "Interrupted" in run.message
    events = store.events_after(run.run_id)
    assert events[:-1] == restarted.stored_before  # every event it had stored, unchanged
    assert events[-1]["event"] == "end" and events[-1]["status"] == "interrupted"
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert restarted.folder_existed  # it had made its folder, with nothing saved in it
    # What the folder held just after the restart, before the new worker began: the store alone.
    assert restarted.clean == []


def test_a_run_queued_before_a_restart_is_trained_after_it(restarted):
    store = restarted.trainer.store
    run = wait_for(lambda: (run := store.get(restarted.waiting)).state not in ("queued", "running") and run, 90,
                   "the queued run to end")
    assert run.state == "finished", run.message
    assert (restarted.runs / run.run_id / MODEL_FILE).is_file()
    assert [event["event"] for event in store.events_after(run.run_id)][-1] == "saved"


def test_the_worker_outlives_the_thread_that_made_the_trainer(restarted):
    wait_for(lambda: restarted.trainer.store.get(restarted.waiting).state != "running", 90, "the queued run to end")
    assert restarted.trainer.worker_pids() == restarted.first_pid  # the same worker, never killed and replaced


def test_runs_start_in_submission_order_and_a_cancelled_one_is_never_trained(restarted):
    trainer = restarted.trainer
    first = trainer.submit(TrainConfig(epochs=2, train_size=600, validation="none"), owner="a")
    cancelled = trainer.submit(SHORT, owner="b")
    second = trainer.submit(SHORT, owner="c")
    assert trainer.cancel(cancelled)
    wait_for(lambda: trainer.run(first).state == "running", 60, "the first run to start")
    assert not trainer.cancel(first)  # a running run is stopped, not cancelled
    wait_for(lambda: trainer.run(second).state not in ("queued", "running"), 90, "the second run to end")
    first_run, second_run = trainer.run(first), trainer.run(second)
    assert first_run.state == second_run.state == "finished"
    assert first_run.ended <= second_run.started  # one worker, one run at a time, in order
    events = trainer.events(first)
    for epoch in (event for event in events if event["event"] == "epoch"):  # the stored curve adds up to each epoch
        points = [event for event in events if event["event"] == "batch" and event["epoch"] == epoch["epoch"]]
        assert sum(point["images"] for point in points) == 600
        assert np.average([p["loss"] for p in points], weights=[p["images"] for p in points]) == pytest.approx(epoch["loss"])
    skipped = trainer.run(cancelled)
    assert skipped.state == "cancelled" and skipped.started is None and trainer.events(cancelled) == []
    assert not (restarted.runs / cancelled).exists()


def test_a_worker_that_dies_is_replaced_and_its_run_marked_interrupted(restarted):
    trainer = restarted.trainer
    store = trainer.store
    doomed = trainer.submit(LONG, owner="teacher")
    after = trainer.submit(SHORT, owner="student")
    wait_for(lambda: curve_points(store, doomed), 90, "the long run's first curve point")
    [old_pid] = trainer.worker_pids()
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: store.get(doomed).state == "interrupted", 8, "the run to be marked interrupted")
    assert store.events_after(doomed)[-1]["status"] == "interrupted"
    [new_pid] = wait_for(lambda: [pid for pid in trainer.worker_pids() if pid != old_pid], 8, "a new worker")
    run = wait_for(lambda: (run := store.get(after)).state not in ("queued", "running") and run, 90,
                   "the next run to end")
    assert run.state == "finished", run.message
    assert run.started > store.get(doomed).ended  # taken by the new worker, after the old one's death
    assert trainer.worker_pids() == [new_pid]


def test_after_shutdown_no_worker_is_restarted(restarted):
    from cifar.service import WATCH_SECONDS

    trainer = restarted.trainer
    pids = trainer.worker_pids()
    assert pids
    trainer.shutdown()
    queued = trainer.submit(SHORT, owner="late")
    time.sleep(2.5 * WATCH_SECONDS)  # the watcher would have replaced them by now
    assert trainer.worker_pids() == []
    assert trainer.run(queued).state == "queued"


def test_a_paused_run_holds_the_queue_until_the_teacher_lets_it_pass_then_resumes(tmp_path, tiny_archive):
    from cifar.snapshots import upload_item

    worker = Worker(tmp_path / "runs", data=str(tiny_archive), worker_id="local-1")
    store, done = worker.store, threading.Event()
    picture = np.full((32, 32, 3), 200, np.uint8)
    paused_run = store.submit(LONG, owner="teacher", watch=[upload_item("mine.png", picture), {"test_index": 0}])
    waiting = store.submit(SHORT, owner="student")
    serving = threading.Thread(target=worker.serve, kwargs=dict(until=done.is_set), daemon=True)
    serving.start()
    try:
        wait_for(lambda: curve_points(store, paused_run), 90, "the first curve point")
        assert store.request_pause(paused_run)
        wait_for(lambda: any(e["event"] == "paused" for e in store.events_after(paused_run)), 10, "the pause")
        steps = len(curve_points(store, paused_run))
        time.sleep(1.5)
        assert store.get(waiting).state == "queued"  # a paused run still holds the worker
        assert len(curve_points(store, paused_run)) == steps and store.get(paused_run).progress["paused"]
        assert store.let_queue_pass(paused_run)
        passed = wait_for(lambda: (run := store.get(waiting)).state not in ("queued", "running") and run, 90,
                          "the queued run to pass")
        assert passed.state == "finished", passed.message
        assert store.get(paused_run).state == "running" and len(curve_points(store, paused_run)) == steps
        assert store.request_pause(paused_run, False)
        wait_for(lambda: len(curve_points(store, paused_run)) > steps, 30, "training to go on")
        assert not store.get(paused_run).queue_may_pass  # the leave ended with the pause
        store.request_stop(paused_run)
        wait_for(lambda: store.get(paused_run).state == "stopped", 30, "the stop")
    finally:
        done.set()
        serving.join(30)
    events = store.events_after(paused_run)
    [watch_list] = [e for e in events if e["event"] == "watch_list"]
    assert [item.get("name") for item in watch_list["items"]] == ["mine.png", None]
    from tests.synthetic import learnable_images

    assert watch_list["items"][1]["label"] == learnable_images(200, seed=1)[1][0]  # the tiny archive's test labels
    first = next(e for e in events if e["event"] == "snapshot")
    assert first["epoch"] == 0 and np.array(first["watch"]).shape[0] == 2
    kinds = [e["event"] for e in events]
    assert kinds.index("paused") < kinds.index("resumed")
