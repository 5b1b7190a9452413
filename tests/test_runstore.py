"""The run store (cifar.runstore) on a real SQLite file: events read from any point, two processes
at once, the queue's order and limit, cancelling, interrupted runs, the cap on kept runs, and
what it adopts and cleans up in the runs folder. No TensorFlow: the store never needs it."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cifar.config import TrainConfig
from cifar.runstore import QueueFull, RunStore
from cifar.store import METRICS_FILE, MODEL_FILE

ROOT = Path(__file__).resolve().parent.parent
QUICK = TrainConfig(epochs=1)


def ended_run(store: RunStore, state: str = "finished", with_folder: bool = True) -> str:
    """A run taken through the queue to `state`, with a folder holding a (stand-in) model if it saved one."""
    run_id = store.submit(QUICK, owner="teacher")
    assert store.claim("worker-1").run_id == run_id
    store.append(run_id, [{"event": "start"}, {"event": "end", "status": state}])
    store.finish(run_id, state)
    if with_folder:
        (store.runs_dir / run_id).mkdir()
        (store.runs_dir / run_id / MODEL_FILE).write_bytes(b"a model")
    return run_id


def test_events_read_from_an_offset_are_exactly_the_later_ones_numbered_in_order(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.submit(QUICK, owner="a")
    sent = [{"event": "batch", "step": step} for step in range(1, 11)]
    assert store.append(run_id, sent[:4]) == 4
    assert store.append(run_id, sent[4:]) == 10
    for offset in (0, 3, 4, 9, 10):
        later = store.events_after(run_id, offset)
        assert [event["seq"] for event in later] == list(range(offset + 1, 11))
        assert [event["step"] for event in later] == [event["step"] for event in sent[offset:]]
    assert store.get(run_id).last_seq == 10
    other = store.submit(QUICK, owner="b")
    assert store.events_after(other, 0) == []  # numbered per run: another run's events are not its own


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from cifar.runstore import RunStore

    store, run_id, told_to_stop = RunStore(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    i = 0
    while not told_to_stop.exists():
        store.append(run_id, [{"event": "batch", "i": i}, {"event": "batch", "i": i + 1}])
        i += 2
""")


def test_two_processes_write_and_read_at_once_without_losing_or_repeating_an_event(tmp_path):
    store = RunStore(tmp_path / "runs")
    theirs, ours = store.submit(QUICK, owner="child"), store.submit(QUICK, owner="parent")
    told_to_stop = tmp_path / "stop"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(store.runs_dir), theirs, str(told_to_stop)], cwd=ROOT,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not store.events_after(theirs, 0, limit=1):  # start once the child is writing
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the child never wrote"
            time.sleep(0.01)
        theirs_when_we_started = store.get(theirs).last_seq
        read_of_theirs = []
        for i in range(300):
            store.append(ours, [{"event": "batch", "i": i}])
            read_of_theirs += store.events_after(theirs, read_of_theirs[-1]["seq"] if read_of_theirs else 0)
        theirs_when_we_ended = store.get(theirs).last_seq
    finally:
        told_to_stop.touch()
        _, errors = child.communicate(timeout=60)
    assert child.returncode == 0, errors  # e.g. "database is locked"
    assert theirs_when_we_started < theirs_when_we_ended  # the two really wrote at the same time

    mine = store.events_after(ours)
    assert [event["seq"] for event in mine] == list(range(1, 301)) and [event["i"] for event in mine] == list(range(300))
    child_events = store.events_after(theirs, limit=10**8)  # a fast child writes more than a page's default read
    assert len(child_events) >= theirs_when_we_ended
    assert [event["seq"] for event in child_events] == list(range(1, len(child_events) + 1))
    assert [event["i"] for event in child_events] == list(range(len(child_events)))
    # What we read while it wrote is a gapless prefix of what it wrote: no event seen twice, none skipped.
    assert [event["seq"] for event in read_of_theirs] == list(range(1, len(read_of_theirs) + 1))
    assert read_of_theirs == child_events[: len(read_of_theirs)]


