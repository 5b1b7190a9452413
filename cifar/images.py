"""Turning any picture a user brings into the 32x32 RGB array the network takes.

`load_image` opens bytes, a path or an uploaded file with Pillow, refuses what is not a
picture (or is too big to decode safely) with one `ImageError` whose message a user can
act on, and returns the full-size RGB image as a person would see it: EXIF rotation applied,
transparency laid on white, 16-bit and CMYK pictures brought to ordinary 8-bit RGB.
`to_network_input` centre-crops that to a square and shrinks it to 32x32.
`preprocess_image` does both, decoding big JPEGs at reduced scale so phone photos stay fast.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import IO, Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cifar.batches import IMAGE_SHAPE

MAX_PIXELS = 25_000_000  # a 25 MP photo decodes to ~75 MB of RGB; beyond that we refuse
INPUT_SIZE = IMAGE_SHAPE[0]  # the network takes square pictures of the data's size

# Pillow's names for the formats we accept. MPO is what phones write: a JPEG with extra frames.
ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF")

ImageSource = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes]]

_EXIF_ORIENTATION = 0x0112
# JPEG's DCT scaling gives a clean shrink for free; decode to at least this many times the
# network's size so the final Lanczos step still has detail to work with.
_JPEG_DRAFT_FACTOR = 4


class ImageError(ValueError):
    """The picture cannot be used; the message says why in words a user can act on."""


def load_image(source: ImageSource) -> Image.Image:
    """Open a picture and return it as a full-size RGB image, the way a person would see it.

    `source` is bytes, a path, or a binary file-like (a Streamlit UploadedFile works).
    Raises ImageError for anything that is not a readable PNG, JPEG, WebP, GIF, BMP or TIFF,
    is larger than MAX_PIXELS, or is truncated or damaged.
    """
    return _decode(source, draft_size=None)


def to_network_input(image: Image.Image, size: int = INPUT_SIZE) -> np.ndarray:
    """Centre-crop `image` to a square and shrink it to a (size, size, 3) uint8 array."""
    image = _to_rgb(image)
    width, height = image.size
    side = min(width, height)
    if width != height:
        left, top = (width - side) // 2, (height - side) // 2
        # Crop first rather than resize(box=...): with a box, Lanczos still reads pixels
        # just outside it, so colours from the cut-off sides would bleed into the edges.
        image = image.crop((left, top, left + side, top + side))
    # reducing_gap box-averages huge images down to ~3x the target before Lanczos,
    # which is much faster and looks the same.
    what_the_network_sees = image.resize(
        (size, size), Image.Resampling.LANCZOS, reducing_gap=3.0
    )
    return np.ascontiguousarray(np.array(what_the_network_sees, dtype=np.uint8))


def preprocess_image(source: ImageSource, size: int = INPUT_SIZE) -> np.ndarray:
    """What the CLI's predict calls: `to_network_input(load_image(source), size)`, but fast.

    Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale (still at least 4x the network's size
    on the short side), so a 25 MP photo does not have to be decoded in full.
    """
    draft_side = size * _JPEG_DRAFT_FACTOR
    return to_network_input(_decode(source, draft_size=(draft_side, draft_side)), size)


def _decode(source: ImageSource, draft_size: tuple[int, int] | None) -> Image.Image:
    with _binary_stream(source) as stream:
        # Pillow warns (and above twice its limit, raises) for decompression bombs. Turning
        # the warning into an error only inside this block leaves global filters untouched.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(stream, formats=_formats_pillow_can_open())
                _check_pixel_count(image)
                if draft_size is not None and image.format in ("JPEG", "MPO"):
                    image.draft("RGB", draft_size)
                # Opening only reads the header; loading decodes the first frame in full,
                # so a truncated file fails here rather than later in the app.
                image.load()
                if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                    image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
            except ImageError:
                raise
            except UnidentifiedImageError as error:
                raise ImageError(
                    "This file is not a picture we can read. "
                    "Please use PNG, JPEG, WebP, GIF, BMP or TIFF."
                ) from error
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
                raise ImageError(
                    "This image claims an enormous size and may be a decompression bomb; "
                    f"the limit is {MAX_PIXELS / 1e6:g} megapixels."
                ) from error
            except Exception as error:
                # Pillow's decoders raise many types (OSError, SyntaxError, struct.error,
                # zlib errors...) on damaged data; the user only needs to know it is broken.
                raise ImageError("This image is truncated or damaged.") from error


@contextlib.contextmanager
def _binary_stream(source: ImageSource) -> Iterator[IO[bytes]]:
    """Yield a binary stream for any source, closing only a file this function opened."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        try:
            opened = open(source, "rb")
        except FileNotFoundError as error:
            raise ImageError(f"There is no file at {os.fspath(source)!r}.") from error
        except OSError as error:
            raise ImageError(
                f"Could not read {os.fspath(source)!r}: {error.strerror or error}."
            ) from error
        with opened:
            yield opened
    elif hasattr(source, "read"):
        # Pillow seeks to the start itself, so an UploadedFile already read once still works.
        yield source
    else:
        raise TypeError(f"Expected bytes, a path or a binary file, not {type(source).__name__}.")


def _formats_pillow_can_open() -> list[str]:
    # A Pillow built without e.g. libwebp has no WEBP opener, and asking for it raises KeyError.
    Image.init()
    return [name for name in ACCEPTED_FORMATS if name in Image.OPEN]


def _check_pixel_count(image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"This image is {width * height / 1e6:.1f} megapixels; "
            f"the limit is {MAX_PIXELS / 1e6:g} megapixels."
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB the way a person expects the picture to look."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    has_alpha = image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    if has_alpha:
        # Transparent areas look white on a web page, so they become white, not black.
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        grey = _high_bit_depth_to_8_bit(np.asarray(image), is_float=image.mode == "F")
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")


def _high_bit_depth_to_8_bit(values: np.ndarray, is_float: bool) -> np.ndarray:
    """Scale 16-bit, 32-bit or float grey values to 0..255 by their range, not by clipping."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if is_float and low >= 0.0 and high <= 1.0:
        full_range = (0.0, 1.0)  # the usual convention for float pictures
    elif not is_float and low >= 0 and high <= 65535:
        full_range = (0.0, 65535.0)  # 16-bit data, also when Pillow calls it 32-bit "I"
    else:
        full_range = (low, max(high, low + 1.0))  # unknown range: stretch what is there
    scaled = (values - full_range[0]) * (255.0 / (full_range[1] - full_range[0]))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
