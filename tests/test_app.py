"""The app's flows through Streamlit's AppTest, against a generated tiny archive named by CIFAR10_DATA."""
from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from cifar.config import PRESETS, SEED_RECIPE
from cifar.store import list_runs

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def runs_dir(tmp_path, tiny_archive, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(tiny_archive))
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(tmp_path / "runs"))
    st.cache_resource.clear()  # a fresh job board per test, as a fresh server would have
    yield tmp_path / "runs"
    st.cache_resource.clear()


def new_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60).run()


def page_text(at: AppTest) -> str:
    parts = [element.value for kind in ("markdown", "caption", "error", "warning", "info", "success")
             for element in at.get(kind) if isinstance(getattr(element, "value", None), str)]
    return "\n".join(parts)


def train_to_the_end(at: AppTest, timeout: float = 120) -> AppTest:
    at.button(key="train").click().run()
    assert not at.exception, at.exception
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
        if at.get("metric") and any(m.label == "Test accuracy" for m in at.metric):
            return at
    raise AssertionError("the run did not finish in time")


def quick_settings(at: AppTest, epochs: int = 3) -> None:
    at.radio(key="preset").set_value("Quick demo").run()
    at.slider(key="epochs").set_value(epochs)
    at.number_input(key="train_size").set_value(800)
    at.run()


def test_controls_start_at_the_seed_recipe_and_presets_fill_them(runs_dir):
    at = new_app()
    assert not at.exception
    assert at.slider(key="epochs").value == SEED_RECIPE.epochs == 20
    assert at.slider(key="conv_dropout").value == 0.2 and at.slider(key="dense_dropout").value == 0.5
    assert at.number_input(key="learning_rate").value == 0.01
    assert at.selectbox(key="batch_size").value == 32
    assert at.number_input(key="train_size").value == 50_000 and at.number_input(key="seed").value == 0
    assert at.button(key="stop").disabled
    for name, preset in PRESETS.items():
        at.radio(key="preset").set_value(name).run()
        assert at.slider(key="epochs").value == preset.epochs
        assert at.slider(key="dense_dropout").value == preset.dense_dropout
        assert at.selectbox(key="batch_size").value == preset.batch_size
        assert at.selectbox(key="optimizer").value == preset.optimizer
        assert at.selectbox(key="conv_start").value == preset.conv_start


def test_train_to_the_end_shows_metrics_confusion_matrix_and_saves_the_run(runs_dir):
    at = new_app()
    quick_settings(at)
    train_to_the_end(at)
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    accuracy = float(metrics["Test accuracy"].rstrip("%")) / 100
    assert accuracy > 0.8  # the synthetic classes are easy
    charts = [chart.proto.id for chart in at.get("plotly_chart")]
    assert len(charts) >= 3  # curves, confusion matrix, per-class accuracy
    saved = list_runs(runs_dir)
    assert len(saved) == 1 and saved[0].metrics["status"] == "finished"
    assert saved[0].metrics["test_accuracy"] == pytest.approx(accuracy, abs=0.001)
    assert at.query_params["run"] == [saved[0].run_id] or at.query_params["run"] == saved[0].run_id
    assert len(saved[0].metrics["history"]) == 3 and len(saved[0].metrics["confusion_matrix"]) == 10
    assert saved[0].metrics["config"]["conv_start"] == "pca"  # the Quick demo's start, as the sidebar set it


def test_pick_a_test_image_and_see_its_probabilities(runs_dir):
    at = new_app()
    quick_settings(at, epochs=2)
    train_to_the_end(at)
    inspect_buttons = [button for button in at.button if button.key and button.key.startswith("inspect_")]
    assert len(inspect_buttons) == 24
    inspect_buttons[0].click().run()
    assert not at.exception
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert any(caption.startswith("Test image") for caption in captions)
    assert len(at.get("plotly_chart")) >= 4  # curves, confusion, per class, and the inspected image's probabilities
    at.radio(key="gallery_mode").set_value("One class").run()
    at.selectbox(key="gallery_class").set_value("ship").run()
    captions = [c.value for c in at.caption if "true:" in c.value]
    assert captions and all(c.endswith("true: ship") for c in captions)
    at.radio(key="gallery_mode").set_value("Only mistakes").run()
    captions = [c.value for c in at.caption if "true:" in c.value]
    if captions:
        assert all(c.startswith("❌") for c in captions)
    else:  # a model that is right on every test image has no mistakes to show, and says so
        assert any("no mistakes at all" in info.value for info in at.info)


