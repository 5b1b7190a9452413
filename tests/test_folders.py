"""A user's class folders as a dataset (cifar/folders.py): what is read, what is skipped, what is refused."""
from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar.batches import DataError
from cifar.folders import (MAX_BYTES, MAX_FILES, TEST_SHARE, is_image_folders, load_image_set, read_image_set,
                           save_image_set, split_image_set)
from cifar.images import load_image, to_network_input
from tests.synthetic import class_folder_zip, write_archive, learnable_images, CIFAR10_CLASSES


def tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def test_a_zip_of_class_folders_reads_as_uploads_are_read(tmp_path):
    path = class_folder_zip(tmp_path / "set.zip", per_class=12, class_names=("frog", "cat", "dog"))
    image_set = read_image_set(path)
    assert image_set.class_names == ["cat", "dog", "frog"]  # the folder names, sorted
    assert image_set.images.shape == (36, 32, 32, 3) and image_set.images.dtype == np.uint8
    assert np.bincount(image_set.labels).tolist() == [12, 12, 12]
    assert image_set.summary == "3 classes: cat, dog, frog; 36 pictures"
    # Each picture is what an upload of the same file becomes.
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.startswith("dog/"))
        expected = to_network_input(load_image(archive.read(name)))
    dogs = image_set.images[image_set.labels == 1]
    assert any(np.array_equal(expected, picture) for picture in dogs)


def test_a_wrapper_folder_macos_debris_and_dotfiles_are_taken_off_and_non_pictures_counted(tmp_path):
    extra = {"Holiday set/notes.txt": b"my notes", "Holiday set/cat/broken.jpg": b"not a jpeg at all",
             "Holiday set/dog/readme.md": b"# dogs", "__MACOSX/Holiday set/cat/._0.jpeg": b"\x00\x05\x16\x07",
             "Holiday set/.DS_Store": b"\x00\x00\x00\x01Bud1", "Holiday set/cat/.hidden.png": b"x"}
    path = class_folder_zip(tmp_path / "set.zip", per_class=10, class_names=("cat", "dog"), wrapper="Holiday set",
                            extra=extra)
    image_set = read_image_set(path)
    assert image_set.class_names == ["cat", "dog"]
    assert len(image_set.labels) == 20
    assert image_set.skipped == {"not in a class folder": 1, "not pictures": 2}
    assert image_set.summary.endswith("; 3 files skipped: not in a class folder (1), not pictures (2)")


def test_only_skipped_non_pictures_reads_3_files_skipped_not_pictures(tmp_path):
    extra = {f"cat/note{i}.jpg": b"text" for i in range(3)}
    image_set = read_image_set(class_folder_zip(tmp_path / "s.zip", per_class=10, class_names=("cat", "dog"), extra=extra))
    assert image_set.summary == "2 classes: cat, dog; 20 pictures; 3 files skipped: not pictures"


@pytest.mark.parametrize("classes, per_class, found", [
    (("cat",), 15, "it has: cat 15"),
    (("cat", "dog"), 9, "it has: cat 9, dog 9"),
])
def test_too_few_classes_or_pictures_get_one_clear_message(tmp_path, classes, per_class, found):
    with pytest.raises(DataError) as refused:
        read_image_set(class_folder_zip(tmp_path / "small.zip", per_class=per_class, class_names=classes))
    assert "needs at least 2 class folders with at least 10 pictures each" in str(refused.value)
    assert found in str(refused.value)


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    (tmp_path / "fake.zip").write_bytes(b"this is not a zip")
    with pytest.raises(DataError, match="is not a zip file we can read"):
        read_image_set(tmp_path / "fake.zip")


