"""The one image decoder used for training data, prediction and the app.

Every image, whatever its format or mode, becomes a uint8 array [H, W, C] with C = 1 (ITU-R 601
luma) or 3 (RGB). Alpha is composited over a fixed white BACKGROUND, 16-bit data is scaled by its
bit depth (not clipped), EXIF orientation is applied, animations give their first frame, and
resizing is a plain bilinear stretch to (height, width): the aspect ratio is NOT preserved.

Only Pillow and numpy are imported, so this module is cheap to load. This module never enables
`PIL.ImageFile.LOAD_TRUNCATED_IMAGES`; if other code does, truncated files stop being rejected.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct

import numpy as np
from PIL import (  # noqa: F401  (importing a plugin registers its format in Image.OPEN)
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from imgclf.formats import (
    IMAGE_EXTENSIONS,
    PILLOW_FORMATS,
    jpeg_metadata_problem,
    missing_plugin,
    register_plugins,
)

register_plugins()  # HEIC (pillow-heif) when installed; AVIF is Pillow's own
_FORMAT_ORDER = PILLOW_FORMATS
SUPPORTED_FORMATS: frozenset[str] = frozenset(_FORMAT_ORDER)
__all__ = ["IMAGE_EXTENSIONS", "SUPPORTED_FORMATS", "ImageError", "load_image"]
MAX_PIXELS: int = 50_000_000
MAX_FILE_BYTES: int = 200 * 2**20  # no image imgclf decodes is larger; read no more than this
BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_COMPOSITE_MODES = _ALPHA_MODES | {"P", "L", "RGB"}  # modes whose transparency convert() applies
_RESAMPLE = Image.Resampling.BILINEAR
_REDUCING_GAP = 3.0  # shrinking >= 3x box-reduces first: much faster on big photos, same look


class ImageError(ValueError):
    """An image could not be decoded. `.reason` is a short human reason; `.source` names the file
    (or "<bytes>")."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def load_image(
    source: str | os.PathLike[str] | bytes,
    size: tuple[int, int] | None = None,
    channels: int = 3,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode an image file (path) or encoded bytes to a C-contiguous uint8 array [H, W, channels].

    `size` is (height, width); None keeps the image's own size, otherwise the image is stretched
    (bilinear, no aspect-ratio preservation). `channels` is 1 (grey) or 3 (RGB). Images whose
    header claims more than `max_pixels` pixels are rejected before decoding; Pillow's own
    decompression-bomb checks (`PIL.Image.MAX_IMAGE_PIXELS`) may still reject some formats.
    Raises ImageError for anything that cannot be decoded, ValueError for bad arguments.
    """
    target = None if size is None else _check_size(size)
    _check_channels(channels)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    name, data = _read_source(source)
    with io.BytesIO(data) as fp:
        img = _decode(fp, name, max_pixels, target)
    img = _to_l_or_rgb(img, name)
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    if target is not None and img.size != (target[1], target[0]):
        img = img.resize((target[1], target[0]), _RESAMPLE, reducing_gap=_REDUCING_GAP)
    return _to_array(img)


def thumbnail(
    source: str | os.PathLike[str] | bytes, max_side: int = 280, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """What a person should see of an image: decoded exactly as `load_image` decodes it (EXIF
    orientation, alpha over white, 16-bit and float scaled, first frame) as RGB uint8
    [h, w, 3], shrunk to fit `max_side` with its aspect ratio kept (never enlarged). The app
    shows this instead of the uploaded file, which a browser may not be able to display (TIFF,
    16-bit, HEIC). Raises ImageError like `load_image`."""
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise ValueError(f"max_side must be a positive int, got {max_side!r}")
    name, data = _read_source(source)
    with io.BytesIO(data) as fp:
        img = _decode(fp, name, max_pixels, (max_side, max_side))
    img = _to_l_or_rgb(img, name).convert("RGB")
    img.thumbnail((max_side, max_side), _RESAMPLE, reducing_gap=_REDUCING_GAP)
    return _to_array(img)


def resize_array(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 [H, W, C] array (C 1 or 3) to `size` = (height, width) exactly as
    `load_image` resizes decoded files (bilinear stretch); returns a new uint8 [h, w, C] array."""
    height, width = _check_size(size)
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] not in (1, 3)
        or 0 in image.shape
    ):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ValueError(f"resize_array expects a non-empty uint8 array [H, W, 1|3], got {got}")
    img = to_pil(image)
    if img.size != (width, height):
        img = img.resize((width, height), _RESAMPLE, reducing_gap=_REDUCING_GAP)
    return _to_array(img)


