"""The results views with 100 classes (a CIFAR-100 copy in the official format) and with 3, through
Streamlit's AppTest: a real run trained by the app's worker on generated pictures, then its top
confusions, its table of classes, a confusion's pictures, the gallery, Inspect and an upload.
Fixtures and helpers are tests/test_app.py's; `tiny_archive` is overridden here with these classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from cifar.data import load_data
from cifar.inference import TEST_PROBABILITIES_FILE
from cifar.results import TOP_CLASSES, per_class_table, top_confusions
from cifar.store import list_runs

from tests.synthetic import CIFAR10_CLASSES, learnable_images, write_archive
from tests.test_app import (APP, new_app, page_text, png_bytes, quick_settings, runs_dir,  # noqa: F401
                            tile_captions, train_to_the_end)

# CIFAR-100's fine classes, in the order of their labels, as its meta file names them.
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
]


def hundred_class_archive(folder) -> object:
    """1,000 training and 500 test pictures of 100 classes, as cifar-100-python.tar.gz."""
    return write_archive(folder, learnable_images(1000, 100, seed=0), learnable_images(500, 100, seed=1),
                         CIFAR100_CLASSES, kind="cifar100")


@pytest.fixture(scope="module", params=[100, 3], ids=["100 classes", "3 classes"])
def tiny_archive(request, tmp_path_factory):
    """Replaces conftest's: the app under test loads these classes."""
    folder = tmp_path_factory.mktemp(f"classes_{request.param}")
    if request.param == 100:
        return hundred_class_archive(folder)
    names = ["cat", "dog", "ship"]
    return write_archive(folder, learnable_images(600, 3, seed=0), learnable_images(60, 3, seed=1), names)


def trained_app(runs_dir):  # noqa: F811
    at = new_app()
    quick_settings(at, epochs=1)  # 800 training images, one epoch
    train_to_the_end(at)
    assert not at.exception and not at.error, page_text(at)
    return at, list_runs(runs_dir)[0]


def chart_spec(at, key: str) -> dict:
    [chart] = [chart for chart in at.get("plotly_chart") if chart.key == key]
    return json.loads(chart.proto.spec)


def cell_tiles(at) -> list[int]:
    return [int(b.key.rsplit("_", 1)[1]) for b in at.button if b.key and b.key.startswith("cell_inspect_")]


def test_a_run_of_many_or_few_classes_shows_its_mistakes_its_classes_and_their_pictures(runs_dir, tiny_archive,  # noqa: F811
                                                                                         monkeypatch, tmp_path):
    at, run = trained_app(runs_dir)
    _, (x_test, y_test), class_names = load_data(str(tiny_archive))
    metrics = run.metrics
    assert metrics["class_names"] == class_names and len(metrics["confusion_matrix"]) == len(class_names)
    predicted = np.load(run.folder / TEST_PROBABILITIES_FILE).argmax(axis=1)
    reference = np.zeros((len(class_names),) * 2, int)
    np.add.at(reference, (y_test, predicted), 1)
    assert np.array_equal(reference, metrics["confusion_matrix"])
    if len(class_names) <= 20:
        few_classes_shown(at, run, class_names, y_test)
    else:
        many_classes_shown(at, run, class_names, y_test, reference)
        # The server now loads CIFAR-10 with as many test images: the classes tell the datasets apart.
        other = write_archive(tmp_path / "ten", learnable_images(200, seed=0), learnable_images(len(y_test), seed=1),
                              CIFAR10_CLASSES)
        monkeypatch.setenv("CIFAR10_DATA", str(other))
        st.cache_resource.clear()
        link = AppTest.from_file(APP, default_timeout=60)
        link.query_params["run"] = run.run_id
        link.run()
        assert not link.exception
        # Said in the results' cell view and in the gallery, which would otherwise name CIFAR-10's pictures
        # with CIFAR-100's classes.
        assert [error.value for error in link.error] == ["This run was tested on a different dataset from the one "
                                                         "loaded now."] * 2, page_text(link)
        assert not [block for block in link.markdown if block.value.startswith("- test image")]  # nor replays them


