"""Tests for cifar.data: every source it reads from, its refusal of unsafe pickles,
and the one clear DataError it raises for each way the data can be missing or broken.

The reference throughout is the data written by tests/synthetic.py in the official
format: what comes back must equal what was written.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import cifar.data
from cifar.data import DataError, load_data
from tests.synthetic import CIFAR10_CLASSES, add_to_tar, learnable_images, write_archive

UNREACHABLE_URL = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # port 9 (discard) refuses


@pytest.fixture
def written() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Small train and test splits; 53 does not split evenly into the 5 training batches."""
    return learnable_images(53, seed=3), learnable_images(20, seed=4)


@pytest.fixture
def no_ambient_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Keras home, no CIFAR10_DATA and an unreachable URL; returns the cache dir."""
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(cifar.data, "CIFAR10_URL", UNREACHABLE_URL)
    return tmp_path / "keras_home" / "datasets"


def assert_loaded_equals(loaded, train, test, class_names) -> None:
    (x_train, y_train), (x_test, y_test), loaded_names = loaded
    for images, labels, (expected_images, expected_labels) in (
        (x_train, y_train, train), (x_test, y_test, test)
    ):
        assert images.dtype == np.uint8 and images.flags.c_contiguous
        assert images.shape == (len(expected_images), 32, 32, 3)
        assert labels.dtype == np.int32 and labels.shape == (len(expected_labels),)
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)
    assert loaded_names == list(class_names)


@pytest.mark.parametrize("folder", [False, True], ids=["archive", "folder"])
def test_round_trip_of_official_format(tmp_path, written, folder):
    train, test = written
    path = write_archive(tmp_path, train, test, CIFAR10_CLASSES, folder=folder)
    assert_loaded_equals(load_data(path), train, test, CIFAR10_CLASSES)


def test_pixels_are_read_as_channels_planes(tmp_path):
    # One pure-red image: the first 1024 bytes of an official row are the red plane.
    red = np.zeros((1, 32, 32, 3), np.uint8)
    red[..., 0] = 255
    labels = np.zeros(1, np.int64)
    folder = write_archive(tmp_path, (red, labels), (red, labels), CIFAR10_CLASSES, folder=True)
    row = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")[b"data"][0]
    assert row[:1024].min() == 255 and row[1024:].max() == 0
    (_, _), (x_test, _), _ = load_data(folder)
    assert (x_test[0, :, :, 0] == 255).all() and (x_test[0, :, :, 1:] == 0).all()


@pytest.mark.parametrize("folder", [False, True], ids=["archive", "folder"])
def test_cifar100_uses_fine_labels_and_counts_classes_from_data(tmp_path, folder):
    train, test = learnable_images(300, num_classes=100), learnable_images(100, 100, seed=1)
    names = [f"fine_class_{i}" for i in range(100)]
    path = write_archive(tmp_path, train, test, names, kind="cifar100", folder=folder)
    loaded = load_data(path)
    assert_loaded_equals(loaded, train, test, names)
    assert len(loaded[2]) == 100 and loaded[0][1].max() == 99


@pytest.mark.parametrize("folder", [False, True], ids=["archive", "folder"])
def test_directory_holding_a_copy(tmp_path, written, folder):
    train, test = written
    write_archive(tmp_path, train, test, CIFAR10_CLASSES, folder=folder)
    assert_loaded_equals(load_data(tmp_path), train, test, CIFAR10_CLASSES)


def test_cifar10_data_env_var_is_used_without_a_path(monkeypatch, no_ambient_data, tiny_archive):
    monkeypatch.setenv("CIFAR10_DATA", str(tiny_archive))
    (x_train, _), (x_test, _), _ = load_data()
    assert len(x_train) == 1000 and len(x_test) == 200


def test_explicit_path_wins_over_env_var(monkeypatch, tmp_path, written, tiny_archive):
    train, test = written
    monkeypatch.setenv("CIFAR10_DATA", str(tiny_archive))
    path = write_archive(tmp_path, train, test, CIFAR10_CLASSES)
    assert_loaded_equals(load_data(path), train, test, CIFAR10_CLASSES)


def test_env_var_naming_a_missing_path_says_so(monkeypatch, no_ambient_data, tmp_path):
    monkeypatch.setenv("CIFAR10_DATA", str(tmp_path / "not_there"))
    with pytest.raises(DataError, match="CIFAR10_DATA"):
        load_data()


@pytest.mark.parametrize("folder", [False, True], ids=["archive", "folder"])
def test_keras_cache_is_used(no_ambient_data, written, folder):
    train, test = written
    write_archive(no_ambient_data, train, test, CIFAR10_CLASSES, folder=folder)
    assert_loaded_equals(load_data(), train, test, CIFAR10_CLASSES)


class _WritesAFile:
    """Unpickling this opens (so creates) a file: what an attacker's batch could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _RunsAShellCommand(_WritesAFile):
    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("payload", [_WritesAFile, _RunsAShellCommand], ids=["open", "os.system"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, written, payload):
    train, test = written
    # The payload must really act when loaded by plain pickle, or this test proves nothing.
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps({b"data": payload(control)}, protocol=2))
    assert control.exists()

    marker = tmp_path / "marker"
    folder = write_archive(tmp_path / "src", train, test, CIFAR10_CLASSES, folder=True)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for file in sorted(folder.iterdir()):
            raw = file.read_bytes()
            if file.name == "data_batch_1":
                raw = pickle.dumps({b"labels": [0], b"data": payload(marker)}, protocol=2)
            add_to_tar(tar, f"cifar-10-batches-py/{file.name}", raw)

    with pytest.raises(DataError, match="Refused to load data_batch_1") as refused:
        load_data(archive)
    assert "system, which" in str(refused.value) or "open, which" in str(refused.value)
    assert not marker.exists()


