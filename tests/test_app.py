"""The app's flows through Streamlit's AppTest, against a generated tiny archive named by CIFAR10_DATA."""
from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from cifar.config import PRESETS, QUICK_DEMO
from cifar.store import list_runs

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def runs_dir(tmp_path, tiny_archive, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(tiny_archive))
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(tmp_path / "runs"))
    # The plain way to keep a page fresh: AppTest waits for a script run to end, and a streaming
    # page's run ends only when its run does (the browser tests stream).
    monkeypatch.setenv("CIFAR_LIVE_UPDATES", "poll")
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


def test_controls_start_at_the_quick_demo_and_presets_fill_them(runs_dir):
    at = new_app()  # the first run is one click and short: the Quick demo's single epoch
    assert not at.exception
    assert at.radio(key="preset").value == "Quick demo"
    assert at.slider(key="epochs").value == QUICK_DEMO.epochs == 1
    assert at.slider(key="conv_dropout").value == 0.2 and at.slider(key="dense_dropout").value == 0.5
    assert at.number_input(key="learning_rate").value == QUICK_DEMO.learning_rate
    assert at.selectbox(key="batch_size").value == 64
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
    at.selectbox(key="gallery_class").set_value("ship").run()
    tiles = tile_captions(at)
    assert tiles and all("✓ ship" in tile or "true: ship" in tile for tile in tiles)
    # Right and wrong in colour and in words, never in emoji alone.
    assert all(tile.startswith((":green[**✓", ":red[**✗")) and "❌" not in tile and "✅" not in tile for tile in tiles)
    at.checkbox(key="gallery_mistakes").check().run()  # one class and only its mistakes, together
    tiles = tile_captions(at)
    if tiles:
        assert all(tile.startswith(":red[**✗") and tile.endswith(":red[true: ship]") for tile in tiles)
    else:  # a model that is right on every ship has no mistakes to show, and says so
        assert any("no mistakes at all" in info.value for info in at.info)


def tile_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith((":green[**✓", ":red[**✗"))]


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
    charts_without_uploads = 4  # loss and accuracy curves, confusion matrix, per-class accuracy
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
    visitor = new_app()  # someone else, later, with no link: sees the latest saved run, and is told so
    assert not visitor.exception
    assert any("this is the latest saved run" in info.value for info in visitor.info)
    assert any(m.label == "Test accuracy" for m in visitor.metric)
    assert visitor.selectbox(key="saved_run").value == run_id
    assert visitor.button(key="open_run").disabled  # it is on screen already
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
    (saved.folder / "model.tflite").write_bytes(b"garbage")  # what the page predicts with
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = saved.run_id
    at.run()
    assert not at.exception
    assert any("could not be opened" in error.value for error in at.error)


def wait_for(at: AppTest, condition, timeout: float = 60) -> AppTest:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition(at):
            return at
        time.sleep(0.3)
        at.run()
    raise AssertionError(f"the page never showed what was waited for:\n{page_text(at)}")


def training(at: AppTest) -> bool:
    return any("Training…" in bar.proto.text for bar in at.get("progress"))


def test_train_while_a_run_trains_queues_the_new_run_and_its_owner_can_cancel_it(runs_dir):
    teacher = new_app()
    teacher.slider(key="epochs").set_value(50).run()
    teacher.button(key="train").click().run()
    wait_for(teacher, training)  # until the worker takes it up, the teacher's run is itself first in line
    student = new_app()  # a second visitor attaches to the live run
    assert student.session_state.run_id == teacher.session_state.run_id
    assert any("joins the queue" in caption.value for caption in student.caption)
    student.text_input(key="your_name").set_value("Ada").run()
    student.button(key="train").click().run()
    assert not student.exception
    queued_id = student.session_state.run_id
    assert queued_id != teacher.session_state.run_id
    assert any("queued, number 1 in line" in info.value for info in student.info), page_text(student)
    teacher.run()
    assert any("**1.** Ada" in text for text in page_text(teacher).splitlines()), page_text(teacher)
    assert [b for b in teacher.button if b.key == f"cancel_{queued_id}"]  # no teacher code: anyone may cancel
    student.button(key=f"cancel_{queued_id}").click().run()
    assert not student.exception
    from cifar.runstore import RunStore

    store = RunStore(runs_dir)
    assert store.get(queued_id).state == "cancelled"
    teacher.button(key="stop").click().run()
    wait_for(teacher, lambda at: any(m.label == "Test accuracy" for m in at.metric))
    assert store.get(teacher.session_state.run_id).state == "stopped"


