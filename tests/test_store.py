"""Saved models reload with identical predictions and their metadata; bad files give ModelFileError."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar.model import build_model
from cifar.predict import predict_probabilities, top_k
from cifar.store import ModelFileError, list_runs, load_model, open_run, read_metadata, save_model, save_run
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


def test_runs_are_listed_newest_first_and_reopened(tmp_path, model):
    save_run(tmp_path, "20260101-000000-aaaaaa", model, {"created": 1, "history": [{}], "test_accuracy": 0.4})
    save_run(tmp_path, "20260102-000000-bbbbbb", model, {"created": 2, "history": [], "status": "stopped"})
    (tmp_path / "not-a-run").mkdir()
    assert [run.run_id for run in list_runs(tmp_path)] == ["20260102-000000-bbbbbb", "20260101-000000-aaaaaa"]
    assert "40.0%" in open_run(tmp_path, "20260101-000000-aaaaaa").label
    assert open_run(tmp_path, "../etc") is None
    with pytest.raises(ValueError):
        save_run(tmp_path, "../escape", model, {})


def test_top_k_orders_classes_by_probability():
    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert top_k(probabilities, ["a", "b", "c"], k=2) == [[("b", 0.6), ("c", 0.3)], [("a", 0.5), ("c", 0.3)]]
    assert len(top_k(probabilities, ["a", "b", "c"], k=10)[0]) == 3


def test_predict_accepts_one_image_or_a_batch(model):
    images, _ = learnable_images(3, seed=4)
    batch = predict_probabilities(model, images)
    assert batch.shape == (3, 10)
    np.testing.assert_allclose(batch.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(predict_probabilities(model, images[0])[0], batch[0], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError):
        predict_probabilities(model, np.zeros((2, 28, 28), np.uint8))
