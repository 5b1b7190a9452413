"""A user's own pictures as a dataset: a `.zip` (or, for the command line, a folder) of class folders.

`read_image_set` reads `cat/1.jpg`, `dog/7.png`, ... (one wrapper folder around them is fine, as
zips made by a file manager have; `__MACOSX/` and dotfiles are ignored) straight from the zip,
without extracting anything, and turns every picture into the network's 32x32x3 input the way an
upload is (cifar/images.py). The class names are the folder names, sorted. Files that are not
pictures are skipped and counted. A zip that could hurt the server is refused with one
DataError: too many files, too many bytes (declared, and counted while reading), a path that
leaves the folder, or a zip inside the zip. The reader needs Pillow and numpy only, so the web
process checks an upload at once.

An accepted set is kept as `<id>.npz` in the runs folder's `datasets/` (`save_image_set`), its id
the first 16 hex digits of the zip's sha256: a run names it in its config and finds it again,
and so does its saved page. `split_image_set` splits it into training and test images from the
run's seed; training then holds its validation images out as for CIFAR (cifar/train.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterator, Optional, Union

import numpy as np

from cifar.batches import DataError, Split
from cifar.images import ImageError, load_image, to_network_input
from cifar.batches import IMAGE_SHAPE

MAX_FILES = 20_000  # entries in a zip (or files in a folder): more is refused
MAX_BYTES = 500_000_000  # uncompressed bytes in all: more is refused, declared or read
MAX_PICTURE_BYTES = 50_000_000  # one file bigger than this is skipped, not read
MAX_CLASSES = 100  # as many as CIFAR-100: the confusion matrix stays drawable
MIN_CLASSES = 2
MIN_PER_CLASS = 10
TEST_SHARE = 0.2  # of each class, held out as test images
ID_DIGITS = 16
DATASETS_FOLDER = "datasets"  # in the runs folder
READ_CHUNK = 1 << 20

Source = Union[str, "os.PathLike[str]", bytes, IO[bytes]]
_DRIVE = re.compile(r"^[A-Za-z]:")
_ZIP_MAGIC = b"PK\x03\x04"
_ID = re.compile(rf"^[0-9a-f]{{{ID_DIGITS}}}$")


@dataclass
class ImageSet:
    """Decoded pictures of a user's classes: uint8 (N, 32, 32, 3) images and int32 labels."""

    id: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> files

    @property
    def summary(self) -> str:
        """ "3 classes: cat, dog, frog; 600 pictures; 3 files skipped: not pictures"."""
        words = f"{len(self.class_names)} classes: {', '.join(self.class_names)}; {len(self.labels):,} pictures"
        return words + (f"; {skipped_words(self.skipped)}" if self.skipped else "")


def skipped_words(skipped: dict[str, int]) -> str:
    total = sum(skipped.values())
    reasons = [f"{reason} ({count})" if len(skipped) > 1 else reason for reason, count in sorted(skipped.items())]
    return f"{total:,} file{'s' if total != 1 else ''} skipped: {', '.join(reasons)}"


def read_image_set(source: Source, name: str = "") -> ImageSet:
    """Read a zip (a path, its bytes or a binary file) or a folder of class folders; raises DataError."""
    name = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the zip")
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        return _decode(_folder_files(Path(source), name), name, None)
    try:
        data = _whole(source)
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise DataError(f"{name} is not a zip file we can read ({error}). Zip your class folders and try again.") from None
    with archive:
        return _decode(_zip_files(archive, name), name, hashlib.sha256(data).hexdigest())


def _whole(source: Source) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        return Path(source).read_bytes()
    source.seek(0)
    return source.read()


# One file of the set: its path parts below the top, its size, and how to read at most n bytes of it.
_File = tuple[list[str], int, Callable[[int], bytes]]


