"""Which pictures a run trains and is tested on, from its config: CIFAR-10, CIFAR-100 (fine labels)
or a user's image set kept in the runs folder (cifar/folders.py).

The worker loads a source once and keeps it (`load_source`), then cuts each run's splits from it
(`run_dataset`): an image set's training and test images depend on the run's seed. The pages ask
`run_test_images` for the test images of the run they show, so every view draws that run's own classes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from cifar.config import DATA_SOURCE_NAMES, TrainConfig
from cifar.data import load_cifar100, load_data
from cifar.folders import ImageSet, datasets_dir, image_set_splits, load_image_set

Split = tuple[np.ndarray, np.ndarray]
Dataset = tuple[Split, Split, list[str]]
Loaded = Union[Dataset, ImageSet]
SourceKey = tuple[str, Optional[str]]
Progress = Callable[[dict], None]


def source_key(config: TrainConfig) -> SourceKey:
    """What must be loaded for this config: ("cifar10", None), ("cifar100", None) or ("images", its id)."""
    return config.data_source, config.dataset if config.data_source == "images" else None


def source_words(config: TrainConfig) -> str:
    return DATA_SOURCE_NAMES[config.data_source]


def load_source(config: TrainConfig, runs_dir: str | Path, path: Optional[str | os.PathLike] = None,
                progress: Optional[Progress] = None) -> Loaded:
    """The config's data as loaded: a CIFAR copy's splits (from `path`, else where cifar.data finds
    it), or the whole image set kept in the runs folder (split per run)."""
    if config.data_source == "images":
        return load_image_set(datasets_dir(runs_dir), config.dataset or "")
    if config.data_source == "cifar100":
        return load_cifar100(path, progress=progress)
    return load_data(path, progress=progress)


def run_dataset(config: TrainConfig, loaded: Loaded) -> Dataset:
    """The run's ((x_train, y_train), (x_test, y_test), class_names)."""
    if isinstance(loaded, ImageSet):
        return image_set_splits(loaded, config.seed)
    return loaded


def run_test_images(config: TrainConfig, runs_dir: str | Path,
               cifar10_path: Optional[str | os.PathLike] = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The test images, labels and class names of a run of this config; the training images are not kept.
    `cifar10_path` names the CIFAR-10 copy; CIFAR-100's is found by cifar.data ($CIFAR100_DATA, the cache)."""
    path = cifar10_path if config.data_source == "cifar10" else None
    _, (x_test, y_test), class_names = run_dataset(config, load_source(config, runs_dir, path))
    return np.ascontiguousarray(x_test), np.ascontiguousarray(y_test), class_names