def test_offline_without_data_fails_fast_with_advice(no_ambient_data):
    started = time.monotonic()
    with pytest.raises(DataError, match="CIFAR10_DATA") as failure:
        load_data()
    assert time.monotonic() - started < 20
    assert UNREACHABLE_URL in str(failure.value)
    assert not any(no_ambient_data.iterdir())  # no half-written download left behind


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass


@pytest.fixture
def served_archive(tmp_path, written):
    """Serve a generated cifar-10-python.tar.gz over local HTTP; yields (url, its bytes)."""
    train, test = written
    archive = write_archive(tmp_path / "served", train, test, CIFAR10_CLASSES)
    handler = functools.partial(_QuietHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{archive.name}", archive.read_bytes()
    finally:
        server.shutdown()
        server.server_close()


def test_download_lands_in_cache_and_loads(monkeypatch, no_ambient_data, written, served_archive):
    url, archive_bytes = served_archive
    monkeypatch.setattr(cifar.data, "CIFAR10_URL", url)
    monkeypatch.setattr(cifar.data, "CIFAR10_SHA256", hashlib.sha256(archive_bytes).hexdigest())
    monkeypatch.setattr(cifar.data, "DOWNLOAD_CHUNK_BYTES", 4096)  # several progress reports
    events: list[dict] = []

    loaded = load_data(progress=events.append)

    assert_loaded_equals(loaded, *written, CIFAR10_CLASSES)
    cached = no_ambient_data / "cifar-10-python.tar.gz"
    assert cached.read_bytes() == archive_bytes
    assert [p.name for p in no_ambient_data.iterdir()] == [cached.name]
    downloads = [e for e in events if e["event"] == "download"]
    assert len(downloads) > 1
    assert [e["bytes_done"] for e in downloads] == sorted(e["bytes_done"] for e in downloads)
    assert downloads[-1]["bytes_done"] == downloads[-1]["bytes_total"] == len(archive_bytes)
    assert events[-1] == {"event": "loading", "source": str(cached)}

    # The second call finds the cache and does not download again.
    monkeypatch.setattr(cifar.data, "CIFAR10_URL", UNREACHABLE_URL)
    assert_loaded_equals(load_data(), *written, CIFAR10_CLASSES)


def test_download_with_wrong_checksum_leaves_nothing(monkeypatch, no_ambient_data, served_archive):
    url, _ = served_archive
    monkeypatch.setattr(cifar.data, "CIFAR10_URL", url)
    monkeypatch.setattr(cifar.data, "CIFAR10_SHA256", "0" * 64)
    with pytest.raises(DataError, match="sha256"):
        load_data()
    assert not any(no_ambient_data.iterdir())


def test_missing_path_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "nowhere")


def test_directory_without_cifar_raises_data_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(DataError, match="official python format"):
        load_data(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_archive_raises_data_error(tmp_path, tiny_archive, damage):
    good = tiny_archive.read_bytes()
    bad = os.urandom(4096) if damage == "garbage" else good[: len(good) // 2]
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(bad)
    with pytest.raises(DataError, match="(?i)re-download"):
        load_data(path)


def test_archive_missing_a_batch_raises_data_error(tmp_path, written):
    folder = write_archive(tmp_path, *written, CIFAR10_CLASSES, folder=True)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 missing"):
        load_data(folder)


def _rewrite_batch(folder: Path, name: str, **changes) -> None:
    batch = pickle.loads((folder / name).read_bytes(), encoding="bytes")
    batch.update({key.encode(): value for key, value in changes.items()})
    (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize(
    "changes, complaint",
    [
        ({"data": np.zeros((4, 3000), np.uint8)}, r"holds uint8 \(4, 3000\)"),
        ({"data": np.zeros((4, 3072), np.float32)}, "holds float32"),
        ({"labels": [0, 1]}, "one integer label per image"),
        ({"labels": [0, 1, 2, 10]}, "labels outside 0..9"),
    ],
    ids=["wrong-width", "wrong-dtype", "label-count", "label-range"],
)
def test_malformed_batch_raises_data_error(tmp_path, written, changes, complaint):
    folder = write_archive(tmp_path, *written, CIFAR10_CLASSES, folder=True)
    batch = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3], **changes}
    _rewrite_batch(folder, "test_batch", **batch)
    with pytest.raises(DataError, match=complaint):
        load_data(folder)


@pytest.mark.parametrize("split, batches", [("training", [f"data_batch_{i}" for i in range(1, 6)]),
                                            ("test", ["test_batch"])])
def test_a_split_with_no_images_raises_data_error(tmp_path, written, split, batches):
    # Empty batches are valid one at a time; a whole split of them has nothing to train or test on.
    folder = write_archive(tmp_path, *written, CIFAR10_CLASSES, folder=True)
    for name in batches:
        _rewrite_batch(folder, name, data=np.zeros((0, 3072), np.uint8), labels=[])
    with pytest.raises(DataError, match=f"has no {split} images"):
        load_data(folder)


def test_importing_loads_nothing_heavy():
    # Run in a fresh interpreter: this process may already have imported anything.
    import subprocess
    import sys

    code = "import sys, cifar.data; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    assert result.stdout.strip() == "False"