def _zip_files(archive: zipfile.ZipFile, name: str) -> Iterator[_File]:
    entries = archive.infolist()
    if len(entries) > MAX_FILES:
        raise DataError(f"Refused {name}: it holds {len(entries):,} files, more than the {MAX_FILES:,} allowed.")
    declared = sum(entry.file_size for entry in entries)
    if declared > MAX_BYTES:
        raise DataError(f"Refused {name}: it unpacks to {declared / 1e6:,.0f} MB, more than the "
                        f"{MAX_BYTES / 1e6:,.0f} MB allowed.")
    files = []
    for entry in entries:
        path = entry.filename.replace("\\", "/")
        parts = path.split("/")
        if path.startswith("/") or _DRIVE.match(path) or ".." in parts:
            raise DataError(f"Refused {name}: the path {entry.filename!r} leaves the folder it unpacks into.")
        parts = [part for part in parts if part not in ("", ".")]
        if entry.is_dir() or _ignored(parts):
            continue
        if path.lower().endswith(".zip"):
            raise DataError(f"Refused {name}: it holds another zip ({entry.filename}); zips inside zips are not "
                            "opened. Zip the class folders themselves.")
        files.append((parts, entry.file_size, _zip_reader(archive, entry)))
    return iter(files)


def _zip_reader(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        with archive.open(entry) as stream:  # never extracted: the bytes go straight to the decoder
            return _bounded(stream, limit)
    return read


def _bounded(stream: IO[bytes], limit: int) -> bytes:
    """At most limit + 1 bytes, read in pieces, so a header that understates a size costs no more."""
    pieces, total = [], 0
    while total <= limit and (piece := stream.read(min(READ_CHUNK, limit + 1 - total))):
        pieces.append(piece)
        total += len(piece)
    return b"".join(pieces)


def _folder_files(folder: Path, name: str) -> Iterator[_File]:
    files = [path for path in sorted(folder.rglob("*")) if path.is_file() and not path.is_symlink()]
    if len(files) > MAX_FILES:
        raise DataError(f"Refused {name}: it holds {len(files):,} files, more than the {MAX_FILES:,} allowed.")
    declared = sum(path.stat().st_size for path in files)
    if declared > MAX_BYTES:
        raise DataError(f"Refused {name}: it holds {declared / 1e6:,.0f} MB, more than the "
                        f"{MAX_BYTES / 1e6:,.0f} MB allowed.")
    for path in files:
        def read(limit: int, path: Path = path) -> bytes:
            with open(path, "rb") as stream:
                return _bounded(stream, limit)
        yield list(path.relative_to(folder).parts), path.stat().st_size, read


def _ignored(parts: list[str]) -> bool:
    return not parts or parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts)


def _decode(files: Iterator[_File], name: str, digest: Optional[str]) -> ImageSet:
    """The pictures by class; digest is the zip's sha256, or None to take it from the pictures (a folder)."""
    # In path order, so a set's pictures (and its split) do not depend on the order a zip tool stored them.
    kept = sorted(((parts, size, read) for parts, size, read in files if not _ignored(parts)), key=lambda file: file[0])
    # One wrapper folder around the class folders, as "my set/cat/1.jpg", is taken off.
    tops = {parts[0] for parts, _, _ in kept}
    if len(tops) == 1 and any(len(parts) >= 3 for parts, _, _ in kept):
        kept = [(parts[1:], size, read) for parts, size, read in kept]
    skipped: Counter[str] = Counter()
    pictures: dict[str, list[np.ndarray]] = {}
    bytes_read = 0
    for parts, size, read in kept:
        if len(parts) < 2:
            skipped["not in a class folder"] += 1
            continue
        if size > MAX_PICTURE_BYTES:
            skipped["too large"] += 1
            continue
        try:
            data = read(min(MAX_PICTURE_BYTES, MAX_BYTES - bytes_read))
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, zlib.error):
            skipped["damaged or encrypted"] += 1  # a wrong checksum, a size the header understated, a password
            continue
        bytes_read += len(data)
        if bytes_read > MAX_BYTES:
            raise DataError(f"Refused {name}: it unpacks to more than the {MAX_BYTES / 1e6:,.0f} MB allowed.")
        if data.startswith(_ZIP_MAGIC):
            raise DataError(f"Refused {name}: it holds another zip ({'/'.join(parts)}); zips inside zips are not "
                            "opened. Zip the class folders themselves.")
        try:
            pixels = to_network_input(load_image(data), IMAGE_SHAPE[0])
        except ImageError:
            skipped["not pictures"] += 1
            continue
        pictures.setdefault(parts[0].strip(), []).append(pixels)
    class_names = sorted(pictures)
    counts = {label: len(pictures[label]) for label in class_names}
    if len(class_names) > MAX_CLASSES:
        raise DataError(f"{name} has {len(class_names)} class folders; at most {MAX_CLASSES} are allowed.")
    if len(class_names) < MIN_CLASSES or min(counts.values()) < MIN_PER_CLASS:
        found = ", ".join(f"{label} {count}" for label, count in counts.items()) or "no pictures in class folders"
        also = f" ({skipped_words(dict(skipped))})" if skipped else ""
        raise DataError(f"{name} needs at least {MIN_CLASSES} class folders with at least {MIN_PER_CLASS} pictures "
                        f"each, as cat/1.jpg, dog/7.png; it has: {found}{also}.")
    images = np.stack([pixels for label in class_names for pixels in pictures[label]])
    labels = np.concatenate([np.full(counts[label], index, np.int32) for index, label in enumerate(class_names)])
    if digest is None:
        content = hashlib.sha256(images.tobytes() + labels.tobytes())
        content.update(json.dumps(class_names).encode())
        digest = content.hexdigest()
    return ImageSet(digest[:ID_DIGITS], images, labels, class_names, dict(skipped))


