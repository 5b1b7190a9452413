"""The data source selector through Streamlit's AppTest: a zip of your own class folders is checked at
once, refused when hostile, trains, and every view then shows its classes; CIFAR-100 trains too."""
from __future__ import annotations


import numpy as np
import pytest

from cifar.store import list_runs
from tests.synthetic import class_folder_zip, learnable_images, write_archive
from tests.test_app import new_app, page_text, runs_dir, train_to_the_end  # noqa: F401

CLASSES = ("cat", "dog", "frog")


def zip_bytes(tmp_path, **options) -> bytes:
    return class_folder_zip(tmp_path / "upload.zip", **options).read_bytes()


def choose_images(at, name: str, data: bytes):
    at.selectbox(key="data_source").set_value("images").run()
    at.file_uploader(key="dataset_zip").set_value((name, data, "application/zip")).run()
    assert not at.exception, at.exception
    return at


def test_a_zip_is_checked_at_once_trains_and_every_view_shows_its_classes(runs_dir, tmp_path):  # noqa: F811
    at = new_app()
    at.selectbox(key="data_source").set_value("images").run()
    at.button(key="train").click().run()  # no zip yet
    assert "Upload a .zip of class folders first" in page_text(at)
    data = zip_bytes(tmp_path, per_class=30, class_names=CLASSES, extra={f"cat/notes{i}.txt": b"x" for i in range(3)})
    choose_images(at, "pets.zip", data)
    assert [s.value for s in at.sidebar.success] == ["pets.zip: 3 classes: cat, dog, frog; 90 pictures; "
                                                     "3 files skipped: not pictures."]
    # The watch-list for the next run is made of this set's test images.
    watch = at.multiselect(key="watch_list")  # AppTest gives the options as the page labels them
    assert len(watch.value) == 8 and all(label.rsplit(": ", 1)[1] in CLASSES for label in watch.options), watch.options
    at.slider(key="epochs").set_value(2).run()
    at = train_to_the_end(at)
    assert not at.exception, at.exception
    [run] = list_runs(runs_dir)
    assert run.metrics["class_names"] == list(CLASSES) and run.config.data_source == "images"
    assert "on your images" in page_text(at)
    # Results: the confusion matrix and per-class accuracy name the set's classes; the cell boxes offer them.
    confusion = next(chart.proto.spec for chart in at.get("plotly_chart") if "predicted class" in chart.proto.spec)
    assert all(f"true {truth}, predicted {said}" in confusion for truth in CLASSES for said in CLASSES)
    assert at.selectbox(key="cell_true").options == list(CLASSES)
    # The gallery picks from the run's own test images, by its classes.
    assert at.selectbox(key="gallery_class").options == ["All classes", *CLASSES]
    assert "18 matching test images" in page_text(at)  # a fifth of 30 from each of the 3 classes
    # The replayed watch-list names them too.
    assert any(f"({name})" in page_text(at) for name in CLASSES)


@pytest.mark.parametrize("extra, refusal", [
    ({"../escaped.jpg": b"x"}, "leaves the folder"),
    ({"cat/inner.zip": b"PK\x03\x04 not really"}, "zips inside zips are not opened"),
])
def test_a_hostile_zip_gets_one_refusal_and_cannot_be_trained(runs_dir, tmp_path, extra, refusal):  # noqa: F811
    at = choose_images(new_app(), "hostile.zip", zip_bytes(tmp_path, per_class=10, class_names=CLASSES, extra=extra))
    [error] = at.sidebar.error
    assert error.value.startswith("Refused hostile.zip: ") and refusal in error.value
    at.button(key="train").click().run()
    assert "Upload a .zip of class folders first" in page_text(at)
    assert not list_runs(runs_dir) and not (runs_dir / "datasets").exists()


def test_too_few_pictures_gets_one_message(runs_dir, tmp_path):  # noqa: F811
    at = choose_images(new_app(), "small.zip", zip_bytes(tmp_path, per_class=5, class_names=CLASSES))
    [error] = at.sidebar.error
    assert "needs at least 2 class folders with at least 10 pictures each" in error.value


def test_cifar100_trains_and_its_views_show_its_100_classes(runs_dir, tmp_path, monkeypatch):  # noqa: F811
    names = [f"fine_{index:02d}" for index in range(100)]
    archive = write_archive(tmp_path / "c100", learnable_images(400, 100, seed=0), learnable_images(200, 100, seed=1),
                            names, kind="cifar100")
    monkeypatch.setenv("CIFAR100_DATA", str(archive))
    at = new_app()
    at.selectbox(key="data_source").set_value("cifar100").run()
    watch = at.multiselect(key="watch_list")
    assert len(watch.value) == 8 and all(label.rsplit(": ", 1)[1] in names for label in watch.options), watch.options
    at = train_to_the_end(at)
    assert not at.exception, at.exception
    [run] = list_runs(runs_dir)
    assert run.metrics["class_names"] == names and run.config.data_source == "cifar100"
    assert at.selectbox(key="gallery_class").options == ["All classes", *names]
    assert np.sum(run.metrics["confusion_matrix"]) == 200
