"""Tests for cifar.images: every picture is built in memory with Pillow, none is committed.

Expected colours come from the picture's construction (or the EXIF spec), never from the
code under test, so each test fails if the behaviour it names breaks.
"""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from cifar.images import (
    INPUT_SIZE,
    MAX_PIXELS,
    ImageError,
    load_image,
    preprocess_image,
    to_network_input,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
LOSSY_TOLERANCE = 12  # JPEG and WebP shift flat colours by a few levels


def encode(image: Image.Image, fmt: str, **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_options)
    return buffer.getvalue()


def assert_network_input(array: np.ndarray, size: int = INPUT_SIZE) -> None:
    assert array.shape == (size, size, 3)
    assert array.dtype == np.uint8
    assert array.flags["C_CONTIGUOUS"]


def assert_every_pixel_near(array: np.ndarray, colour, tolerance: int = 1) -> None:
    difference = np.abs(array.astype(int) - np.array(colour, dtype=int))
    assert difference.max() <= tolerance, f"got mean {array.reshape(-1, 3).mean(0)}, want {colour}"


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header that claims width x height, with almost no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("fmt", "tolerance"),
    [("PNG", 0), ("JPEG", LOSSY_TOLERANCE), ("WEBP", LOSSY_TOLERANCE), ("BMP", 0), ("TIFF", 0)],
)
def test_each_format_gives_network_input_of_its_colour(fmt, tolerance):
    colour = (200, 40, 90)
    data = encode(Image.new("RGB", (50, 40), colour), fmt)
    array = preprocess_image(data)
    assert_network_input(array)
    assert_every_pixel_near(array, colour, tolerance)


def test_gif_animation_gives_its_first_frame():
    first, second = Image.new("RGB", (40, 40), RED), Image.new("RGB", (40, 40), BLUE)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2  # the fixture really is animated
    array = preprocess_image(data)
    assert_network_input(array)
    assert_every_pixel_near(array, RED)


def test_fully_transparent_red_becomes_white():
    data = encode(Image.new("RGBA", (20, 20), (255, 0, 0, 0)), "PNG")
    assert_every_pixel_near(preprocess_image(data), WHITE)


def test_half_transparent_red_is_composited_on_white():
    data = encode(Image.new("RGBA", (20, 20), (255, 0, 0, 128)), "PNG")
    # red * a + white * (1 - a), a = 128/255
    expected = (255, 255 * (1 - 128 / 255), 255 * (1 - 128 / 255))
    assert_every_pixel_near(preprocess_image(data), np.rint(expected), tolerance=2)


@pytest.mark.parametrize(
    ("grey_and_alpha", "expected"), [((0, 0), WHITE), ((0, 255), (0, 0, 0)), ((60, 255), (60,) * 3)]
)
def test_grey_with_alpha(grey_and_alpha, expected):
    data = encode(Image.new("LA", (20, 20), grey_and_alpha), "PNG")
    assert_every_pixel_near(preprocess_image(data), expected)


def test_palette_transparency_becomes_white_and_opaque_entries_keep_colour():
    transparent = Image.new("P", (20, 20), 0)
    transparent.putpalette([*RED, *BLUE])
    data = encode(transparent, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    assert_every_pixel_near(preprocess_image(data), WHITE)

    opaque = Image.new("P", (20, 20), 1)
    opaque.putpalette([*RED, *BLUE])
    assert_every_pixel_near(preprocess_image(encode(opaque, "PNG", transparency=0)), BLUE)


def test_greyscale_gives_equal_channels():
    array = preprocess_image(encode(Image.new("L", (20, 20), 100), "PNG"))
    assert_every_pixel_near(array, (100, 100, 100))


@pytest.mark.parametrize(("bit", "expected"), [(0, (0, 0, 0)), (1, WHITE)])
def test_one_bit_images(bit, expected):
    assert_every_pixel_near(preprocess_image(encode(Image.new("1", (20, 20), bit), "PNG")), expected)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (32768, 128), (0, 0)])
def test_sixteen_bit_grey_is_scaled_not_clipped(fmt, value, expected):
    data = encode(Image.new("I;16", (20, 20), value), fmt)
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I;16B", "I")  # really high bit depth
    assert_every_pixel_near(preprocess_image(data), (expected,) * 3)


@pytest.mark.parametrize(("fmt", "tolerance"), [("JPEG", LOSSY_TOLERANCE), ("TIFF", 0)])
def test_cmyk_cyan_becomes_rgb_cyan(fmt, tolerance):
    data = encode(Image.new("CMYK", (20, 20), (255, 0, 0, 0)), fmt)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert_every_pixel_near(preprocess_image(data), (0, 255, 255), tolerance)


def left_red_right_blue_jpeg(orientation: int) -> bytes:
    image = Image.new("RGB", (64, 64), RED)
    image.paste(BLUE, (32, 0, 64, 64))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


# EXIF spec: orientation 6 means the stored left column is the displayed top row (the camera
# was turned clockwise); orientation 8 means it is the displayed bottom row.
@pytest.mark.parametrize(("orientation", "top", "bottom"), [(6, RED, BLUE), (8, BLUE, RED)])
def test_exif_orientation_is_applied(orientation, top, bottom):
    data = left_red_right_blue_jpeg(orientation)
    array = preprocess_image(data)
    assert_every_pixel_near(array[:12], top, LOSSY_TOLERANCE)
    assert_every_pixel_near(array[-12:], bottom, LOSSY_TOLERANCE)

    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.abs(np.asarray(load_image(data)).astype(int) - reference).max() <= 1


