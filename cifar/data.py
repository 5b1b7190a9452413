"""Load CIFAR-10 (or CIFAR-100) from wherever a copy is: find it, download it if need be, read it.

This file owns finding the data (an explicit path, $CIFAR10_DATA, the Keras cache, or a
download into that cache); cifar/batches.py reads the copy it finds. Every problem surfaces
as one DataError whose message says what failed and what to do about it.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cifar.backend import release_freed_memory
from cifar.batches import ARCHIVE_NAME, POINT_AT, DataError, Split, read_copy, short_reason

__all__ = ["DataError", "Split", "keras_datasets_dir", "load_cifar100", "load_data"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"  # as in Keras
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_SHA256 = "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"  # as in Keras's cifar100.py
DOWNLOAD_TIMEOUT_SECONDS = 15  # a slow server still answers; an offline machine fails fast
DOWNLOAD_CHUNK_BYTES = 1 << 20  # ~170 progress reports for the real 170 MB archive
# The ten classes, in the order of their labels, as the dataset's batches.meta names them.
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

Progress = Callable[[dict], None]



@dataclass(frozen=True)
class _Flavour:
    """Where one dataset's copy is looked for, and where it downloads from."""

    name: str  # as messages say it
    folder: str  # the extracted folder's name, cifar/batches.py's layout
    archive: str
    env: str  # the variable (or secret) naming a copy
    url_constant: str  # this module's constants, read when used so that tests can point them elsewhere
    sha256_constant: str

    @property
    def get_it(self) -> str:
        return f"set {self.env} to a local {self.archive} or {self.folder} folder"

    @property
    def copies_in_the_keras_cache(self) -> tuple[str, ...]:
        # Keras 3's own load_data extracts into the "-target" folder; reuse its copy too.
        return (self.folder, self.archive, f"{self.folder}-target")


_CIFAR10 = _Flavour("CIFAR-10", "cifar-10-batches-py", ARCHIVE_NAME, "CIFAR10_DATA", "CIFAR10_URL", "CIFAR10_SHA256")
_CIFAR100 = _Flavour("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz", "CIFAR100_DATA", "CIFAR100_URL",
                     "CIFAR100_SHA256")


def load_data(
    path: str | os.PathLike | None = None, progress: Progress | None = None
) -> tuple[Split, Split, list[str]]:
    """Return ((x_train, y_train), (x_test, y_test), class_names).

    Images are C-contiguous uint8 arrays (N, 32, 32, 3), labels int32 arrays (N,).
    The data comes from `path` if given, else $CIFAR10_DATA, else the Keras cache
    ($KERAS_HOME or ~/.keras, under datasets/), else a download into that cache.
    `progress`, if given, receives {"event": "download", "dataset", "bytes_done", "bytes_total"}
    while downloading and {"event": "loading", "source"} once before reading.
    """
    return _load(_CIFAR10, path, progress, wanted=None)  # a CIFAR-10 path may also name a CIFAR-100 copy, as always


def load_cifar100(
    path: str | os.PathLike | None = None, progress: Progress | None = None
) -> tuple[Split, Split, list[str]]:
    """As load_data, for CIFAR-100 with its 100 fine labels: from `path`, else $CIFAR100_DATA, else
    the Keras cache, else a download of the official archive checked against Keras's sha256."""
    return _load(_CIFAR100, path, progress, wanted=_CIFAR100.folder)


def _load(flavour: _Flavour, path: str | os.PathLike | None, progress: Progress | None,
          wanted: str | None) -> tuple[Split, Split, list[str]]:
    source = _find_source(flavour, path, progress)
    if progress is not None:
        progress({"event": "loading", "source": str(source)})
    loaded = read_copy(source, wanted)
    release_freed_memory()
    return loaded


def keras_datasets_dir() -> Path:
    """The folder Keras caches datasets in, where a download of CIFAR-10 also lands."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(keras_home).expanduser() / "datasets"


def _find_source(flavour: _Flavour, path: str | os.PathLike | None, progress: Progress | None) -> Path:
    if path is not None:
        return _must_exist(Path(path).expanduser(), f"No CIFAR data at {path}: it does not exist.")
    from_env = os.environ.get(flavour.env)
    if from_env:
        return _must_exist(
            Path(from_env).expanduser(),
            f"{flavour.env} points to {from_env}, which does not exist.",
        )
    cache = keras_datasets_dir()
    for name in flavour.copies_in_the_keras_cache:
        if (cache / name).exists():
            return cache / name
    return _download(flavour, cache, progress)


def _must_exist(path: Path, what_failed: str) -> Path:
    if not path.exists():
        raise DataError(f"{what_failed} {POINT_AT}")
    return path


def _download(flavour: _Flavour, cache: Path, progress: Progress | None) -> Path:
    # Read the module constants now, not at import, so tests can point them elsewhere.
    url, expected_sha256 = globals()[flavour.url_constant], globals()[flavour.sha256_constant]
    try:
        cache.mkdir(parents=True, exist_ok=True)
        handle, partial_name = tempfile.mkstemp(
            dir=cache, prefix=f".{flavour.archive}.", suffix=".part"
        )
    except OSError as error:
        raise DataError(
            f"Could not write to the Keras cache {cache} ({short_reason(error)}). "
            f"Set KERAS_HOME to a writable folder, or {flavour.get_it}."
        ) from None
    partial = Path(partial_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                    bytes_total = int(response.headers.get("Content-Length") or 0) or None
                    bytes_done = 0
                    while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        bytes_done += len(chunk)
                        if progress is not None:
                            progress({"event": "download", "dataset": flavour.name, "bytes_done": bytes_done,
                                      "bytes_total": bytes_total})
            except (OSError, http.client.HTTPException, ValueError) as error:
                raise DataError(
                    f"Could not download {flavour.name} from {url} ({_why_the_download_failed(error)}). "
                    f"Connect to the internet, or {flavour.get_it}."
                ) from None
        if digest.hexdigest() != expected_sha256:
            raise DataError(
                f"The file downloaded from {url} is not the official {flavour.name} archive "
                f"(sha256 {digest.hexdigest()[:12]}..., expected {expected_sha256[:12]}...). "
                f"Try again, or {flavour.get_it}."
            )
        target = cache / flavour.archive
        os.replace(partial, target)  # atomic, so a half download never looks like the archive
        return target
    finally:
        partial.unlink(missing_ok=True)


def _why_the_download_failed(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, TimeoutError):
        return f"no answer within {DOWNLOAD_TIMEOUT_SECONDS} s"
    return short_reason(error)