def test_without_a_teacher_code_anyone_may_stop_a_run(runs_dir):
    teacher = new_app()
    teacher.slider(key="epochs").set_value(50).run()
    teacher.button(key="train").click().run()
    wait_for(teacher, training)  # stopped before its first step, a run would save nothing to check
    student = new_app()
    assert not student.button(key="stop").disabled
    student.button(key="stop").click().run()
    assert not student.warning, page_text(student)
    wait_for(teacher, lambda at: any(m.label == "Test accuracy" for m in at.metric))
    assert list_runs(runs_dir)[0].metrics["status"] == "stopped"


def test_with_a_teacher_code_a_student_cannot_stop_the_teachers_run_but_the_teacher_can(runs_dir, monkeypatch):
    monkeypatch.setenv("CIFAR_TEACHER_CODE", "owl-42")
    teacher = new_app()
    teacher.text_input(key="teacher_code").set_value("owl-42").run()
    assert any("You are the teacher" in caption.value for caption in teacher.caption)
    teacher.slider(key="epochs").set_value(50).run()
    teacher.button(key="train").click().run()
    run_id = teacher.session_state.run_id
    wait_for(teacher, training)

    student = new_app()
    student.text_input(key="teacher_code").set_value("owl-41").run()  # a wrong guess changes nothing
    assert any("not the teacher code" in caption.value for caption in student.caption)
    student.button(key="stop").click().run()
    assert [w.value for w in student.warning] == ["Only the teacher or whoever started this run can stop it."]
    from cifar.runstore import RunStore

    store = RunStore(runs_dir)
    time.sleep(1.0)  # longer than the worker takes to notice a stop request
    assert store.get(run_id).state == "running" and not store.get(run_id).stop_requested

    student.button(key="train").click().run()  # students still queue runs of their own
    own = student.session_state.run_id
    assert store.get(own).state == "queued"
    assert not [b for b in student.button if b.key == "clear_queue"]  # the teacher's button only
    teacher.run()
    teacher.button(key="clear_queue").click().run()
    assert store.get(own).state == "cancelled"

    teacher.button(key="stop").click().run()
    assert not teacher.warning
    wait_for(teacher, lambda at: any(m.label == "Test accuracy" for m in at.metric))
    assert store.get(run_id).state == "stopped"


def test_a_link_to_a_run_cut_short_by_a_crash_says_it_was_interrupted_and_keeps_its_curves(runs_dir):
    from cifar.config import TrainConfig
    from cifar.runstore import RunStore

    store = RunStore(runs_dir)  # as a server that died mid-run leaves it: running, with some curve points
    run_id = store.submit(TrainConfig(epochs=4), owner="someone")
    store.claim("local-1")
    store.append(run_id, [{"event": "start", "epochs": 4, "steps_per_epoch": 10, "train_size": 320, "config": {}}]
                 + [{"event": "batch", "epoch": 1, "step": step, "progress": step / 40, "loss": 2.3 - step / 20,
                     "accuracy": 0.1 + step / 40, "images": 32, "images_done": 32 * step} for step in range(1, 9)])
    link = AppTest.from_file(APP, default_timeout=60)
    link.query_params["run"] = run_id
    link.run()  # the server's start marks the run interrupted
    assert not link.exception
    assert any(w.value.startswith("Interrupted") for w in link.warning), page_text(link)
    curves = link.get("plotly_chart")
    assert [chart.key.rsplit("_", 1)[1] for chart in curves] == ["loss", "accuracy"]
    assert store.get(run_id).state == "interrupted"
    unknown = AppTest.from_file(APP, default_timeout=60)
    unknown.query_params["run"] = "20200101-000000-000000"
    unknown.run()
    assert any("There is no run" in w.value for w in unknown.warning)