def png_bytes(colour) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((80, 120, 3), colour, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_good_and_bad_files(runs_dir):
    at = new_app()
    quick_settings(at, epochs=2)
    train_to_the_end(at)
    at.file_uploader(key="upload").set_value([
        ("red.png", png_bytes((230, 20, 20)), "image/png"),
        ("broken.png", b"this is not a picture", "image/png"),
        ("blue.png", png_bytes((20, 20, 230)), "image/png"),
    ]).run()
    assert not at.exception
    errors = [error.value for error in at.error]
    assert len(errors) == 1 and "not a picture" in errors[0]
    names = [m.value for m in at.markdown if m.value in ("**red.png**", "**broken.png**", "**blue.png**")]
    assert names == ["**red.png**", "**broken.png**", "**blue.png**"]
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert captions.count("What the network sees: 32×32 pixels") == 2
    assert "Your picture (120×80)" in captions
    charts_without_uploads = 3  # curves, confusion matrix, per-class accuracy
    assert len(at.get("plotly_chart")) == charts_without_uploads + 2  # one probability chart per good picture


def test_pictures_before_any_model_show_what_the_network_sees(runs_dir):
    at = new_app()
    at.file_uploader(key="upload").set_value(("red.png", png_bytes((230, 20, 20)), "image/png")).run()
    assert not at.exception and not at.error
    assert "Train a model or open a saved run" in page_text(at)


def test_a_saved_run_reopens_from_the_list_and_from_the_url(runs_dir):
    at = new_app()
    quick_settings(at, epochs=1)
    train_to_the_end(at)
    run_id = list_runs(runs_dir)[0].run_id
    visitor = new_app()  # someone else, later: sees the run in the saved list and opens it
    assert visitor.selectbox(key="saved_run").value == run_id
    visitor.button(key="open_run").click().run()
    assert not visitor.exception
    assert any(m.label == "Test accuracy" for m in visitor.metric)
    link = AppTest.from_file(APP, default_timeout=60)
    link.query_params["run"] = run_id
    link.run()
    assert any(m.label == "Test accuracy" for m in link.metric)


def test_no_data_gives_one_clear_message(runs_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR10_DATA", str(tmp_path / "nowhere.tar.gz"))
    st.cache_resource.clear()
    at = new_app()
    at.slider(key="epochs").set_value(1).run()
    at.button(key="train").click().run()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not at.error:
        time.sleep(0.3)
        at.run()
    assert not at.exception
    assert len(at.error) == 1 and "CIFAR10_DATA" in at.error[0].value and "nowhere" in at.error[0].value


def test_a_corrupt_saved_model_gives_one_clear_message(runs_dir):
    at = new_app()
    quick_settings(at, epochs=1)
    train_to_the_end(at)
    saved = list_runs(runs_dir)[0]
    saved.model_path.write_bytes(b"garbage")
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = saved.run_id
    at.run()
    assert not at.exception
    assert any("could not be opened" in error.value for error in at.error)


def test_pressing_train_while_a_run_is_active_says_so(runs_dir):
    teacher = new_app()
    teacher.slider(key="epochs").set_value(50).run()
    teacher.button(key="train").click().run()
    student = new_app()  # a second visitor attaches to the live run
    assert student.session_state.run_id == teacher.session_state.run_id
    student.button(key="train").click().run()
    assert any("already in progress" in warning.value for warning in student.warning)
    assert not student.button(key="stop").disabled
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(m.label == "Images per second" for m in teacher.metric):
        time.sleep(0.3)  # stopped before its first step, a run would save nothing to check
        teacher.run()
    student.button(key="stop").click().run()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(m.label == "Test accuracy" for m in teacher.metric):
        time.sleep(0.5)
        teacher.run()
    assert list_runs(runs_dir)[0].metrics["status"] == "stopped"


class SlowArchive(http.server.BaseHTTPRequestHandler):
    """Serves one archive slowly, as a first download over a real network would arrive."""

    payload = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        for start in range(0, len(self.payload), 16_384):
            self.wfile.write(self.payload[start : start + 16_384])
            time.sleep(0.05)

    def log_message(self, *args):
        pass


def test_a_first_download_shows_its_progress(runs_dir, tiny_archive, monkeypatch, tmp_path):
    import cifar.data

    SlowArchive.payload = tiny_archive.read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowArchive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("CIFAR10_DATA")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(cifar.data, "CIFAR10_URL", f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar.data, "CIFAR10_SHA256", hashlib.sha256(SlowArchive.payload).hexdigest())
    monkeypatch.setattr(cifar.data, "DOWNLOAD_CHUNK_BYTES", 16_384)
    try:
        at = new_app()
        at.slider(key="epochs").set_value(1).run()
        at.button(key="train").click().run()
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(m.label == "Test accuracy" for m in at.metric):
            time.sleep(0.3)
            at.run()
            seen += [bar.proto.text for bar in at.get("progress") if bar.proto.text.startswith("Downloading CIFAR-10")]
        assert not at.exception and not at.error
        assert seen, "the download's progress never showed"
        assert (tmp_path / "keras" / "datasets" / "cifar-10-python.tar.gz").is_file()
        assert any(m.label == "Test accuracy" for m in at.metric)
    finally:
        server.shutdown()


def test_a_run_stopped_while_its_data_loads_says_so_and_saves_nothing(runs_dir, monkeypatch):
    import cifar.runner

    real_load_data = cifar.runner.load_data

    def slow_load_data(*args, **kwargs):
        time.sleep(1.5)  # long enough to press Stop while the data loads
        return real_load_data(*args, **kwargs)

    monkeypatch.setattr(cifar.runner, "load_data", slow_load_data)
    at = new_app()
    at.button(key="train").click().run()
    at.button(key="stop").click().run()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("Stopped by request" in info.value for info in at.info):
        time.sleep(0.3)
        at.run()
    assert not at.exception and not at.error, page_text(at)
    assert any("Stopped by request while the data was loading" in info.value for info in at.info), page_text(at)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # not even an empty run folder
