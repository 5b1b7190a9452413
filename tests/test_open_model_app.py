"""Opening a model in the app (key `model_upload`), through AppTest with the server's real worker and
the real `python -m cifar import` process: a classifier opens as a saved run with every view, and
the worker then makes its downloads; a file that is no CIFAR classifier gets one clear message."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("keras")

from cifar.store import list_runs
from tests.test_app import new_app, page_text, png_bytes, runs_dir, wait_for  # noqa: F401 (runs_dir: a fixture)
from tests.test_export import keras_file, small_classifier


def upload(at, path: Path, name: str):
    return at.file_uploader(key="model_upload").set_value((name, path.read_bytes(), "application/octet-stream")).run()


def opened(at) -> bool:
    return any(metric.label == "Test accuracy" for metric in at.metric)


def downloads(at) -> dict[str, bool]:
    """Each download button's label, and whether it can be pressed."""
    return {button.proto.label: not button.proto.disabled for button in at.get("download_button")}


def test_an_uploaded_keras_classifier_opens_as_a_saved_run_with_every_view_and_its_downloads(runs_dir, tmp_path):
    model_file = keras_file(tmp_path, "m.keras", small_classifier())
    at = new_app()
    upload(at, model_file, "from a friend.keras")
    assert not at.exception
    wait_for(at, lambda at: at.success, timeout=240)
    assert not at.exception and not at.error and opened(at)
    text = page_text(at)
    assert "from a friend.keras opened as a saved run" in text and "Uploaded from a friend.keras" in text
    assert "trained elsewhere and uploaded, so it has no learning curves" in text
    assert [metric.label for metric in at.metric] == ["Test accuracy", "Test loss"]  # no training speed or time
    (run,) = list_runs(runs_dir)
    assert run.uploaded_as == "from a friend.keras" and at.query_params["run"] in (run.run_id, [run.run_id])
    assert len([button for button in at.button if button.key and button.key.startswith("inspect_")]) == 24  # the gallery
    at.file_uploader(key="upload").set_value(("red.png", png_bytes((230, 20, 20)), "image/png")).run()
    assert not at.exception and not at.error
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert "What the network sees: 32×32 pixels" in captions
    labels = downloads(at)
    assert labels["Download its model (.keras)"]
    assert set(labels) - {"Download its model (.keras)"} <= {  # each of the others ready, or saying it is not
        "Download for LiteRT (.tflite)", "Download for LiteRT (.tflite): not ready",
        "Download as ONNX (.onnx)", "Download as ONNX (.onnx): not ready"}, labels
    # The idle worker makes the LiteRT and ONNX files; until then their buttons say so and cannot be pressed.
    wait_for(at, lambda at: downloads(at).get("Download for LiteRT (.tflite)")
                          and downloads(at).get("Download as ONNX (.onnx)"), timeout=240)
    assert (run.folder / "classifier.tflite").is_file() and (run.folder / "classifier.onnx").is_file()


@pytest.mark.parametrize("case, words", [
    ("corrupt", "is not a readable Keras model file"),
    ("wrong shape", "not a CIFAR classifier: it takes (28, 28, 1)"),
    ("lambda", "Lambda layer"),
])
def test_a_file_that_is_no_cifar_classifier_gets_one_clear_message(runs_dir, tmp_path, case, words):
    import keras

    if case == "corrupt":
        path = tmp_path / "bad.keras"
        path.write_bytes(b"PK\x03\x04 this was a model once")
    elif case == "wrong shape":
        path = keras_file(tmp_path, "bad.keras", [keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                                                   keras.layers.Dense(10, activation="softmax")], input_shape=(28, 28, 1))
    else:
        path = keras_file(tmp_path, "bad.keras", [keras.layers.Lambda(lambda x: x * 2), *small_classifier()])
    at = new_app()
    upload(at, path, "mine.keras")
    wait_for(at, lambda at: at.error, timeout=180)
    assert not at.exception
    assert len(at.error) == 1 and words in at.error[0].value and "mine.keras" in at.error[0].value, at.error[0].value
    at.run()  # the message stays while the file does, and nothing was added
    assert len(at.error) == 1 and not list_runs(runs_dir)
