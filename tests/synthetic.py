"""Synthetic CIFAR stand-ins for the tests: learnable images and official-format archives.

Tests never touch the real 170 MB download. `learnable_images` makes small data a
ConvNet can learn in a few epochs, and `write_archive` writes any images in exactly the
layout of the official cifar-10-python.tar.gz / cifar-100-python.tar.gz, so the loader
is tested against the real format (the same recipe as shared/data/make_cifar10_archive.py).
"""
from __future__ import annotations

import colorsys
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
TRAIN_BATCHES = 5  # the official CIFAR-10 training set comes as data_batch_1..5
ARCHIVE_MTIME = 1230768000  # fixed, so the same data always gives the same archive bytes


def learnable_images(n: int, num_classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return n uint8 images (n, 32, 32, 3) and balanced int labels (n,).

    Class c is drawn as stripes of its own orientation and period, in its own hue, on a
    dark background; random brightness and pixel noise keep no two images identical.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes)
    colours = np.array(
        [colorsys.hsv_to_rgb(c / num_classes, 0.85, 1.0) for c in range(num_classes)],
        np.float32,
    ) * 255
    stripes = np.stack([_stripes(c) for c in range(num_classes)])
    brightness = rng.uniform(0.6, 1.0, size=(n, 1, 1, 1)).astype(np.float32)
    noise = rng.normal(0, 12, size=(n, 32, 32, 3)).astype(np.float32)
    pictures = (0.15 + 0.85 * stripes[labels][..., None]) * colours[labels][:, None, None, :]
    images = np.clip(brightness * pictures + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def _stripes(class_index: int) -> np.ndarray:
    # Four orientations times three periods tell 12 classes apart by shape alone;
    # beyond that the hue still differs.
    orientation, period = class_index % 4, 4 + 2 * (class_index // 4 % 3)
    rows, cols = np.mgrid[0:32, 0:32]
    along = (rows, cols, rows + cols, rows - cols + 32)[orientation]
    return ((along // (period // 2)) % 2).astype(np.float32)


def write_archive(
    path: str | Path,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: list[str],
    *,
    kind: str = "cifar10",
    folder: bool = False,
) -> Path:
    """Write (images, labels) splits into `path` in the official CIFAR python format.

    kind is "cifar10" (data_batch_1..5, test_batch, batches.meta) or "cifar100"
    (train, test, meta with fine and coarse labels). Returns the .tar.gz written, or
    with folder=True the extracted folder (cifar-10-batches-py / cifar-100-python).
    """
    if kind == "cifar10":
        top, files = "cifar-10-batches-py", _cifar10_files(train, test, class_names)
    elif kind == "cifar100":
        top, files = "cifar-100-python", _cifar100_files(train, test, class_names)
    else:
        raise ValueError(f"kind must be 'cifar10' or 'cifar100', not {kind!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if folder:
        (path / top).mkdir(exist_ok=True)
        for name, obj in files.items():
            (path / top / name).write_bytes(pickle.dumps(obj, protocol=2))
        return path / top
    archive = path / ("cifar-10-python.tar.gz" if kind == "cifar10" else "cifar-100-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for name, obj in files.items():
            add_to_tar(tar, f"{top}/{name}", pickle.dumps(obj, protocol=2))
    return archive


def add_to_tar(tar: tarfile.TarFile, name: str, raw: bytes) -> None:
    """Add one file with the given bytes to an open tar, as the official archives do."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(raw), ARCHIVE_MTIME, 0o644
    tar.addfile(info, io.BytesIO(raw))


def _official_rows(images: np.ndarray) -> np.ndarray:
    # The official rows are 3072 bytes: the red plane, then green, then blue (CHW).
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072), np.uint8)


def _filenames(split: str, labels: np.ndarray) -> list[bytes]:
    return [f"{split}_{label}_{i:05d}.png".encode() for i, label in enumerate(labels)]


def _cifar10_files(train, test, class_names) -> dict[str, dict]:
    (train_images, train_labels), (test_images, test_labels) = train, test
    files: dict[str, dict] = {
        "batches.meta": {
            b"label_names": [name.encode() for name in class_names],
            b"num_cases_per_batch": -(-len(train_labels) // TRAIN_BATCHES),
            b"num_vis": 3072,
        }
    }
    batches = np.array_split(np.arange(len(train_labels)), TRAIN_BATCHES)
    for number, rows in enumerate(batches, start=1):
        files[f"data_batch_{number}"] = {
            b"batch_label": f"training batch {number} of {TRAIN_BATCHES}".encode(),
            b"labels": [int(label) for label in train_labels[rows]],
            b"data": _official_rows(train_images[rows]),
            b"filenames": _filenames("train", train_labels[rows]),
        }
    files["test_batch"] = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(label) for label in test_labels],
        b"data": _official_rows(test_images),
        b"filenames": _filenames("test", test_labels),
    }
    return files


def _cifar100_files(train, test, class_names) -> dict[str, dict]:
    # CIFAR-100 groups its 100 fine classes into 20 superclasses of 5.
    coarse_count = -(-len(class_names) // 5)
    files: dict[str, dict] = {
        "meta": {
            b"fine_label_names": [name.encode() for name in class_names],
            b"coarse_label_names": [f"superclass_{i}".encode() for i in range(coarse_count)],
        }
    }
    for split, (images, labels) in (("train", train), ("test", test)):
        files[split] = {
            b"filenames": _filenames(split, labels),
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": [int(label) for label in labels],
            b"coarse_labels": [int(label) // 5 for label in labels],
            b"data": _official_rows(images),
        }
    return files


def class_folder_zip(path: str | Path, per_class: int = 20, class_names: tuple[str, ...] = ("cat", "dog", "frog"),
                     wrapper: str = "", extra: dict[str, bytes] | None = None, seed: int = 0) -> Path:
    """A .zip of class folders (`cat/0.png`, `dog/3.jpg`, ...) of learnable pictures, larger than
    32x32 so they are shrunk as an upload is, plus any `extra` entries (name -> bytes)."""
    images, labels = learnable_images(per_class * len(class_names), len(class_names), seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{wrapper}/" if wrapper else ""
    with zipfile.ZipFile(path, "w") as archive:
        for index, (pixels, label) in enumerate(zip(images, labels)):
            picture = io.BytesIO()
            kind = "PNG" if index % 2 else "JPEG"
            Image.fromarray(pixels).resize((48, 40)).save(picture, format=kind)
            archive.writestr(f"{prefix}{class_names[label]}/{index}.{kind.lower()}", picture.getvalue())
        for name, raw in (extra or {}).items():
            archive.writestr(name, raw)
    return path