def test_runs_are_claimed_in_the_order_they_were_submitted(tmp_path):
    store = RunStore(tmp_path)
    submitted = [store.submit(TrainConfig(epochs=epochs), owner=f"student {epochs}") for epochs in (3, 1, 2)]
    assert [run.run_id for run in store.queue()] == submitted
    claimed = [store.claim("worker-1") for _ in submitted]
    assert [run.run_id for run in claimed] == submitted
    assert [run.config.epochs for run in claimed] == [3, 1, 2]  # each run keeps its own config
    assert all(run.state == "running" for run in claimed)
    assert store.claim("worker-1") is None


def test_cancel_takes_a_queued_run_out_but_not_a_running_one(tmp_path):
    store = RunStore(tmp_path)
    running, cancelled, waiting = (store.submit(QUICK, owner=name) for name in ("a", "b", "c"))
    assert store.claim("worker-1").run_id == running
    assert store.cancel(cancelled)
    assert not store.cancel(running) and store.get(running).state == "running"
    assert store.claim("worker-1").run_id == waiting  # the cancelled run is skipped
    assert store.get(cancelled).state == "cancelled" and store.get(cancelled).ended is not None
    assert not store.cancel(cancelled)  # once is enough
    assert not store.request_stop(cancelled)  # only a running run can be stopped
    assert store.request_stop(running) and store.stop_requested(running)


def test_a_full_queue_refuses_one_more_run_with_a_clear_message(tmp_path):
    store = RunStore(tmp_path)
    for student in range(3):
        store.submit(QUICK, owner=f"student {student}", limit=3)
    with pytest.raises(QueueFull, match="queue is full: 3 runs are waiting"):
        store.submit(QUICK, owner="one too many", limit=3)
    assert len(store.queue()) == 3
    store.claim("worker-1")  # a run starts, which frees a place
    store.submit(QUICK, owner="now there is room", limit=3)
    assert len(store.queue()) == 3


def test_clearing_the_queue_cancels_every_queued_run_and_nothing_else(tmp_path):
    store = RunStore(tmp_path)
    running = store.submit(QUICK, owner="a")
    store.claim("worker-1")
    queued = [store.submit(QUICK, owner=name) for name in ("b", "c")]
    assert store.clear_queue() == 2
    assert [store.get(run_id).state for run_id in queued] == ["cancelled", "cancelled"]
    assert store.get(running).state == "running"


def test_interrupting_a_dead_workers_runs_ends_them_with_an_interrupted_event(tmp_path):
    store = RunStore(tmp_path)
    lost, elsewhere, queued = (store.submit(QUICK, owner=name) for name in ("a", "b", "c"))
    store.claim("worker-1")
    store.claim("worker-2")
    store.append(lost, [{"event": "start"}, {"event": "batch", "loss": 2.0}])
    assert store.interrupt("worker-1") == [lost]
    events = store.events_after(lost)
    assert [event["seq"] for event in events] == [1, 2, 3]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "interrupted"
    assert store.get(lost).state == "interrupted" and "Interrupted" in store.get(lost).message
    assert store.get(elsewhere).state == "running" and store.get(queued).state == "queued"
    assert store.interrupt() == [elsewhere]  # None: every worker's
    assert store.get(queued).state == "queued"


