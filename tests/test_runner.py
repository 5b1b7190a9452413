"""A run from data to saved result (cifar.runner): what a run stopped early leaves, and its failures."""
from __future__ import annotations

import threading

import pytest

from cifar.config import TrainConfig
from cifar.runner import TrainingJob, run_training
from tests.synthetic import CIFAR10_CLASSES, learnable_images


@pytest.fixture(scope="module")
def dataset():
    return learnable_images(200, seed=0), learnable_images(50, seed=1), list(CIFAR10_CLASSES)


def test_a_run_stopped_before_its_first_step_tests_and_saves_nothing(tmp_path, dataset):
    stop = threading.Event()
    stop.set()
    events = []
    metrics = run_training(TrainConfig(epochs=1), tmp_path / "run", on_event=events.append, stop=stop, dataset=dataset)
    assert metrics["status"] == "stopped" and "before the first step" in metrics["reason"]
    assert "test_accuracy" not in metrics
    assert not (tmp_path / "run").exists()  # not even an empty folder for the saved-runs list
    assert not any(event["event"] in ("evaluating", "saved") for event in events)


def test_a_run_into_a_folder_that_cannot_be_made_fails_before_loading_anything(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    events = []
    with pytest.raises(OSError):
        run_training(TrainConfig(epochs=1), blocker / "run", data=tmp_path / "nowhere", on_event=events.append)
    assert events == []  # the missing data was never reached: the folder failed first


def test_a_stop_while_the_data_loads_ends_the_job_at_the_next_progress_report(tmp_path, dataset):
    reports = []

    def slow_loader(progress):
        for chunk in range(1, 100):
            if chunk == 3:
                job.stop()  # as a viewer pressing Stop during a download
            progress({"event": "download", "bytes_done": chunk, "bytes_total": 100})
            reports.append(chunk)
        return dataset

    job = TrainingJob("20260101-000000-abcdef", TrainConfig(epochs=1), tmp_path / "run", dataset_loader=slow_loader)
    job.start().join(30)
    assert not job.active and job.state == "stopped"
    assert reports == [1, 2]  # the third report raised instead of continuing the download
    assert "while the data was loading" in job.events_since(0)[-1]["reason"]
    assert not (tmp_path / "run").exists()


def test_a_server_keeps_the_event_logs_of_only_its_latest_ended_runs(tmp_path, dataset):
    from cifar.runner import FINISHED_JOBS_KEPT, JobBoard

    board = JobBoard(tmp_path / "runs")
    board._dataset = dataset  # as if loaded by an earlier run
    ended = [f"20260101-0000{i:02d}-aaaaaa" for i in range(FINISHED_JOBS_KEPT + 3)]
    for run_id in ended:  # never started, so not active: as runs that have ended
        board.jobs[run_id] = TrainingJob(run_id, TrainConfig(epochs=1), tmp_path / "runs" / run_id)
    job = board.start(TrainConfig(epochs=1, train_size=64, validation="none"))
    job.join(60)
    assert job.state == "finished"
    assert list(board.jobs) == ended[-FINISHED_JOBS_KEPT:] + [job.run_id]