def few_classes_shown(at, run, class_names, y_test):
    """As with CIFAR-10: a cell per pair, a bar per class, all probabilities; the watch-list covers every class."""
    assert len(chart_spec(at, f"confusion_{run.run_id}")["data"][0]["customdata"]) == len(class_names) ** 2
    assert len(chart_spec(at, f"per_class_{run.run_id}")["data"][0]["y"]) == len(class_names)
    assert not [b for b in at.button if b.key == "confusion_1"] and not at.dataframe
    watched = at.multiselect(key="watch_list").value
    assert len(watched) == 8 and {int(y_test[int(option.split(":")[1])]) for option in watched} == {0, 1, 2}
    stories = [block.value for block in at.markdown if block.value.startswith("- test image")]
    assert len(stories) == 1 and len(stories[0].splitlines()) == 8
    [b for b in at.button if b.key and b.key.startswith("inspect_")][0].click().run()
    assert not at.exception
    assert len(chart_spec(at, "inspected_probabilities")["data"][0]["y"]) == len(class_names)


def many_classes_shown(at, run, class_names, y_test, reference):
    # No chart of 10,000 cells or 100 bars: the mistakes as a list, the classes as a table.
    assert not [chart for chart in at.get("plotly_chart") if chart.key in (f"confusion_{run.run_id}",
                                                                           f"per_class_{run.run_id}")]
    expected = top_confusions(reference, class_names)
    assert expected, "a tiny network of 100 classes makes mistakes"
    listed = [b for b in at.button if b.key and b.key.startswith("confusion_")]
    assert [b.label for b in listed] == [f"{rank}. {c.in_words()}" for rank, c in enumerate(expected, start=1)]
    counts = [c.count for c in expected]
    assert counts == sorted(counts, reverse=True)
    table = at.dataframe[0].value
    rows = per_class_table(reference, class_names)
    assert list(table["class"]) == [row.name for row in rows] and len(table) == 100
    assert list(table["accuracy"]) == sorted(table["accuracy"])  # worst first
    assert list(table["test images"]) == [int((y_test == class_names.index(name)).sum()) for name in table["class"]]
    assert "The whole confusion matrix (100 × 100)" in [e.label for e in at.expander]
    # A first look opens the most common mistake; pressing another listed mistake opens that one.
    assert (at.selectbox(key="cell_true").value, at.selectbox(key="cell_predicted").value) == (
        expected[0].true_class, expected[0].predicted_class)
    second = expected[min(1, len(expected) - 1)]
    listed[min(1, len(expected) - 1)].click().run()
    assert not at.exception
    assert (at.selectbox(key="cell_true").value, at.selectbox(key="cell_predicted").value) == (
        second.true_class, second.predicted_class)
    heading = f"**True {second.true_class}, predicted {second.predicted_class}: {second.count:,} test images"
    assert any(m.value.startswith(heading) for m in at.markdown), page_text(at)
    tiles = cell_tiles(at)
    assert len(tiles) == min(second.count, 24) and all(y_test[i] == second.true_index for i in tiles)
    # The gallery's filter takes any of the 100 names.
    name = class_names[57]
    at.selectbox(key="gallery_class").set_value(name).run()
    shown = tile_captions(at)
    assert shown and all(f"✓ {name}" in tile or f"true: {name}" in tile for tile in shown)
    # Inspect and an upload: the likeliest few classes (and the true one), not 100 bars.
    [b for b in at.button if b.key and b.key.startswith("inspect_")][0].click().run()
    assert not at.exception
    inspected = chart_spec(at, "inspected_probabilities")
    assert TOP_CLASSES <= len(inspected["data"][0]["y"]) <= TOP_CLASSES + 1
    assert any(label.endswith("(true class)") for label in inspected["data"][0]["y"])
    assert inspected["layout"]["annotations"][0]["text"].startswith("The other ")
    at.file_uploader(key="upload").set_value(("red.png", png_bytes((230, 20, 20)), "image/png")).run()
    assert not at.exception and not at.error
    [upload] = [chart for chart in at.get("plotly_chart") if chart.key and chart.key.startswith("upload_")]
    assert len(json.loads(upload.proto.spec)["data"][0]["y"]) == TOP_CLASSES
    assert "The 100 classes it knows" in [e.label for e in at.expander]
    stories = [block.value for block in at.markdown if block.value.startswith("- test image")]
    assert len(stories) == 1 and len(stories[0].splitlines()) == 8  # the watch-list: 8 of the 100 classes
