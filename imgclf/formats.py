"""What imgclf accepts as an image: the one definition that the decoder (`images`), training's
folder and CSV listing, `imgclf-predict`, the app's uploader and the docs all read.

Formats are recognised from the file's bytes, never from its name; the extension only decides
which files of a folder are listed as images (anything else is reported as ignored). HEIC/HEIF
(the iPhone default) is read by the `pillow-heif` plugin, AVIF by Pillow itself (Pillow >= 11.3
built with libavif). Every mode Pillow opens is turned into grey or RGB by `images.load_image`:
alpha over white, 16-bit and float scaled, EXIF orientation applied, the first frame of an
animation. `graph` marks the formats the SavedModel's `serve_bytes` decodes inside TensorFlow.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imgclf.infra.errors import UserError


@dataclass(frozen=True)
class Format:
    """One supported file format: Pillow's format name(s), the extensions that list a file as
    this format, and whether the SavedModel's in-graph decoder reads it."""

    name: str
    pillow: tuple[str, ...]
    extensions: tuple[str, ...]
    graph: bool
    note: str = ""


FORMATS: tuple[Format, ...] = (
    Format("JPEG", ("JPEG", "MPO"), (".jpg", ".jpeg", ".jpe", ".jfif"), True,
           "MPO camera files: the first picture; CMYK and 12-bit are not read in the graph"),
    Format("PNG", ("PNG",), (".png",), True, "1..16-bit, grey, palette, alpha, tRNS"),
    Format("WebP", ("WEBP",), (".webp",), True, "animated files: first frame (not in the graph)"),
    Format("GIF", ("GIF",), (".gif",), True, "first frame"),
    Format("BMP", ("BMP", "DIB"), (".bmp", ".dib"), True, "1/4/16-bit and RLE not in the graph"),
    Format("TIFF", ("TIFF",), (".tif", ".tiff"), False, "8/16-bit, float, CMYK; first page"),
    Format("HEIC", ("HEIF",), (".heic", ".heif", ".hif"), False, "via pillow-heif"),
    Format("AVIF", ("AVIF",), (".avif",), False, "via Pillow's AVIF plugin"),
)  # fmt: skip

IMAGE_EXTENSIONS: frozenset[str] = frozenset(e for f in FORMATS for e in f.extensions)
# Pillow format names the decoder opens, in the order it tries them.
PILLOW_FORMATS: tuple[str, ...] = tuple(p for f in FORMATS for p in f.pillow if p != "MPO")
MODES = (
    "grey (L, 1-bit)",
    "RGB",
    "RGBA / LA (composited over white)",
    "palette (with tRNS transparency)",
    "CMYK",
    "16-bit integer (scaled by 257)",
    "32-bit float (0..1 or 0..255)",
)
UPLOAD_TYPES: list[str] = sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def register_plugins() -> None:
    """Register the optional Pillow plugins when they are installed: HEIC via pillow-heif, and
    Pillow's own AVIF plugin (imported explicitly: Pillow loads only the plugins asked for)."""

    with contextlib.suppress(ImportError):  # Pillow < 11.3 has no AVIF plugin
        importlib.import_module("PIL.AvifImagePlugin")
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()


def available(pillow_name: str) -> bool:
    """Whether this installation's Pillow can open `pillow_name` (e.g. "HEIF", "AVIF")."""
    from PIL import Image

    register_plugins()
    Image.init()
    return pillow_name in Image.OPEN


def heif_can_write() -> bool:
    """Whether pillow-heif has an HEVC encoder here (to make test files; reading needs none)."""
    try:
        import pillow_heif
    except ImportError:
        return False
    return bool(pillow_heif.libheif_info().get("HEIF"))


def missing_plugin(head: bytes) -> str | None:
    """For a file Pillow cannot open: what to install when its first bytes are an HEIC/AVIF
    container (ISO base media `ftyp` box), else None."""
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in (b"avif", b"avis"):
        return "AVIF image: this Pillow has no AVIF support; pip install -U 'pillow>=11.3'"
    return "HEIC/HEIF photo: pip install pillow-heif (imgclf's HEIC plugin)"


