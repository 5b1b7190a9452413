"""What the pages predict with (cifar.inference): the LiteRT copy a run saves for the pages must give
what Keras gives (the plain path, its reference), and the pages must open the right one of the two."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("keras")

from cifar.config import TrainConfig
from cifar.inference import (FAILED_MARK, KERNEL_FILE, LITE_FILE, TEST_PROBABILITIES_FILE, KerasModel, LiteModel,
                             open_page_model)
from cifar.runner import run_training
from cifar.store import MODEL_FILE, PREDICTIONS_FILE, load_model
from tests.synthetic import CIFAR10_CLASSES, learnable_images

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A run trained for a few dozen steps and saved for the pages, and the test images it was tested on."""
    folder = tmp_path_factory.mktemp("runs") / "20260101-000000-abcdef"
    test_images, test_labels = learnable_images(300, seed=1)
    run_training(TrainConfig(epochs=1, validation="none"), folder, for_pages=True,
                 dataset=(learnable_images(1000, seed=0), (test_images, test_labels), list(CIFAR10_CLASSES)))
    return folder, test_images


@pytest.fixture(scope="module")
def keras_model(saved_run):
    folder, _ = saved_run
    return KerasModel(load_model(folder)[0])


def test_a_run_saved_for_the_pages_holds_the_litert_copy_the_kernel_and_every_test_images_probabilities(
        saved_run, keras_model):
    folder, test_images = saved_run
    assert {LITE_FILE, KERNEL_FILE, TEST_PROBABILITIES_FILE, MODEL_FILE} <= {path.name for path in folder.iterdir()}
    assert not list(folder.glob("*.partial*"))
    stored = np.load(folder / TEST_PROBABILITIES_FILE)
    assert stored.shape == (len(test_images), 10)
    np.testing.assert_allclose(stored, keras_model.probabilities(test_images), atol=1e-3)  # kept as float16
    np.testing.assert_array_equal(stored.argmax(axis=1), np.load(folder / PREDICTIONS_FILE))


def test_the_litert_copy_gives_what_keras_gives(saved_run, keras_model):
    folder, test_images = saved_run
    lite = LiteModel(folder)
    assert lite.num_classes == keras_model.num_classes == 10
    # 300 images: a full chunk of the interpreter's and a smaller one, so it resizes between them.
    expected = keras_model.probabilities(test_images)
    assert expected.std(axis=0).max() > 0.01  # trained: the images do not all get the same answer
    np.testing.assert_allclose(lite.probabilities(test_images), expected, atol=1e-5)
    np.testing.assert_allclose(lite.probabilities(test_images[7]), expected[7:8], atol=1e-5)  # one image, as uploaded
    for image in test_images[:3]:
        activations = keras_model.conv_activations(image)
        assert activations.shape == (32, 32, 32) and activations.max() > 0
        np.testing.assert_allclose(lite.conv_activations(image), activations, atol=1e-5)
    np.testing.assert_array_equal(lite.conv_kernel(), keras_model.conv_kernel())


def test_a_page_waits_for_the_litert_copy_and_falls_back_to_keras_where_it_could_not_be_made(saved_run, tmp_path):
    folder, test_images = saved_run
    assert isinstance(open_page_model(folder), LiteModel)
    not_yet = tmp_path / "20260101-000000-bbbbbb"
    not_yet.mkdir()
    shutil.copy(folder / MODEL_FILE, not_yet / MODEL_FILE)  # saved, but the worker has yet to write the copy
    assert open_page_model(not_yet) is None
    (not_yet / FAILED_MARK).touch()  # the worker tried and could not
    plain = open_page_model(not_yet)
    assert isinstance(plain, KerasModel)
    np.testing.assert_allclose(plain.probabilities(test_images[:5]), LiteModel(folder).probabilities(test_images[:5]),
                               atol=1e-5)


def test_a_page_predicts_without_tensorflow_in_its_process(saved_run, keras_model, tmp_path):
    folder, test_images = saved_run
    np.save(tmp_path / "images.npy", test_images[:20])
    script = (
        "import sys, numpy as np\n"
        "from cifar.inference import open_page_model\n"
        f"model = open_page_model({str(folder)!r})\n"
        f"np.save({str(tmp_path / 'probabilities.npy')!r}, model.probabilities(np.load({str(tmp_path / 'images.npy')!r})))\n"
        "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    np.testing.assert_allclose(np.load(tmp_path / "probabilities.npy"), keras_model.probabilities(test_images[:20]),
                               atol=1e-5)
