"""Exports and imports of trained models (cifar.export, cifar.opening, `python -m cifar export | import`):
each export, run in its own runtime, gives Keras's probabilities; a model someone brings opens as a
saved run when it is a CIFAR classifier, and is refused in words when it is not."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from cifar.backend import keras_module
from cifar.config import TrainConfig
from cifar.export import DOWNLOAD_FILES, download_state, export_model, needs_downloads
from cifar.opening import add_model_run
from cifar.runner import run_training
from cifar.store import ModelFileError, list_runs, load_model, open_run
from tests.synthetic import CIFAR10_CLASSES, learnable_images

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4  # the bound on an export's probabilities against Keras's


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run trained for one short epoch on learnable images, saved as the app saves it, and test images."""
    runs = tmp_path_factory.mktemp("runs")
    test_images, test_labels = learnable_images(200, seed=1)
    run_training(TrainConfig(epochs=1, validation="none", train_size=600), runs / "20260101-000000-abcdef",
                 dataset=(learnable_images(600, seed=0), (test_images, test_labels), list(CIFAR10_CLASSES)))
    return runs / "20260101-000000-abcdef", test_images


@pytest.fixture(scope="module")
def model_and_reference(trained_run):
    folder, test_images = trained_run
    model, _ = load_model(folder)
    images = test_images[:64]
    reference = model.predict_on_batch(images)
    assert reference.std(axis=0).max() > 0.01  # trained: the images do not all get the same answer
    return model, images, reference