def hostile_many_files(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(MAX_FILES + 1):
            archive.writestr(f"cat/{index}.txt", b"")
    return path


def hostile_too_big(path: Path) -> Path:
    """One member of 525 MB of zeros: half a megabyte zipped."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("cat/big.bmp", "w", force_zip64=True) as member:
            zeros = bytes(1 << 20)
            for _ in range(MAX_BYTES // len(zeros) + 25):
                member.write(zeros)
    return path


def hostile_path(name: str):
    def make(path: Path) -> Path:
        class_folder_zip(path, per_class=10, class_names=("cat", "dog"), extra={name: b"\xff\xd8 escaped"})
        return path
    return make


def hostile_nested(inner_name: str):
    def make(path: Path) -> Path:
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("layer/zeros.bin", bytes(10_000_000))
        class_folder_zip(path, per_class=10, class_names=("cat", "dog"), extra={inner_name: inner.getvalue()})
        return path
    return make


@pytest.mark.parametrize("make, refusal", [
    (hostile_many_files, "holds 20,001 files, more than the 20,000 allowed"),
    (hostile_too_big, "unpacks to 525 MB, more than the 500 MB allowed"),
    (hostile_path("../escaped.jpg"), "leaves the folder"),
    (hostile_path("cat/../../escaped.jpg"), "leaves the folder"),
    (hostile_path("/tmp/escaped.jpg"), "leaves the folder"),
    (hostile_path("C:/escaped.jpg"), "leaves the folder"),
    (hostile_path("..\\escaped.jpg"), "leaves the folder"),
    (hostile_nested("cat/inner.zip"), "zips inside zips are not opened"),
    (hostile_nested("cat/looks-like-a.jpg"), "zips inside zips are not opened"),
], ids=["files", "bytes", "dotdot", "deep-dotdot", "absolute", "drive", "backslash", "nested", "nested-disguised"])
def test_a_hostile_zip_is_refused_and_nothing_is_written(tmp_path, make, refusal):
    path = make(tmp_path / "hostile.zip")
    before = tree(tmp_path)
    watched = [Path(tempfile.gettempdir()), Path.cwd()]
    listed = [set(os.listdir(folder)) for folder in watched]
    with pytest.raises(DataError) as refused:
        read_image_set(path, name="hostile.zip")
    assert str(refused.value).startswith("Refused hostile.zip: ") and refusal in str(refused.value)
    assert tree(tmp_path) == before
    assert [set(os.listdir(folder)) for folder in watched] == listed


def understate_sizes(path: Path, member: str, size: int) -> None:
    """Rewrite the zip's headers so `member` claims `size` bytes, as a hostile zip might."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    encoded = member.encode()
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):  # central directory, then local header
        start = 0
        while (start := raw.find(signature, start)) >= 0:
            name_at = start + (46 if signature == b"PK\x01\x02" else 30)
            if raw[name_at:name_at + len(encoded)] == encoded:
                assert struct.unpack_from("<I", raw, start + offset)[0] == info.file_size
                struct.pack_into("<I", raw, start + offset, size)
            start += 4
    path.write_bytes(bytes(raw))


def test_a_header_that_understates_a_size_reads_no_more_and_the_file_is_skipped(tmp_path):
    big = io.BytesIO()
    Image.fromarray(learnable_images(1)[0][0]).resize((1000, 1000)).save(big, format="BMP")
    path = class_folder_zip(tmp_path / "lies.zip", per_class=10, class_names=("cat", "dog"),
                            extra={"cat/liar.bmp": big.getvalue()})
    understate_sizes(path, "cat/liar.bmp", 100)
    before = tree(tmp_path)
    image_set = read_image_set(path)
    assert tree(tmp_path) == before
    assert image_set.skipped == {"damaged or encrypted": 1}
    assert len(image_set.labels) == 20


def test_the_split_is_stratified_reproducible_and_disjoint():
    labels = np.repeat(np.arange(3), [10, 25, 40])
    train, test = split_image_set(labels, seed=4)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[test]).tolist() == [round(n * TEST_SHARE) for n in (10, 25, 40)]
    again = split_image_set(labels, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, test), again))
    assert not np.array_equal(test, split_image_set(labels, seed=5)[1])


def test_a_kept_set_loads_back_the_same_and_a_folder_reads_as_its_zip(tmp_path):
    path = class_folder_zip(tmp_path / "set.zip", per_class=10, class_names=("cat", "dog"),
                            extra={"cat/notes.txt": b"x"})
    image_set = read_image_set(path)
    kept = save_image_set(tmp_path / "datasets", image_set)
    assert kept.name == f"{image_set.id}.npz" and len(image_set.id) == 16
    again = load_image_set(tmp_path / "datasets", image_set.id)
    assert np.array_equal(again.images, image_set.images) and np.array_equal(again.labels, image_set.labels)
    assert again.class_names == image_set.class_names and again.skipped == image_set.skipped
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
    from_folder = read_image_set(folder)
    assert np.array_equal(from_folder.images, image_set.images) and from_folder.class_names == ["cat", "dog"]
    assert is_image_folders(folder) and is_image_folders(path)
    assert not is_image_folders(write_archive(tmp_path / "cifar", learnable_images(10), learnable_images(10),
                                              CIFAR10_CLASSES, folder=True).parent)
    with pytest.raises(DataError, match="no longer on this server"):
        load_image_set(tmp_path / "datasets", "0" * 16)