def is_image_name(path: str | os.PathLike[str]) -> bool:
    """Whether the file name's extension is one imgclf lists as an image (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# A folder walk stops with an error past this many entries (files and folders): a dataset of
# a million photos fits; `data.path: /` (770,000 entries on this machine, plus /proc) does not.
MAX_WALK_ENTRIES = 1_000_000
# Kernel pseudo-file systems: never a dataset, and /proc and /sys are endless or loop.
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


def walk(
    folder: str | os.PathLike[str],
    errors: list[tuple[Path, str]] | None = None,
    max_entries: int = MAX_WALK_ENTRIES,
) -> Iterator[Path]:
    """Every file under `folder`, sorted, following symlinked folders (a user's class folder may
    be a link to their photo library) but never entering the same real folder twice, so a link
    loop ends. Hidden names (".x") are skipped, and so are /proc, /sys and /dev. A folder that
    cannot be read (no permission, an I/O error) is appended to `errors` as (folder, reason) so
    the caller can name it; without `errors` it raises the OSError, never skips silently. Past
    `max_entries` entries it raises UserError (the wrong folder, e.g. `/`), naming the folder."""
    seen: set[str] = set()
    count = 0
    stack: list[Iterator[os.DirEntry[str]] | Path] = [Path(folder)]
    while stack:  # depth first, without recursion (a deep tree cannot overflow the stack)
        top = stack[-1]
        if isinstance(top, Path):
            stack.pop()
            real = os.path.realpath(top)
            if real in seen:
                continue
            seen.add(real)
            if any(real == s or real.startswith(s + "/") for s in SYSTEM_FOLDERS):
                if errors is not None:
                    errors.append((top, "a system folder (/proc, /sys, /dev): not read"))
                continue
            try:
                entries = sorted(os.scandir(top), key=lambda e: e.name)
            except OSError as exc:
                if errors is None:
                    raise
                errors.append((top, f"folder cannot be read ({exc.strerror or exc})"))
                continue
            count += len(entries)
            if count > max_entries:
                raise UserError(
                    f"{folder}: more than {max_entries:,} files and folders under it; is it the "
                    "right folder? Point at the dataset itself (one sub-folder per class)"
                )
            stack.append(iter(entries))
            continue
        entry = next(top, None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False  # yielded as a file: the caller's file check names the problem
        if is_dir:
            stack.append(Path(entry.path))
        else:
            yield Path(entry.path)


# A JPEG's metadata segments (APPn: EXIF, XMP, ICC, ...; COM) before its image data. A photo
# has a handful; Pillow's time grows with the square of the EXIF segments' count (400 took
# 0.5 s, 2,500 of them, 160 MB, hung the decoder), so more than these are refused before Pillow
# reads the file.
MAX_JPEG_SEGMENTS = 128
MAX_JPEG_METADATA = 8 * 2**20  # bytes, all metadata segments together


def jpeg_metadata_problem(fp: BinaryIO) -> str | None:
    """Why the JPEG in `fp` (read from its start; position restored to 0) has too much
    metadata to decode, or None (also for data that is not a JPEG, or is cut short: the
    decoder reports those). Reads the segment headers only, up to the image data (SOS),
    skipping stray bytes between them as Pillow does."""
    fp.seek(0)
    if fp.read(2) != b"\xff\xd8":
        fp.seek(0)
        return None
    count = total = 0
    problem = None
    while problem is None:
        if not _next_marker(fp):
            break  # the end of the data: Pillow says whether it is cut short
        marker = fp.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fp.read(1)
        if not marker or marker[0] in (0xDA, 0xD9):  # start of scan, end of image
            break
        if marker[0] == 0x01 or 0xD0 <= marker[0] <= 0xD8:  # no length field
            continue
        head = fp.read(2)
        length = int.from_bytes(head, "big") if len(head) == 2 else 0
        if length < 2:
            break
        if 0xE0 <= marker[0] <= 0xEF or marker[0] == 0xFE:
            count, total = count + 1, total + length
            if count > MAX_JPEG_SEGMENTS:
                problem = f"more than {MAX_JPEG_SEGMENTS} JPEG metadata segments"
            elif total > MAX_JPEG_METADATA:
                problem = f"more than {MAX_JPEG_METADATA // 2**20} MB of JPEG metadata"
        fp.seek(length - 2, 1)
    fp.seek(0)
    return None if problem is None else f"{problem} (EXIF, XMP, ICC, comments): not decoded"


def _next_marker(fp: BinaryIO) -> bool:
    """Move `fp` just past the next 0xFF byte; False at the end of the data. Pillow skips
    stray bytes between segments one by one, so a scan that stopped at them could be led past
    (one zero byte, then 600 EXIF segments that took Pillow 6.6 s); they are skipped here too,
    in 64 KB reads."""
    while chunk := fp.read(1 << 16):
        found = chunk.find(b"\xff")
        if found >= 0:
            fp.seek(found + 1 - len(chunk), 1)
            return True
    return False