def test_the_litert_export_gives_kerass_probabilities_in_the_litert_interpreter(model_and_reference, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model, images, reference = model_and_reference
    path = export_model(model, tmp_path / "model.tflite", "litert")
    interpreter = Interpreter(model_path=str(path))
    (pixels,), outputs = interpreter.get_input_details(), interpreter.get_output_details()
    assert len(outputs) == 1 and pixels["dtype"] == np.uint8  # a plain classifier, taking the .keras model's pixels
    interpreter.resize_tensor_input(pixels["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(pixels["index"], images)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(outputs[0]["index"]), reference, atol=TOLERANCE)
    assert not list(tmp_path.glob("*.partial*"))


def onnx_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (pixels,), outputs = session.get_inputs(), session.get_outputs()
    assert len(outputs) == 1 and pixels.type == "tensor(uint8)"
    return session.run(None, {pixels.name: images})[0]


def test_the_onnx_export_gives_kerass_probabilities_in_onnxruntime(model_and_reference, tmp_path):
    pytest.importorskip("onnxruntime")
    model, images, reference = model_and_reference
    path = export_model(model, tmp_path / "model.onnx", "onnx")
    np.testing.assert_allclose(onnx_probabilities(path, images), reference, atol=TOLERANCE)


def cli(*args: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "CIFAR10_DATA"}
    return subprocess.run([sys.executable, "-m", "cifar", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_the_export_command_writes_a_file_its_runtime_runs_and_refuses_bad_input_in_one_line(
        trained_run, model_and_reference, tmp_path):
    pytest.importorskip("onnxruntime")
    folder, _ = trained_run
    _, images, reference = model_and_reference
    out = tmp_path / "exported.onnx"
    result = cli("export", "--model", str(folder / "model.keras"), "--format", "onnx", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"Wrote {out}" in result.stdout
    np.testing.assert_allclose(onnx_probabilities(out, images), reference, atol=TOLERANCE)
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a model")
    for args, words in [(("--model", str(garbage), "--format", "litert", "--out", str(tmp_path / "x.tflite")),
                         "not a readable Keras model file"),
                        (("--model", str(folder), "--format", "litert", "--out", str(tmp_path / "no" / "x.tflite")),
                         "does not exist")]:
        result = cli("export", *args)
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # TensorFlow logs too
        assert len(errors) == 1 and words in errors[0], result.stderr
    result = cli("export", "--model", str(folder), "--format", "tfjs", "--out", str(tmp_path / "x"))
    assert result.returncode != 0 and "invalid choice" in result.stderr


def test_the_worker_makes_the_download_files_when_idle_and_the_page_can_tell_when_they_are_ready(trained_run):
    from cifar.runstore import RunStore
    from cifar.worker import Worker

    folder, images = trained_run
    RunStore(folder.parent).adopt_folders()
    assert needs_downloads(folder) and download_state(folder, "litert").pending
    worker = Worker(folder.parent)
    for _ in range(3):  # the pages' own files first, then the downloads, one task per idle moment
        worker._prepare_saved_runs_for_pages()
    assert not needs_downloads(folder)
    for name, file_name in DOWNLOAD_FILES.items():
        state = download_state(folder, name)
        assert state.path == folder / file_name and state.path.stat().st_size > 1_000_000, state


def keras_file(tmp_path: Path, name: str, layers: list, input_shape=(32, 32, 3), dtype="float32") -> Path:
    keras = keras_module()
    model = keras.Sequential([keras.Input(shape=input_shape, dtype=dtype), *layers])
    path = tmp_path / name
    model.save(path)
    return path


def small_classifier(classes: int = 10, activation: str = "softmax") -> list:
    layers = keras_module().layers
    return [layers.Rescaling(1 / 255), layers.Conv2D(4, 3, activation="relu"), layers.GlobalAveragePooling2D(),
            layers.Dense(classes, activation=activation)]


@pytest.fixture(scope="module")
def test_data(tmp_path_factory):
    from tests.synthetic import write_archive

    return str(write_archive(tmp_path_factory.mktemp("data"), learnable_images(100, seed=0),
                             learnable_images(200, seed=1), CIFAR10_CLASSES))


def test_a_model_from_elsewhere_opens_as_an_uploaded_saved_run_with_the_datasets_class_names(tmp_path, test_data):
    model_file = keras_file(tmp_path, "someone's.keras", small_classifier())  # float input: Keras's default
    stages = []
    run_id, metrics = add_model_run(model_file, tmp_path / "runs", test_data, progress=stages.append)
    run = open_run(tmp_path / "runs", run_id)
    assert run is not None and run.uploaded_as == "someone's.keras" and run.title.startswith("Uploaded someone's.keras")
    assert metrics["class_names"] == list(CIFAR10_CLASSES)
    assert np.array(metrics["confusion_matrix"]).sum() == 200 and 0 <= metrics["test_accuracy"] <= 1
    assert {"model.keras", "model.tflite", "test_probabilities.npy", "test_predictions.npy"} <= {
        path.name for path in run.folder.iterdir()}
    from cifar.inference import LiteModel
    from cifar.predict import predict_probabilities

    images = learnable_images(20, seed=1)[0]  # the pages' copy takes the model's float input from uint8 pixels
    np.testing.assert_allclose(LiteModel(run.folder).probabilities(images),
                               predict_probabilities(load_model(model_file)[0], images), atol=1e-5)
    from cifar.runstore import RunStore

    assert RunStore(tmp_path / "runs").get(run_id).owner_name == "uploaded"
    assert [stage["stage"] for stage in stages][0].startswith("Loading the model")
    assert not [path for path in (tmp_path / "runs").iterdir() if path.name.startswith(".import")]


def test_a_model_this_app_saved_keeps_its_class_names_and_curves(trained_run, tmp_path, test_data):
    folder, _ = trained_run
    run_id, metrics = add_model_run(folder / "model.keras", tmp_path / "runs", test_data, name="mine.keras")
    saved = json.loads((folder / "metrics.json").read_text())
    assert metrics["history"] == saved["history"] and metrics["config"] == saved["config"]
    assert metrics["uploaded"] == {"file": "mine.keras", "made_by_this_app": True}
    assert [run.run_id for run in list_runs(tmp_path / "runs")] == [run_id]


@pytest.mark.parametrize("case, words", [
    ("not a zip", "is not a readable Keras model file"),
    ("a zip of something else", "is a zip file but not a Keras model"),
    ("another input shape", "not a CIFAR classifier: it takes (28, 28, 1)"),
    ("a Lambda layer", "Lambda layer"),
    ("no softmax", "does not give class probabilities"),
    ("7 classes", "not probabilities for the 10 classes"),
])
def test_a_file_that_is_no_cifar_classifier_is_refused_in_words_and_adds_no_run(case, words, tmp_path, test_data):
    keras = keras_module()
    path = tmp_path / "upload.keras"
    if case == "not a zip":
        path.write_bytes(b"\x00garbage" * 100)
    elif case == "a zip of something else":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("holiday.txt", "not a model")
    elif case == "another input shape":
        keras_file(tmp_path, path.name, [keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                                         keras.layers.Dense(10, activation="softmax")], input_shape=(28, 28, 1))
    elif case == "a Lambda layer":
        keras_file(tmp_path, path.name, [keras.layers.Lambda(lambda x: x * 2), *small_classifier()])
    elif case == "no softmax":
        keras_file(tmp_path, path.name, small_classifier(activation="linear"))
    else:
        keras_file(tmp_path, path.name, small_classifier(classes=7))
    with pytest.raises(ModelFileError) as refusal:
        add_model_run(path, tmp_path / "runs", test_data, name="upload.keras")
    assert words in str(refusal.value) and "upload.keras" in str(refusal.value)
    assert "\n" not in str(refusal.value)
    assert not list_runs(tmp_path / "runs")


def test_the_servers_import_refuses_a_non_model_at_once_goes_one_at_a_time_and_gives_up_after_its_time(
        tmp_path, test_data):
    import time

    from cifar.opening import ImportBusy, ModelImport, ModelImports

    with pytest.raises(ModelFileError, match="not a readable Keras model file"):
        ModelImports(tmp_path / "runs").start(b"not a zip", "x.keras")  # said without starting a process
    model_file = keras_file(tmp_path, "m.keras", small_classifier())
    imports = ModelImports(tmp_path / "runs", test_data)
    first = imports.start(model_file.read_bytes(), "m.keras")
    with pytest.raises(ImportBusy):
        imports.start(model_file.read_bytes(), "again.keras")
    slow = ModelImport(model_file.read_bytes(), "slow.keras", tmp_path / "other-runs", seconds=0.5)
    time.sleep(1.0)
    state = slow.state()
    assert state.failed and state.message.startswith("Opening slow.keras took longer than")
    assert slow.process.returncode is not None and not slow.folder.exists()
    deadline = time.monotonic() + 240
    while not imports.state(first).done and time.monotonic() < deadline:
        time.sleep(0.5)
    opened = imports.state(first)
    assert opened.run_id is not None, opened.message
    assert open_run(tmp_path / "runs", opened.run_id).uploaded_as == "m.keras"


def test_a_download_that_could_not_be_made_says_why_and_is_not_tried_again(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"")
    assert needs_downloads(tmp_path) and download_state(tmp_path, "onnx").pending
    (tmp_path / "classifier.onnx.failed").write_text("ONNX export failed: ValueError: an op tf2onnx does not know")
    (tmp_path / "classifier.tflite").write_bytes(b"a LiteRT file")
    state = download_state(tmp_path, "onnx")
    assert state.path is None and not state.pending and "an op tf2onnx does not know" in state.failure
    assert download_state(tmp_path, "litert").path == tmp_path / "classifier.tflite"
    assert not needs_downloads(tmp_path)


def test_a_half_made_import_left_by_a_dead_server_is_removed_when_the_next_one_starts(tmp_path):
    from cifar.opening import IMPORT_SECONDS, ModelImports

    left, working = tmp_path / ".import-20260101-000000-abcdef", tmp_path / ".import-20260101-000001-abcdef"
    for folder in (left, working):
        folder.mkdir()
        (folder / "model.keras").write_bytes(b"half")
    os.utime(left, (0, os.path.getmtime(left) - IMPORT_SECONDS - 1))
    assert ModelImports(tmp_path).remove_leftovers() == [] and not left.exists() and working.exists()


def test_a_100_class_model_is_tested_on_cifar_100_and_its_run_says_so(tmp_path, test_data, monkeypatch):
    from tests.synthetic import write_archive

    names = [f"class_{index:02d}" for index in range(100)]
    images, labels = learnable_images(300, num_classes=100, seed=3)
    monkeypatch.setenv("CIFAR100_DATA", str(write_archive(tmp_path / "c100", (images, labels), (images, labels), names,
                                                          kind="cifar100")))
    model_file = keras_file(tmp_path, "hundred.keras", small_classifier(classes=100))
    run_id, metrics = add_model_run(model_file, tmp_path / "runs", test_data)  # test_data: the server's CIFAR-10
    assert metrics["class_names"] == names and metrics["data_source"] == "cifar100"
    assert np.array(metrics["confusion_matrix"]).shape == (100, 100) and np.array(metrics["confusion_matrix"]).sum() == 300
