"""On the real CIFAR-10, when a copy is at hand: CIFAR10_DATA names it. Skipped otherwise.

The other tests use generated images; these check the claims that only real pictures can:
the copy reads as the official dataset, and the Quick demo reaches 60% in its one epoch
(a minute or less on two cores).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_COPY = os.environ.get("CIFAR10_DATA", "")
pytestmark = pytest.mark.skipif(
    not REAL_COPY or not Path(REAL_COPY).exists(),
    reason="CIFAR10_DATA does not name a real CIFAR-10 copy (cifar-10-python.tar.gz or its folder)",
)


@pytest.fixture(scope="module")
def real_data():
    from cifar.data import load_data

    dataset = load_data(REAL_COPY)
    if len(dataset[2]) != 10:
        pytest.skip(f"CIFAR10_DATA names a copy with {len(dataset[2])} classes, not CIFAR-10")
    return dataset


def test_the_real_copy_reads_as_the_official_dataset(real_data):
    (x_train, y_train), (x_test, y_test), class_names = real_data
    assert x_train.shape == (50_000, 32, 32, 3) and x_test.shape == (10_000, 32, 32, 3)
    assert class_names[:3] == ["airplane", "automobile", "bird"]
    assert sorted(set(y_train.tolist())) == list(range(10))
    assert [int((y_train == c).sum()) for c in range(10)] == [5_000] * 10
    assert [int((y_test == c).sum()) for c in range(10)] == [1_000] * 10


def test_the_quick_demo_reaches_60_percent_in_its_one_epoch(real_data, tmp_path):
    from cifar.config import QUICK_DEMO
    from cifar.runner import run_training

    assert QUICK_DEMO.epochs == 1
    metrics = run_training(QUICK_DEMO.replace(validation="none"), tmp_path / "quick", dataset=real_data)
    assert metrics["status"] == "finished"
    assert metrics["test_accuracy"] >= 0.60, metrics["test_accuracy"]