def split_image_set(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training and test images' indices: TEST_SHARE of each class for testing, picked from the seed."""
    rng = np.random.default_rng([seed, 2])
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held = min(len(members) - 1, max(1, round(len(members) * TEST_SHARE)))
        test.append(members[:held])
        train.append(members[held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def image_set_splits(image_set: ImageSet, seed: int) -> tuple[Split, Split, list[str]]:
    """((x_train, y_train), (x_test, y_test), class_names), as cifar.data.load_data returns CIFAR's."""
    train, test = split_image_set(image_set.labels, seed)
    return ((image_set.images[train], image_set.labels[train]), (image_set.images[test], image_set.labels[test]),
            list(image_set.class_names))


def datasets_dir(runs_dir: str | Path) -> Path:
    return Path(runs_dir) / DATASETS_FOLDER


def save_image_set(folder: str | Path, image_set: ImageSet) -> Path:
    """Keep the decoded set as `<id>.npz` in folder (once: the same zip has the same id)."""
    folder = Path(folder)
    target = folder / f"{image_set.id}.npz"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{image_set.id}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez_compressed(out, images=image_set.images, labels=image_set.labels,
                                class_names=np.array(image_set.class_names, dtype=str),
                                skipped=np.array(json.dumps(image_set.skipped)))
        os.replace(partial, target)  # a reader never sees half a set
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


def load_image_set(folder: str | Path, set_id: str) -> ImageSet:
    """A kept set by its id; raises DataError if it is gone or damaged."""
    if not (isinstance(set_id, str) and _ID.match(set_id)):
        raise DataError(f"{set_id!r} is not the id of an uploaded image set.")
    path = Path(folder) / f"{set_id}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            images, labels = stored["images"], stored["labels"].astype(np.int32)
            class_names, skipped = [str(name) for name in stored["class_names"]], json.loads(str(stored["skipped"]))
    except FileNotFoundError:
        raise DataError(f"The uploaded image set {set_id} is no longer on this server: upload its zip again.") from None
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"The uploaded image set {set_id} is damaged ({error}): upload its zip again.") from None
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE or len(images) != len(labels):
        raise DataError(f"The uploaded image set {set_id} is damaged: upload its zip again.")
    return ImageSet(set_id, np.ascontiguousarray(images), labels, class_names, skipped)


_CIFAR_NAMES = ("batches.meta", "meta", "cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar-100-python",
                "cifar-100-python.tar.gz", "cifar-10-batches-py-target", "cifar-100-python-target")


def is_image_folders(path: str | os.PathLike) -> bool:
    """Whether a path the command line was given is a user's pictures (a zip, or a folder of class
    folders) rather than a CIFAR copy."""
    path = Path(path).expanduser()
    if path.is_file():
        return zipfile.is_zipfile(path)
    return path.is_dir() and not any((path / name).exists() for name in _CIFAR_NAMES)