def test_prune_deletes_the_oldest_unpinned_ended_runs_and_never_pinned_queued_or_running_ones(tmp_path):
    store = RunStore(tmp_path)
    oldest_pinned = ended_run(store)
    store.pin(oldest_pinned)
    ended = [ended_run(store, state) for state in ("finished", "stopped", "failed", "interrupted", "finished")]
    running = store.submit(QUICK, owner="training now")
    store.claim("worker-1")
    queued = store.submit(QUICK, owner="waiting")
    keep = 3  # of the six ended runs: the pinned one and the two newest unpinned ones

    pruned = store.prune(keep)

    assert sorted(pruned) == sorted(ended[:3])
    for run_id in pruned:
        assert store.get(run_id) is None and store.events_after(run_id) == []
        assert not (tmp_path / run_id).exists()
    for run_id in [oldest_pinned, *ended[3:]]:
        assert store.get(run_id) is not None and len(store.events_after(run_id)) == 2
        assert (tmp_path / run_id / MODEL_FILE).is_file()
    assert store.get(running).state == "running" and store.get(queued).state == "queued"
    assert store.prune(keep) == []  # already within the cap


def test_prune_keeps_every_pinned_run_even_beyond_the_cap(tmp_path):
    store = RunStore(tmp_path)
    pinned = [ended_run(store) for _ in range(3)]
    for run_id in pinned:
        store.pin(run_id)
    unpinned = ended_run(store)
    assert store.prune(1) == [unpinned]
    assert all(store.get(run_id) for run_id in pinned)


def test_delete_refuses_a_run_that_is_queued_or_running(tmp_path):
    store = RunStore(tmp_path)
    running = store.submit(QUICK, owner="a")
    store.claim("worker-1")
    queued = store.submit(QUICK, owner="b")
    assert not store.delete(running) and not store.delete(queued)
    assert store.get(running) and store.get(queued)


def test_clean_debris_clears_ended_runs_partial_files_and_modelless_folders_and_nothing_else(tmp_path):
    store = RunStore(tmp_path)
    saved = ended_run(store)
    (tmp_path / saved / (MODEL_FILE + ".partial.keras")).write_bytes(b"half a model")  # a crash mid-save
    (tmp_path / saved / "model.tflite.partial.tflite").write_bytes(b"half a copy")
    interrupted = ended_run(store, "interrupted", with_folder=False)
    (tmp_path / interrupted).mkdir()  # made when it started, nothing saved before it was cut short
    running = store.submit(QUICK, owner="training now")
    store.claim("worker-1")
    (tmp_path / running).mkdir()
    (tmp_path / running / "metrics.json.partial").write_text("{")  # being written right now
    (tmp_path / "quick").mkdir()  # `python -m cifar train --out runs/quick`, still training: not the store's
    (tmp_path / "quick" / "model.keras.partial.keras").write_bytes(b"being saved")
    (tmp_path / "notes").mkdir()

    store.clean_debris()

    assert sorted(path.name for path in (tmp_path / saved).iterdir()) == [MODEL_FILE]
    assert not (tmp_path / interrupted).exists()
    assert (tmp_path / running / "metrics.json.partial").exists()
    assert (tmp_path / "quick" / "model.keras.partial.keras").exists() and (tmp_path / "notes").is_dir()


def test_a_run_saved_by_the_command_line_into_the_folder_is_adopted_once(tmp_path):
    store = RunStore(tmp_path)
    folder = tmp_path / "20260101-120000-abcdef"
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes(b"a model")
    metrics = {"config": TrainConfig(epochs=3, batch_size=64).to_dict(), "status": "stopped", "reason": "Stopped by request.",
               "created": 1767268800.0, "history": [{}, {}], "test_accuracy": 0.42}
    (folder / METRICS_FILE).write_text(json.dumps(metrics))
    (tmp_path / "20260101-130000-abcdef").mkdir()  # no model: not a saved run

    assert store.adopt_folders() == [folder.name]
    run = store.get(folder.name)
    assert run.state == "stopped" and run.owner_name == "command line" and run.message == "Stopped by request."
    assert run.config == TrainConfig(epochs=3, batch_size=64)
    assert run.submitted == metrics["created"]
    assert run.summary["test_accuracy"] == 0.42 and run.summary["epochs_trained"] == 2
    assert store.adopt_folders() == []
