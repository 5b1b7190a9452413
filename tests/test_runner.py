"""A run from data to saved result (cifar.runner): what a run stopped early leaves, and its failures."""
from __future__ import annotations

import threading

import pytest

from cifar.config import TrainConfig
from cifar.runner import run_training
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


def test_a_run_for_the_command_line_saves_its_model_and_metrics_but_no_files_for_the_pages(tmp_path, dataset):
    from cifar.store import METRICS_FILE, MODEL_FILE, PREDICTIONS_FILE

    metrics = run_training(TrainConfig(epochs=1, validation="none"), tmp_path / "run", dataset=dataset)
    assert metrics["status"] == "finished" and metrics["training_path"] == "fast"  # the seed recipe
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == sorted([MODEL_FILE, METRICS_FILE, PREDICTIONS_FILE])


def test_a_runs_metrics_say_which_training_path_trained_it(tmp_path, dataset):
    metrics = run_training(TrainConfig(epochs=1, validation="none", fast_step=False), tmp_path / "run", dataset=dataset)
    assert metrics["status"] == "finished" and metrics["training_path"] == "plain"
    assert metrics["config"]["fast_step"] is False
