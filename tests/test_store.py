"""Saved models reload with identical predictions and their metadata; bad files give ModelFileError."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar.model import build_model
from cifar.predict import pick_test_images, predict_probabilities
from cifar.store import (METRICS_FILE, MODEL_FILE, ModelFileError, list_runs, load_model, open_run, read_metadata,
                         save_model, write_metrics)
from tests.synthetic import CIFAR10_CLASSES, learnable_images


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model(10)


def test_save_then_load_gives_identical_predictions_and_metadata(tmp_path, model):
    images, _ = learnable_images(20, seed=2)
    metadata = {"class_names": CIFAR10_CLASSES, "test_accuracy": 0.5, "config": {"epochs": 1}}
    path = save_model(model, tmp_path / "model.keras", metadata)
    assert zipfile.is_zipfile(path) and not list(tmp_path.glob("*.partial*"))
    loaded, loaded_metadata = load_model(path)
    np.testing.assert_array_equal(predict_probabilities(loaded, images), predict_probabilities(model, images))
    assert loaded_metadata == metadata
    assert read_metadata(path) == metadata


def test_a_plain_keras_file_without_metadata_still_loads_with_numbered_classes(tmp_path, model):
    path = tmp_path / "plain.keras"
    model.save(path)
    _, metadata = load_model(path)
    assert metadata["class_names"] == [f"class {i}" for i in range(10)]


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04 truncated"])
def test_a_corrupt_file_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "broken.keras"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="broken.keras"):
        load_model(path)


def test_a_truncated_model_gives_a_clear_error(tmp_path, model):
    path = save_model(model, tmp_path / "model.keras", {"class_names": CIFAR10_CLASSES})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError):
        load_model(path)


def test_a_foreign_model_is_refused(tmp_path):
    other = keras.Sequential([keras.Input(shape=(8,)), keras.layers.Dense(2)])
    path = tmp_path / "other.keras"
    other.save(path)
    with pytest.raises(ModelFileError, match="not a CIFAR classifier"):
        load_model(path)
    zip_path = tmp_path / "photos.keras"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("holiday.txt", "hello")
    with pytest.raises(ModelFileError, match="not a Keras model"):
        load_model(zip_path)
    with pytest.raises(ModelFileError, match="no model file"):
        load_model(tmp_path / "missing.keras")


def save_run(folder, model, metrics) -> None:
    """As cifar.runner saves a finished run: the model, and its metrics beside it."""
    save_model(model, folder / MODEL_FILE, metrics)
    write_metrics(folder / METRICS_FILE, metrics)


def test_runs_are_listed_newest_first_and_reopened(tmp_path, model):
    runs = tmp_path / "runs"
    save_run(runs / "20260101-000000-aaaaaa", model, {"created": 1, "history": [{}], "test_accuracy": 0.4})
    save_run(runs / "20260102-000000-bbbbbb", model, {"created": 2, "history": [], "status": "stopped"})
    (runs / "20260103-000000-cccccc").mkdir()  # a run still training: no model yet
    assert [run.run_id for run in list_runs(runs)] == ["20260102-000000-bbbbbb", "20260101-000000-aaaaaa"]
    assert "40.0%" in open_run(runs, "20260101-000000-aaaaaa").label
    assert open_run(runs, "20260103-000000-cccccc") is None


def test_a_run_id_from_a_url_never_opens_a_folder_outside_the_runs_folder(tmp_path, model):
    save_run(tmp_path / "20260101-000000-aaaaaa", model, {"created": 1})  # beside the runs folder, not in it
    (tmp_path / "runs").mkdir()
    assert open_run(tmp_path / "runs", "20260101-000000-aaaaaa") is None
    assert open_run(tmp_path / "runs", "../20260101-000000-aaaaaa") is None
    assert [run.run_id for run in list_runs(tmp_path)] == ["20260101-000000-aaaaaa"]  # where it is, it opens


def test_predict_accepts_one_image_or_a_batch(model):
    images, _ = learnable_images(3, seed=4)
    batch = predict_probabilities(model, images)
    assert batch.shape == (3, 10)
    np.testing.assert_allclose(batch.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(predict_probabilities(model, images[0])[0], batch[0], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError):
        predict_probabilities(model, np.zeros((2, 28, 28), np.uint8))


def test_the_gallery_picks_distinct_images_that_match_what_it_shows():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    predicted = np.array([0, 1, 0, 0, 2, 2, 0, 1, 1, 0])  # wrong at 2, 4 and 8
    assert pick_test_images(labels, predicted, mistakes_only=True, count=24)[0] == 3
    assert sorted(pick_test_images(labels, predicted, mistakes_only=True, count=24)[1]) == [2, 4, 8]
    matching, picked = pick_test_images(labels, predicted, class_index=0, count=2, seed=5)
    assert matching == 4 and len(set(picked)) == 2 and all(labels[picked] == 0)
    matching, picked = pick_test_images(labels, predicted, count=6, seed=5)
    assert matching == 10 and len(set(picked)) == 6
    assert list(pick_test_images(labels, predicted, count=6, seed=5)[1]) == list(picked)  # a seed, one pick
    assert pick_test_images(labels, labels, mistakes_only=True)[0] == 0
    # One class and only its mistakes, together: the true ones that the model got wrong.
    matching, picked = pick_test_images(labels, predicted, class_index=2, mistakes_only=True, count=24)
    assert matching == 2 and sorted(picked) == [2, 8]
    assert pick_test_images(labels, predicted, class_index=0, mistakes_only=True)[0] == 0

