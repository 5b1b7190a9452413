"""Shared pytest fixtures: small synthetic CIFAR data in the official archive format."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.synthetic import CIFAR10_CLASSES, learnable_images, write_archive


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cifar-10-python.tar.gz of learnable images: 1000 train (seed 0), 200 test (seed 1)."""
    train = learnable_images(1000, seed=0)
    test = learnable_images(200, seed=1)
    return write_archive(tmp_path_factory.mktemp("tiny_cifar"), train, test, CIFAR10_CLASSES)