def check_header(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> str | None:
    """Why the file at `path` cannot be an image imgclf decodes, from its header alone (format,
    size), or None when it looks fine. Reads the first bytes only: a truncated body is found
    when the pixels are decoded."""
    name = os.fspath(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115  (closed below; Pillow reads only the header)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    with fh:
        if not fh.read(1):
            return "empty file"
        fh.seek(0)
        try:
            width, height = _open_allowed(fh, name).size  # type: ignore[arg-type]
        except ImageError as exc:
            return exc.reason
        except Exception:  # the header itself is cut short or garbled
            return "truncated or corrupt image"
    if width * height > max_pixels:
        return f"too large: {width}×{height} px (limit {max_pixels:,} pixels)"
    return None


def to_pil(pixels: np.ndarray) -> Image.Image:
    """The reverse of `load_image`: uint8 pixels [H, W], [H, W, 1] or [H, W, 3] as a Pillow
    image (mode L or RGB). Raises ValueError for other shapes or dtypes."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"expected uint8 pixels [H, W(, 1|3)], got {array.dtype} {array.shape}")
    if array.ndim == 3:
        if array.shape[2] not in (1, 3):
            raise ValueError(f"expected 1 or 3 channels, got {array.shape[2]}")
        array = array[:, :, 0] if array.shape[2] == 1 else array
    return Image.fromarray(np.ascontiguousarray(array))


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 pixels (see `to_pil`) as a lossless PNG file's bytes."""
    buffer = io.BytesIO()
    to_pil(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _check_size(size: object) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
        or min(size) < 1
    ):
        raise ValueError(f"size must be (height, width) as two positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _check_channels(channels: object) -> None:
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def _read_source(source: object) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "<bytes>", bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = os.fsdecode(path)
        kind = file_problem(path)
        if kind is not None:
            raise ImageError(name, kind)
        try:
            # O_NONBLOCK: a FIFO swapped in after the check above cannot block the open.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise ImageError(name, "not a regular file")
                data = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise ImageError(name, "file not found") from None
        except PermissionError:
            raise ImageError(name, "permission denied") from None
        except OSError as exc:
            raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from exc
        if len(data) > MAX_FILE_BYTES:
            raise ImageError(name, f"file larger than {MAX_FILE_BYTES // 2**20} MB")
    else:
        raise TypeError(f"source must be a path or bytes, got {type(source).__name__}")
    if not data:
        raise ImageError(name, "empty file")
    return name, data


def file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` is not a regular file imgclf may read (a FIFO, a device, a socket, a folder,
    a symlink loop, missing, too large), from its metadata only, or None. Reading a FIFO or a
    device could block forever or never end, so they are refused before they are opened."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        try:
            os.lstat(path)
            return "broken symlink (its target does not exist)"
        except OSError:
            return "file not found"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if exc.errno == errno.EACCES:
            return "permission denied"
        return f"cannot read file ({exc.strerror or exc})"
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "not a regular file (a FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "not a regular file (a device)"
    if stat.S_ISSOCK(mode):
        return "not a regular file (a socket)"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if info.st_size > MAX_FILE_BYTES:
        return f"file larger than {MAX_FILE_BYTES // 2**20} MB"
    return None


def _decode(
    fp: io.BytesIO, name: str, max_pixels: int, target: tuple[int, int] | None = None
) -> Image.Image:
    """Identify, size-check and decode frame 0, with EXIF orientation applied. Given the final
    `target` size, a JPEG much larger than it is decoded at a reduced scale (see `_draft`)."""
    try:
        img = _open_allowed(fp, name)
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(name, f"too large: {width}×{height} px (limit {max_pixels:,} pixels)")
        img.seek(0)
        if target is not None:
            _draft(img, target)
        img.load()
        # Returns a transposed copy (or a plain copy), detached from `fp`.
        return ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"too large: {exc}") from exc
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's decoders raise a grab bag (OSError, SyntaxError, ...)
        raise ImageError(name, "truncated or corrupt image") from exc


def _draft(img: ImageFile.ImageFile, target: tuple[int, int]) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, which averages each
    block of source pixels) at every scale that keeps it at least the target size on both sides:
    a 640×480 photo bound for 224×224 decodes at 320×240, a 12 MP photo bound for 28×28 at 1/8.
    The bilinear resize that follows then shrinks by less than 2× (Pillow's resize filters over
    every source pixel it covers). The longer target side is used for both sides because EXIF
    rotation may swap them after decoding. The pixel difference to a full decode is measured by
    benchmarks/data_scale.py and benchmarks/predict_latency.py."""
    if img.format not in ("JPEG", "MPO"):  # MPO: a camera JPEG with extra pictures appended
        return
    side = max(target)
    img.draft(img.mode, (side, side))


def _open_allowed(fp: io.BytesIO, name: str) -> ImageFile.ImageFile:
    """Read the header with the first allowed plugin that accepts the data; nothing is decoded.

    This is `Image.open(fp, formats=...)`'s plugin loop minus its global MAX_IMAGE_PIXELS check:
    that check raises before the size can be reported and ignores our `max_pixels`.
    """
    problem = jpeg_metadata_problem(fp)  # before Pillow parses what it may choke on
    if problem is not None:
        raise ImageError(name, problem)
    prefix = fp.read(16)
    recognised = False
    for fmt in _FORMAT_ORDER:
        if fmt not in Image.OPEN:  # e.g. Pillow built without WebP
            continue
        factory, accept = Image.OPEN[fmt]
        verdict = accept(prefix) if accept else True
        if not verdict or isinstance(verdict, str):  # a str means "known but unsupported variant"
            continue
        recognised = True
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # what Image.open treats as "not this format"; try the next one
    if recognised:
        raise ImageError(name, "truncated or corrupt image")
    fp.seek(0)
    plugin = missing_plugin(prefix)
    if plugin is not None:
        raise ImageError(name, plugin)
    try:
        with Image.open(fp) as other:
            fmt = other.format
    except Exception:
        raise ImageError(name, "not an image") from None
    raise ImageError(name, f"unsupported format: {fmt}")


def _to_l_or_rgb(img: Image.Image, name: str) -> Image.Image:
    """Any decoded mode -> "L" or "RGB", with alpha composited over BACKGROUND."""
    mode = img.mode
    if mode.startswith("I;16"):
        # (x + 128) // 257 == round(x * 255 / 65535) for 16-bit ints, without a float copy.
        return Image.fromarray(((np.asarray(img).astype(np.uint32) + 128) // 257).astype(np.uint8))
    if mode == "I":
        # 32-bit int: 16-bit data (what older Pillow gave for 16-bit PNG) is scaled by 65535;
        # anything larger by its own maximum. Negative values are clipped to 0.
        values = np.clip(np.asarray(img).astype(np.float64), 0, None)
        return _grey_from_array(values, max(65535.0, float(values.max(initial=0))))
    if mode == "F":
        # Float: 0..1 data (the usual normalised convention) is scaled to 0..255; data within
        # 0..255 is kept as is; larger ranges are scaled by their maximum. NaN/inf/negative -> 0.
        values = np.asarray(img).astype(np.float64)
        values = np.where(np.isfinite(values), np.clip(values, 0, None), 0.0)
        top = float(values.max(initial=0))
        return _grey_from_array(values, 1.0 if top <= 1.0 else max(255.0, top))
    if mode == "La":
        img, mode = img.convert("LA"), "LA"  # Pillow cannot convert La straight to RGBA
    has_alpha = (
        mode in _ALPHA_MODES
        or "transparency" in img.info
        or (mode == "P" and img.palette is not None and img.palette.mode == "RGBA")
    )
    if has_alpha and mode in _COMPOSITE_MODES:
        rgba = img.convert("RGBA")  # applies info["transparency"] for P, L and RGB
        background = Image.new("RGBA", img.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise ImageError(name, f"unsupported image mode: {mode}") from exc


def _grey_from_array(values: np.ndarray, full_scale: float) -> Image.Image:
    """Map `values` in 0..full_scale linearly to 0..255 (rounded): keeps levels, unlike clipping."""
    scaled = np.rint(values * (255.0 / full_scale))
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))


def _to_array(img: Image.Image) -> np.ndarray:
    array = np.array(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array)