def test_a_try_this_link_fills_the_sidebar_and_says_what_it_could_not_use(runs_dir):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"preset": "quick", "epochs": "3", "dense_dropout": "0"})
    at.run()
    assert not at.exception
    assert at.radio(key="preset").value == "Quick demo"
    assert at.slider(key="epochs").value == 3 and at.slider(key="dense_dropout").value == 0.0
    assert at.number_input(key="learning_rate").value == QUICK_DEMO.learning_rate
    assert not at.sidebar.warning
    bad = AppTest.from_file(APP, default_timeout=60)
    bad.query_params.update({"epochs": "80", "batch_size": "100", "conv_dropout": "0.1"})
    bad.run()
    assert not bad.exception
    assert bad.radio(key="preset").value == "Seed recipe"
    assert bad.slider(key="epochs").value == PRESETS["Seed recipe"].epochs  # 80 is past the slider's 50
    assert bad.slider(key="conv_dropout").value == 0.1
    warning = bad.sidebar.warning[0].value
    assert "epochs=80 was left out" in warning and "batch_size=100 was left out" in warning


def test_the_watch_list_starts_with_eight_classes_takes_a_gallery_picture_and_replays_by_epoch(runs_dir):
    from cifar.runstore import RunStore
    from tests.synthetic import learnable_images

    at = new_app()
    y_test = learnable_images(200, seed=1)[1]  # the tiny archive's test labels
    first = at.multiselect(key="watch_list").value
    assert len(first) == 8 and len({int(y_test[int(option.split(":")[1])]) for option in first}) == 8
    quick_settings(at, epochs=2)
    train_to_the_end(at)
    watch_buttons = [button for button in at.button if button.key and button.key.startswith("watch_")
                     and button.key[len("watch_"):].isdigit()]
    watching = [button for button in watch_buttons if f"test:{button.key.split('_')[1]}" in first]
    assert all(button.disabled and button.label == "Watching" for button in watching)  # a picture is watched once
    watch_buttons = [button for button in watch_buttons if button.key not in {button.key for button in watching}]
    added = int(watch_buttons[0].key.split("_")[1])
    watch_buttons[0].click().run()
    assert at.multiselect(key="watch_list").value == [*first, f"test:{added}"]
    at.button(key="train").click().run()
    run_id = at.session_state.run_id
    train_to_the_end_of(at, run_id, runs_dir)
    events = RunStore(runs_dir).events_after(run_id)
    [watched] = [event["items"] for event in events if event["event"] == "watch_list"]
    assert [item["test_index"] for item in watched] == [*[int(o.split(":")[1]) for o in first], added]
    assert [event["epoch"] for event in events if event["event"] == "snapshot"] == [0, 1, 2]
    scrub = at.select_slider(key="epoch_scrub")
    assert list(scrub.options) == ["step 0", "epoch 1", "epoch 2"] and scrub.value == 2
    assert any("After epoch 2 of 2" in caption.value for caption in at.caption)
    scrub.set_value(0).run()
    assert any("Before training (step 0)" in caption.value for caption in at.caption)
    [stories] = [block.value for block in at.markdown if block.value.startswith("- test image")]
    assert len(stories.splitlines()) == 9  # one story per watched picture
    assert all(re.search(r"^- test image \d+ \(\w+\): \w+ at epochs? 0", line) for line in stories.splitlines()), stories


def train_to_the_end_of(at: AppTest, run_id: str, runs_dir: Path) -> None:
    from cifar.runstore import RunStore

    store = RunStore(runs_dir)
    deadline = time.monotonic() + 120
    while store.get(run_id).state in ("queued", "running"):
        assert time.monotonic() < deadline, "the run did not end in time"
        time.sleep(0.5)
    time.sleep(1.0)  # the worker writes the pages' copy of the model after it saves
    at.run()


