"""Tests for imgclf.images: a corpus of real and broken files is generated per test."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf import images
from imgclf.images import BACKGROUND, ImageError, load_image, resize_array

RED = (200, 30, 60)
BLUE = (20, 40, 220)


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _reason(source: object, **kwargs: object) -> str:
    with pytest.raises(ImageError) as info:
        load_image(source, **kwargs)
    return info.value.reason


# --- valid files -------------------------------------------------------------------------------

FORMATS = [
    ("JPEG", ".jpg", {"quality": 95}, 4),
    ("PNG", ".png", {}, 0),
    ("BMP", ".bmp", {}, 0),
    ("GIF", ".gif", {}, 0),
    ("WEBP", ".webp", {"lossless": True}, 0),
    ("TIFF", ".tif", {}, 0),
]


@pytest.mark.parametrize(("fmt", "suffix", "params", "tolerance"), FORMATS)
def test_valid_formats_decode_to_shape_and_colour(tmp_path, fmt, suffix, params, tolerance):
    data = _encode(Image.new("RGB", (16, 12), RED), fmt, **params)
    path = _write(tmp_path / f"red{suffix}", data)
    from_path = load_image(path)
    assert from_path.shape == (12, 16, 3)
    assert from_path.dtype == np.uint8 and from_path.flags.c_contiguous
    assert np.abs(from_path.astype(int) - RED).max() <= tolerance
    np.testing.assert_array_equal(load_image(data), from_path)
    np.testing.assert_array_equal(load_image(str(path)), from_path)


def test_constants():
    base = {"JPEG", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF", "HEIF", "AVIF"}
    assert base == images.SUPPORTED_FORMATS
    wanted = {".jpg", ".jpeg", ".jfif", ".png", ".tif", ".tiff", ".webp", ".heic", ".avif"}
    assert wanted <= images.IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in images.IMAGE_EXTENSIONS)
    assert BACKGROUND == (255, 255, 255)


def test_image_error_message_and_type():
    err = ImageError("a.png", "empty file")
    assert isinstance(err, ValueError)
    assert (str(err), err.source, err.reason) == ("a.png: empty file", "a.png", "empty file")


# --- broken inputs -----------------------------------------------------------------------------


def test_truncated_jpeg_is_rejected(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG")
    path = _write(tmp_path / "cut.jpg", data[: len(data) // 2])
    assert "truncated" in _reason(path)


def test_empty_text_missing_and_directory(tmp_path):
    assert "empty" in _reason(_write(tmp_path / "empty.jpg", b""))
    assert _reason(_write(tmp_path / "notes.png", b"just some text\n" * 20)) == "not an image"
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "missing.png")
    assert "not found" in info.value.reason
    assert info.value.source == str(tmp_path / "missing.png")
    assert "directory" in _reason(tmp_path)
    assert _reason(b"") == "empty file"


def test_broken_header_of_known_format_is_corrupt():
    data = _encode(Image.new("RGB", (8, 8), RED), "PNG")
    assert _reason(data[:20]) == "truncated or corrupt image"  # header cut short
    bad_crc = data[:29] + b"\0\0\0\0" + data[33:]  # PNG signature, but IHDR fails its checksum
    assert _reason(bad_crc) == "truncated or corrupt image"


@pytest.mark.parametrize(("fmt", "suffix"), [("ICO", ".ico"), ("PPM", ".ppm")])
def test_known_but_unsupported_format(tmp_path, fmt, suffix):
    path = _write(tmp_path / f"x{suffix}", _encode(Image.new("RGB", (16, 16), RED), fmt))
    assert _reason(path) == f"unsupported format: {fmt}"


def test_decompression_bomb_header_rejected_before_decoding(tmp_path):
    data = bytearray(_encode(Image.new("L", (4, 4)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    reason = _reason(_write(tmp_path / "bomb.png", bytes(data)))
    assert reason == "too large: 30000×30000 px (limit 50,000,000 pixels)"
    small = _encode(Image.new("L", (10, 10)), "PNG")
    assert _reason(small, max_pixels=99) == "too large: 10×10 px (limit 99 pixels)"
    assert load_image(small, max_pixels=100).shape == (10, 10, 3)  # the limit is inclusive


@pytest.mark.parametrize("fmt", ["WEBP", "TIFF"])
def test_pillow_decompression_bomb_error_becomes_image_error(monkeypatch, fmt):
    # WebP checks in its header parser, TIFF when allocating: both past our own max_pixels check.
    data = _encode(Image.new("RGB", (20, 20), RED), fmt)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert _reason(data).startswith("too large")


# --- modes -------------------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb():
    data = _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    pixels = load_image(data)
    assert pixels.shape == (16, 16, 3)
    assert np.abs(pixels.astype(int) - (255, 0, 0)).max() <= 6


def test_16bit_png_ramp_keeps_levels():
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))
    png = Image.fromarray(ramp)
    assert png.mode == "I;16"
    data = _encode(png, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really 16-bit on disk
    # What a naive convert("L") gives: everything above 255 clips to white.
    assert (np.asarray(Image.open(io.BytesIO(data)).convert("L"))[0, 2:] == 255).all()
    row = load_image(data, channels=1)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row.astype(int)) >= 0).all()
    assert len(np.unique(row)) > 200
    assert not (row[2:] == 255).all()
    np.testing.assert_array_equal(load_image(data)[0], np.repeat(row[:, None], 3, axis=1))


def test_float_tiff_is_scaled_not_clipped():
    unit = np.tile(np.linspace(0.0, 1.0, 11, dtype=np.float32), (2, 1))
    row = load_image(_encode(Image.fromarray(unit), "TIFF"), channels=1)[0, :, 0]
    assert np.abs(row.astype(int) - np.linspace(0, 255, 11)).max() <= 1  # float32 rounding
    assert row[0] == 0 and row[-1] == 255
    big = unit * 1000.0
    row = load_image(_encode(Image.fromarray(big), "TIFF"), channels=1)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and row[5] == 128


def _i16b(values: list[int]) -> Image.Image:
    return Image.frombytes("I;16B", (len(values), 1), np.array(values, ">u2").tobytes())


@pytest.mark.parametrize(
    ("img", "fmt", "params", "expected"),
    [
        (_i16b([0, 32768, 65535]), "TIFF", {}, [0, 128, 255]),  # big-endian 16-bit
        (Image.fromarray(np.array([[0, 32768, 65535]], np.int32)), "TIFF", {}, [0, 128, 255]),
        (Image.fromarray(np.array([[-5, 70000, 140000]], np.int32)), "TIFF", {}, [0, 128, 255]),
        (Image.new("LA", (3, 1), (50, 0)), "TIFF", {}, [255, 255, 255]),  # transparent grey
        (Image.new("L", (3, 1), 77), "PNG", {"transparency": 77}, [255, 255, 255]),  # grey tRNS
        (Image.new("LAB", (3, 1), (255, 128, 128)), "TIFF", {}, [254, 254, 254]),  # white
    ],
)
def test_other_modes_convert(img, fmt, params, expected):
    pixels = load_image(_encode(img, fmt, **params), channels=1)
    assert Image.open(io.BytesIO(_encode(img, fmt, **params))).mode == img.mode
    assert np.abs(pixels[0, :, 0].astype(int) - expected).max() <= 1


def test_rgba_transparent_region_becomes_background():
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[:, :10] = (*RED, 255)  # left: opaque red; right: fully transparent black
    rgba[:, 10:] = (0, 0, 0, 0)
    pixels = load_image(_encode(Image.fromarray(rgba), "PNG"))
    assert (pixels[:, :10] == RED).all()
    assert (pixels[:, 10:] == BACKGROUND).all()


def test_half_transparent_pixel_is_alpha_weighted():
    pixels = load_image(_encode(Image.new("LA", (4, 4), (0, 128)), "PNG"), channels=1)
    assert np.abs(pixels.astype(int) - 127).max() <= 1


def test_palette_png_with_transparent_index_becomes_background():
    pal = Image.new("P", (20, 10), 0)
    pal.putpalette([0, 0, 0, *RED] + [0] * (256 - 2) * 3)
    pal.paste(1, (0, 0, 10, 10))  # left: index 1 (red); right: index 0 (transparent black)
    data = _encode(pal, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    pixels = load_image(data)
    assert (pixels[:, :10] == RED).all()
    assert (pixels[:, 10:] == BACKGROUND).all()


def test_bilevel_image_is_black_and_white():
    bilevel = Image.new("1", (8, 8), 0)
    bilevel.paste(1, (0, 0, 4, 8))
    pixels = load_image(_encode(bilevel, "PNG"), channels=1)
    assert (pixels[:, :4] == 255).all() and (pixels[:, 4:] == 0).all()


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (12, 12), RED), Image.new("RGB", (12, 12), BLUE)]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    assert (load_image(data) == RED).all()


def test_exif_orientation_is_applied():
    # Stored 40 wide x 20 high: left half black, right half white. Orientation 6 means "rotate
    # 90° clockwise to display", which puts the stored left half at the top.
    stored = np.full((20, 40), 255, np.uint8)
    stored[:, :20] = 0
    img = Image.fromarray(stored).convert("RGB")
    exif = img.getexif()
    exif[0x0112] = 6
    pixels = load_image(_encode(img, "JPEG", quality=95, exif=exif.tobytes()), channels=1)
    assert pixels.shape == (40, 20, 1)
    assert pixels[:16].mean() < 30 and pixels[24:].mean() > 225


# --- channels, resizing, arguments -------------------------------------------------------------


def test_channels_one_and_three():
    data = _encode(Image.new("RGB", (6, 4), RED), "PNG")
    grey = load_image(data, channels=1)
    assert grey.shape == (4, 6, 1)
    luma = round(0.299 * RED[0] + 0.587 * RED[1] + 0.114 * RED[2])
    assert abs(int(grey[0, 0, 0]) - luma) <= 1
    rgb_from_grey = load_image(_encode(Image.new("L", (6, 4), 77), "PNG"), channels=3)
    assert rgb_from_grey.shape == (4, 6, 3) and (rgb_from_grey == 77).all()


@pytest.mark.parametrize("size", [(7, 13), (64, 32), (12, 16)])
def test_resize_gives_exact_shape(size):
    data = _encode(Image.new("RGB", (16, 12), RED), "PNG")
    for channels in (1, 3):
        pixels = load_image(data, size=size, channels=channels)
        assert pixels.shape == (*size, channels) and pixels.dtype == np.uint8
        assert pixels.flags.c_contiguous


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(32, 32), (5, 9), (3, 4), (300, 200)])
def test_resize_array_matches_load_image(channels, size):
    rng = np.random.default_rng(channels)
    array = rng.integers(0, 256, (24, 40, channels), dtype=np.uint8)
    data = _encode(Image.fromarray(array[:, :, 0] if channels == 1 else array), "PNG")
    loaded = load_image(data, size=size, channels=channels)
    resized = resize_array(array, size)
    assert resized.shape == (*size, channels) and resized.dtype == np.uint8
    np.testing.assert_array_equal(loaded, resized)


def test_large_downscale_averages_instead_of_aliasing():
    stripes = np.zeros((8, 600, 1), np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes: point sampling (NEAREST) would give black or white
    small = resize_array(stripes, (8, 10))
    assert np.abs(small.astype(int) - 128).max() <= 2


@pytest.mark.parametrize("channels", [0, 2, 4, True, "3"])
def test_invalid_channels(channels):
    with pytest.raises(ValueError, match="channels"):
        load_image(b"irrelevant", channels=channels)


@pytest.mark.parametrize("size", [(0, 4), (4,), (4, 4, 4), (4.0, 4), (-1, 3), "44", None])
def test_invalid_size(size):
    with pytest.raises(ValueError, match="size"):
        resize_array(np.zeros((4, 4, 3), np.uint8), size)
    if size is not None:
        with pytest.raises(ValueError, match="size"):
            load_image(b"irrelevant", size=size)


@pytest.mark.parametrize(
    "array", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3))]
)
def test_resize_array_rejects_bad_arrays(array):
    with pytest.raises(ValueError, match="uint8"):
        resize_array(array, (2, 2))


def test_module_does_not_import_tensorflow():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('images', {images.__file__!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _photo(width: int, height: int) -> Image.Image:
    """A smooth RGB photo stand-in: gradients with a dark bar in the left third."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)], -1)
    rgb[:, width // 6 : width // 3] = 10
    return Image.fromarray(rgb.astype(np.uint8))


def test_large_jpeg_is_decoded_at_reduced_scale_with_the_same_result():
    """A JPEG larger than the target decodes at the smallest DCT scale (draft mode) that stays
    at least the target on each side, and gives nearly the pixels of a full decode + resize."""
    data = _encode(_photo(2400, 1600), "JPEG", quality=90)
    with io.BytesIO(data) as fp:
        decoded = images._decode(fp, "<bytes>", images.MAX_PIXELS, (28, 28))
        assert decoded.size == (300, 200)  # 2400/8 × 1600/8
    with io.BytesIO(data) as fp:
        assert images._decode(fp, "<bytes>", images.MAX_PIXELS, None).size == (2400, 1600)
    with Image.open(io.BytesIO(data)) as full:
        reference = np.asarray(
            full.convert("RGB").resize((28, 28), Image.Resampling.BILINEAR, reducing_gap=3.0)
        )
    got = load_image(data, (28, 28), 3)
    assert np.abs(got.astype(int) - reference.astype(int)).max() <= 6
    # 1/4 would undershoot 600 on the short side: 1/2. For 1000, even 1/2 would: a full decode.
    with io.BytesIO(data) as fp:
        assert images._decode(fp, "<bytes>", images.MAX_PIXELS, (600, 600)).size == (1200, 800)
    with io.BytesIO(data) as fp:
        assert images._decode(fp, "<bytes>", images.MAX_PIXELS, (1000, 900)).size == (2400, 1600)


def test_reduced_jpeg_decoding_keeps_exif_rotation():
    # Stored landscape with the dark bar on the left; orientation 6 turns it portrait with the
    # bar at the top.
    img = _photo(2400, 1200)
    exif = img.getexif()
    exif[0x0112] = 6
    grey = load_image(_encode(img, "JPEG", quality=90, exif=exif.tobytes()), (60, 30), 1)
    assert grey.shape == (60, 30, 1)
    rows = grey[..., 0].mean(axis=1)
    assert rows[10:19].mean() < 40 < rows[30:].mean()  # the bar: stored x 1/6..1/3 -> top rows


def test_a_jpeg_with_thousands_of_metadata_segments_is_refused_before_pillow(
    tiny_run: Path, tmp_path: Path
):
    """2,500 EXIF segments hung Pillow (its time grows with their count squared); more than
    formats.MAX_JPEG_SEGMENTS are refused, with the same reason from every path, before
    Pillow reads the file; a photo's few segments (and exactly the limit) still decode."""
    from conftest import run_command

    from imgclf import formats
    from imgclf.images import ImageError, check_header, load_image

    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(out, "JPEG")
    payload = b"Exif\x00\x00" + bytes(1000)
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload

    def jpeg(n: int) -> bytes:
        return out.getvalue()[:2] + segment * n + out.getvalue()[2:]

    # Pillow writes one segment (JFIF APP0) itself: this makes exactly the limit.
    assert load_image(jpeg(formats.MAX_JPEG_SEGMENTS - 1), (8, 8), 3).shape == (8, 8, 3)
    # One stray byte before the segments (Pillow skips it and reads on) must not lead the
    # scan past them either.
    app0_end = 4 + int.from_bytes(out.getvalue()[4:6], "big")
    stray = out.getvalue()[:app0_end] + b"\0" + segment * 600 + out.getvalue()[app0_end:]
    with pytest.raises(ImageError, match="JPEG metadata segments"):
        load_image(stray, (8, 8), 3)
    hostile = tmp_path / "exif.jpg"
    hostile.write_bytes(jpeg(2_500))
    with pytest.raises(ImageError, match="JPEG metadata segments") as refused:
        load_image(hostile, (8, 8), 3)
    assert check_header(hostile) == refused.value.reason
    done = run_command("imgclf-predict", tiny_run, hostile)
    assert done.returncode != 0 and f"error: {hostile}: {refused.value.reason}" in done.stderr
