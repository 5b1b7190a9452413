"""A run's own data (cifar/datasets.py) through the real worker: a zip of class folders, CIFAR-100 in the
official format, and CIFAR-10 again, one after another, each tested on its own test images."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cifar.config import TrainConfig
from cifar.datasets import run_test_images
from cifar.folders import datasets_dir, read_image_set, save_image_set, split_image_set
from cifar.inference import TEST_PROBABILITIES_FILE
from cifar.store import METRICS_FILE
from cifar.worker import Worker
from tests.synthetic import class_folder_zip, learnable_images, write_archive

CIFAR100_NAMES = [f"fine_{index:02d}" for index in range(100)]
TINY = dict(epochs=1, batch_size=16, validation="held_out")


@pytest.fixture(scope="module")
def cifar100_archive(tmp_path_factory):
    """CIFAR-100 in the official format: 100 fine classes, 500 training and 200 test images."""
    return write_archive(tmp_path_factory.mktemp("cifar100"), learnable_images(500, 100, seed=0),
                         learnable_images(200, 100, seed=1), CIFAR100_NAMES, kind="cifar100")


def finished(worker: Worker, config: TrainConfig) -> dict:
    run_id = worker.store.submit(config, owner="teacher")
    worker.train(worker.store.claim("local-1"))
    record = worker.store.get(run_id)
    assert record.state == "finished", record.message
    metrics = json.loads((worker.runs_dir / run_id / METRICS_FILE).read_text())
    metrics["folder"] = worker.runs_dir / run_id
    return metrics


def test_a_zip_cifar100_and_cifar10_train_in_turn_each_on_its_own_classes_and_test_images(
        tmp_path, tiny_archive, cifar100_archive, monkeypatch):
    monkeypatch.setenv("CIFAR100_DATA", str(cifar100_archive))
    runs = tmp_path / "runs"
    image_set = read_image_set(class_folder_zip(tmp_path / "pets.zip", per_class=40, class_names=("cat", "dog", "frog")))
    save_image_set(datasets_dir(runs), image_set)
    worker = Worker(runs, data=str(tiny_archive), worker_id="local-1")

    mine = TrainConfig(**TINY, seed=3, data_source="images", dataset=image_set.id)
    metrics = finished(worker, mine)
    assert metrics["class_names"] == ["cat", "dog", "frog"]
    assert metrics["config"]["data_source"] == "images" and metrics["config"]["dataset"] == image_set.id
    confusion = np.array(metrics["confusion_matrix"])
    _, held = split_image_set(image_set.labels, seed=3)
    assert confusion.shape == (3, 3) and confusion.sum() == len(held) == 24  # a fifth of each class of 40
    assert metrics["train_size"] == 120 - 24
    # The pages' test images are the ones the run was tested on: the same count, labels and classes.
    x_test, y_test, class_names = run_test_images(mine, runs)
    assert class_names == metrics["class_names"] and np.array_equal(y_test, image_set.labels[held])
    assert np.array_equal(confusion.sum(axis=1), np.bincount(y_test, minlength=3))
    assert len(np.load(metrics["folder"] / TEST_PROBABILITIES_FILE)) == len(x_test)
    # Its default watch-list is made of its own test images, each with its true class.
    assert metrics["watch_list"] and all(item["label"] == y_test[item["test_index"]] for item in metrics["watch_list"])
    assert {item["label"] for item in metrics["watch_list"]} == {0, 1, 2}

    hundred = TrainConfig(**TINY, data_source="cifar100")
    metrics = finished(worker, hundred)
    assert metrics["class_names"] == CIFAR100_NAMES
    assert np.array(metrics["confusion_matrix"]).shape == (100, 100) and np.sum(metrics["confusion_matrix"]) == 200
    assert run_test_images(hundred, runs)[2] == CIFAR100_NAMES
    # One CIFAR copy kept at a time, beside the small image set.
    assert {key for key, _ in worker._loaded.values()} == {("cifar100", None), ("images", image_set.id)}

    metrics = finished(worker, TrainConfig(**TINY, train_size=200))
    assert len(metrics["class_names"]) == 10 and np.sum(metrics["confusion_matrix"]) == 200
    assert {key for key, _ in worker._loaded.values()} == {("cifar10", None), ("images", image_set.id)}


def test_a_run_whose_image_set_is_gone_fails_with_one_message(tmp_path):
    worker = Worker(tmp_path / "runs", worker_id="local-1")
    run_id = worker.store.submit(TrainConfig(epochs=1, data_source="images", dataset="0123456789abcdef"), owner="me")
    worker.train(worker.store.claim("local-1"))
    record = worker.store.get(run_id)
    assert record.state == "failed" and "no longer on this server: upload its zip again" in record.message


def test_a_cifar10_copy_is_refused_where_cifar100_is_wanted(tmp_path, tiny_archive, monkeypatch):
    from cifar.data import DataError, load_cifar100

    monkeypatch.setenv("CIFAR100_DATA", str(tiny_archive))
    with pytest.raises(DataError, match="is a cifar-10-batches-py copy, not the cifar-100-python one wanted"):
        load_cifar100()


def test_cifar100_is_downloaded_into_the_keras_cache_and_checked(tmp_path, monkeypatch, cifar100_archive):
    """The download path with CIFAR-100's own name, url and checksum (served from a local file)."""
    import hashlib

    import cifar.data
    from cifar.data import DataError, load_cifar100

    monkeypatch.delenv("CIFAR100_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(cifar.data, "CIFAR100_URL", cifar100_archive.as_uri())
    monkeypatch.setattr(cifar.data, "CIFAR100_SHA256", "0" * 64)
    with pytest.raises(DataError, match="is not the official CIFAR-100 archive"):
        load_cifar100()
    assert not any((tmp_path / "keras" / "datasets").iterdir())
    monkeypatch.setattr(cifar.data, "CIFAR100_SHA256", hashlib.sha256(cifar100_archive.read_bytes()).hexdigest())
    reports = []
    _, (_, y_test), names = load_cifar100(progress=reports.append)
    assert names == CIFAR100_NAMES and len(y_test) == 200
    assert (tmp_path / "keras" / "datasets" / "cifar-100-python.tar.gz").is_file()
    assert any(report.get("dataset") == "CIFAR-100" for report in reports if report["event"] == "download")


def test_the_data_source_is_checked_and_old_runs_read_as_cifar10():
    from cifar.config import QUICK_DEMO

    assert TrainConfig.from_dict({"epochs": 3}).data_source == "cifar10"  # metrics written before the choice
    for wrong, words in ((dict(data_source="mnist"), "data_source must be 'cifar10', 'cifar100' or 'images'"),
                         (dict(data_source="images"), "needs the id of an uploaded image set"),
                         (dict(data_source="images", dataset="../../etc"), "needs the id of an uploaded image set"),
                         (dict(dataset="0123456789abcdef"), "which data_source 'cifar10' does not use")):
        with pytest.raises(ValueError, match=re.escape(words)):
            TrainConfig(**wrong)
    mine = QUICK_DEMO.replace(data_source="images", dataset="0123456789abcdef")
    assert mine.preset == "Quick demo" and mine.in_words().endswith(", on your images")


def test_the_command_line_trains_on_a_zip_and_evaluates_the_run_on_its_own_test_images(tmp_path, capsys):
    from cifar.cli import main

    upload = class_folder_zip(tmp_path / "pets.zip", per_class=20, class_names=("cat", "dog"),
                              extra={"cat/notes.txt": b"x"})
    out = tmp_path / "runs" / "mine"
    assert main(["train", "--data", str(upload), "--epochs", "1", "--seed", "2", "--out", str(out)]) == 0
    assert "Your images: 2 classes: cat, dog; 40 pictures; 1 file skipped: not pictures" in capsys.readouterr().err
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["class_names"] == ["cat", "dog"] and np.sum(metrics["confusion_matrix"]) == 8
    assert (tmp_path / "runs" / "datasets" / f"{metrics['config']['dataset']}.npz").is_file()
    assert main(["evaluate", "--model", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert list(evaluated["per_class_accuracy"]) == ["cat", "dog"]