def test_pause_and_resume_by_the_owner_or_the_teacher_and_the_curves_show_the_pause(runs_dir, monkeypatch):
    from cifar.runstore import RunStore

    monkeypatch.setenv("CIFAR_TEACHER_CODE", "owl-42")
    owner = new_app()
    owner.slider(key="epochs").set_value(50).run()
    owner.button(key="train").click().run()
    run_id = owner.session_state.run_id
    wait_for(owner, training)
    store = RunStore(runs_dir)
    student = new_app()
    assert student.session_state.run_id == run_id and not student.button(key="pause").disabled
    student.button(key="pause").click().run()
    assert "Only the teacher or whoever started this run can pause it." in [w.value for w in student.warning]
    assert not store.get(run_id).pause_requested
    owner.button(key="pause").click().run()
    assert store.get(run_id).pause_requested and owner.button(key="pause").disabled
    paused = wait_for(owner, lambda at: any("Paused in epoch" in text for text in progress_texts(at)))
    points = len([e for e in store.events_after(run_id) if e["event"] == "batch"])
    time.sleep(1.5)
    assert len([e for e in store.events_after(run_id) if e["event"] == "batch"]) == points
    owner.button(key="resume").click().run()
    assert not store.get(run_id).pause_requested
    wait_for(owner, lambda at: len([e for e in store.events_after(run_id) if e["event"] == "batch"]) > points)
    owner.button(key="stop").click().run()
    wait_for(owner, lambda at: any(m.label == "Test accuracy" for m in at.metric))
    loss_chart = next(chart for chart in owner.get("plotly_chart") if "Loss" in chart.proto.spec)
    import json

    shapes = json.loads(loss_chart.proto.spec)["layout"].get("shapes", [])
    assert len(shapes) == 1 and shapes[0]["line"]["dash"] == "dash"  # the pause, where it happened
    assert paused


def progress_texts(at: AppTest) -> list[str]:
    return [element.proto.text for element in at.get("progress")]


def test_a_cell_of_the_confusion_matrix_shows_its_images_and_each_picture_where_the_network_looked(runs_dir, tiny_archive):
    from cifar.data import load_data
    from cifar.inference import TEST_PROBABILITIES_FILE

    at = new_app()
    quick_settings(at, epochs=2)
    train_to_the_end(at)
    run = list_runs(runs_dir)[0]
    _, (_, y_test), class_names = load_data(str(tiny_archive))
    predicted = np.load(run.folder / TEST_PROBABILITIES_FILE).argmax(axis=1)
    reference = np.zeros((10, 10), int)
    np.add.at(reference, (y_test, predicted), 1)
    for truth, said in (("cat", "cat"), ("cat", "dog"), ("ship", "airplane")):  # a right cell and two mistakes
        at.selectbox(key="cell_true").set_value(truth)
        at.selectbox(key="cell_predicted").set_value(said).run()
        assert not at.exception
        count = reference[class_names.index(truth), class_names.index(said)]
        headings = [m.value for m in at.markdown if m.value.startswith(f"**True {truth}, predicted {said}: ")]
        assert headings == [f"**True {truth}, predicted {said}: {count:,} test images"
                            f"{'; showing the 24 it was surest of' if count > 24 else ''}**"], page_text(at)
        tiles = [b for b in at.button if b.key and b.key.startswith("cell_inspect_")]
        assert len(tiles) == min(count, 24)
        assert all(y_test[int(b.key.rsplit("_", 1)[1])] == class_names.index(truth) for b in tiles)
    at.selectbox(key="cell_true").set_value("cat")
    at.selectbox(key="cell_predicted").set_value("cat").run()
    [b for b in at.button if b.key and b.key.startswith("cell_inspect_")][0].click().run()
    assert not at.exception
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert any(caption.startswith("Test image") for caption in captions)
    assert any(caption.startswith("Where it looked for cat") for caption in captions), captions
    at.file_uploader(key="upload").set_value(("red.png", png_bytes((230, 20, 20)), "image/png")).run()
    assert not at.exception and not at.error
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert sum(caption.startswith("Where it looked for") for caption in captions) == 2  # the dialog's and the upload's