def test_wide_image_keeps_only_its_centre_square():
    image = Image.new("RGB", (300, 100), RED)
    image.paste(GREEN, (100, 0, 200, 100))
    image.paste(BLUE, (200, 0, 300, 100))
    assert_every_pixel_near(preprocess_image(encode(image, "PNG")), GREEN)


def test_tall_image_keeps_only_its_centre_square():
    image = Image.new("RGB", (90, 270), RED)
    image.paste(GREEN, (0, 90, 90, 180))
    assert_every_pixel_near(to_network_input(image), GREEN)


def test_one_pixel_image():
    array = preprocess_image(encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))
    assert_network_input(array)
    assert_every_pixel_near(array, (10, 20, 30))


def test_other_sizes_are_honoured():
    array = preprocess_image(encode(Image.new("RGB", (80, 80), BLUE), "PNG"), size=64)
    assert_network_input(array, size=64)


def test_load_image_keeps_full_size_rgb():
    original = load_image(encode(Image.new("RGBA", (123, 45), (0, 0, 255, 255)), "PNG"))
    assert original.mode == "RGB"
    assert original.size == (123, 45)


@pytest.fixture(scope="module")
def photo_at_the_limit() -> bytes:
    """A 5000x5000 (exactly 25 MP) JPEG with smooth gradients, like a large phone photo."""
    side = 5000
    assert side * side == MAX_PIXELS
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.empty((side, side, 3), dtype=np.uint8)
    pixels[..., 0] = ramp[None, :]
    pixels[..., 1] = ramp[:, None]
    pixels[..., 2] = 128
    return encode(Image.fromarray(pixels), "JPEG", quality=85)


def test_picture_at_the_limit_is_fast_and_matches_full_decode(photo_at_the_limit):
    started = time.perf_counter()
    fast = preprocess_image(photo_at_the_limit)
    elapsed = time.perf_counter() - started
    assert_network_input(fast)
    # A generous bound, not a benchmark: it only catches a decode that went pathological
    # (about 0.2 s here; a busy CI machine must not make it flaky).
    assert elapsed < 5.0, f"took {elapsed:.2f}s"

    # The reduced-scale JPEG decode must agree with the slow full-resolution path.
    full = to_network_input(load_image(photo_at_the_limit))
    assert np.abs(fast.astype(int) - full.astype(int)).max() <= 3
    # And the gradients survive: red rises left to right, green top to bottom.
    assert fast[16, 0, 0] < 20 and fast[16, -1, 0] > 235
    assert fast[0, 16, 1] < 20 and fast[-1, 16, 1] > 235


def test_over_the_limit_is_refused_from_the_header_without_decoding(monkeypatch):
    def must_not_decode(self):
        raise AssertionError("decoded a picture that should be refused from its header")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", must_not_decode)
    with pytest.raises(ImageError, match="25.0 megapixels; the limit is 25 megapixels"):
        preprocess_image(png_header_only(5001, 5000))
    with pytest.raises(ImageError, match="megapixels"):
        load_image(png_header_only(5001, 5001))


@pytest.mark.parametrize("side", [10_000, 20_000])  # past Pillow's warning, past its error
def test_decompression_bomb_is_refused_without_leaking_state(side):
    filters_before, limit_before = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match="megapixels"):
            preprocess_image(png_header_only(side, side))
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert warnings.filters == filters_before
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_a_real_bomb_is_refused_even_with_pillow_limit_lifted(monkeypatch):
    # A tiny file that would inflate to 36 MP of blank pixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageError, match="megapixels"):
        preprocess_image(encode(Image.new("1", (6000, 6000)), "PNG"))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused(fmt):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    with pytest.raises(ImageError, match="truncated or damaged"):
        preprocess_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    "not_a_picture",
    [b"", b"hello, this is a text file\n", np.random.default_rng(1).bytes(4096)],
    ids=["empty", "text", "random"],
)
def test_non_pictures_are_refused(not_a_picture):
    with pytest.raises(ImageError, match="not a picture we can read"):
        preprocess_image(not_a_picture)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA"])
def test_formats_pillow_reads_but_we_do_not_accept_are_refused(fmt):
    data = encode(Image.new("RGB", (32, 32), RED), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself could open it
    with pytest.raises(ImageError, match="PNG, JPEG, WebP, GIF, BMP or TIFF"):
        preprocess_image(data)


def test_path_input(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(encode(Image.new("RGB", (40, 40), GREEN), "PNG"))
    assert_every_pixel_near(preprocess_image(path), GREEN)
    assert_every_pixel_near(preprocess_image(str(path)), GREEN)


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(ImageError, match="no file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError):
        load_image(tmp_path)  # a folder, not a file


class UploadedFile(io.BytesIO):
    """Stands in for Streamlit's UploadedFile, which is a BytesIO subclass."""


def test_file_like_input_even_after_it_was_read():
    upload = UploadedFile(encode(Image.new("RGB", (40, 40), BLUE), "PNG"))
    upload.read()  # e.g. the app already showed it
    assert_every_pixel_near(preprocess_image(upload), BLUE)
    assert not upload.closed  # we do not close what the caller owns


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)
