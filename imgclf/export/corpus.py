"""A corpus of encoded files, every supported format × mode × EXIF orientation, made from a few
images: what the export parity check sends through each artifact and what the tests send through
every path (load_image, imgclf-predict, the app, serve_bytes, TFLite, ONNX).

Each file is written by Pillow (HEIC by pillow-heif) from the same pixels, enlarged to an odd
size so that every path resizes (and big enough that JPEGs decode at a reduced DCT scale).
`Sample.graph` says whether the SavedModel's in-graph decoder is meant to read it
(`formats.FORMATS`, refined per mode); the others must come back refused, per image.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from imgclf import formats


@dataclass(frozen=True)
class Sample:
    """One encoded file: `kind` names its format and mode ("PNG RGBA", "JPEG EXIF 6", ...);
    `graph` is True when serve_bytes should decode it."""

    name: str
    kind: str
    data: bytes
    graph: bool


def _save(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _alpha(img: Image.Image) -> Image.Image:
    """RGBA with a left-to-right alpha ramp (fully transparent to opaque)."""
    rgba = img.convert("RGBA")
    ramp = np.tile(np.linspace(0, 255, img.width).astype(np.uint8), (img.height, 1))
    rgba.putalpha(Image.fromarray(ramp))
    return rgba


def _palette_keyed(img: Image.Image) -> tuple[Image.Image, int]:
    """A palette image and the index of its most common colour (to mark transparent)."""
    p = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    counts = np.bincount(np.asarray(p).ravel(), minlength=256)
    return p, int(counts.argmax())


def _sixteen(img: Image.Image) -> Image.Image:
    grey = np.asarray(img.convert("L")).astype(np.uint16) * 257 + 100
    return Image.fromarray(grey.astype(np.uint16))


def _recipes() -> list[tuple[str, str, bool, Callable[[Image.Image], bytes]]]:
    """(kind, extension, graph-decodable, encode) for every format × mode imgclf supports."""
    recipes: list[tuple[str, str, bool, Callable[[Image.Image], bytes]]] = [
        ("JPEG RGB", ".jpg", True, lambda im: _save(im, "JPEG", quality=90)),
        ("JPEG L", ".jpeg", True, lambda im: _save(im.convert("L"), "JPEG", quality=90)),
        ("JPEG progressive", ".jfif", True, lambda im: _save(im, "JPEG", progressive=True)),
        ("JPEG CMYK", ".jpg", False, lambda im: _save(im.convert("CMYK"), "JPEG", quality=90)),
        ("MPO (camera)", ".jpg", True, lambda im: _save(im, "MPO", save_all=True,
                                                         append_images=[im.rotate(90)])),
        ("PNG RGB", ".png", True, lambda im: _save(im, "PNG")),
        ("PNG RGBA", ".png", True, lambda im: _save(_alpha(im), "PNG")),
        ("PNG L", ".png", True, lambda im: _save(im.convert("L"), "PNG")),
        ("PNG LA", ".png", True, lambda im: _save(_alpha(im).convert("LA"), "PNG")),
        ("PNG 1-bit", ".png", True, lambda im: _save(im.convert("1"), "PNG")),
        ("PNG P", ".png", True, lambda im: _save(_palette_keyed(im)[0], "PNG")),
        ("PNG P+tRNS", ".png", True,
         lambda im: _save(*_palette_keyed(im)[:1], "PNG", transparency=_palette_keyed(im)[1])),
        ("PNG L+tRNS", ".png", True,
         lambda im: _save(im.convert("L"), "PNG", transparency=int(np.median(im.convert("L"))))),
        ("PNG 16-bit grey", ".png", True, lambda im: _save(_sixteen(im), "PNG")),
        ("GIF", ".gif", True, lambda im: _save(_palette_keyed(im)[0], "GIF")),
        ("GIF transparent", ".gif", True,
         lambda im: _save(_palette_keyed(im)[0], "GIF", transparency=_palette_keyed(im)[1])),
        ("GIF animated", ".gif", True, lambda im: _save(im.convert("P"), "GIF", save_all=True,
                                                        append_images=[im.rotate(90).convert("P")])),
        ("BMP RGB", ".bmp", True, lambda im: _save(im, "BMP")),
        ("BMP L", ".bmp", True, lambda im: _save(im.convert("L"), "BMP")),
        ("BMP P", ".bmp", True, lambda im: _save(_palette_keyed(im)[0], "BMP")),
        ("BMP RGBA", ".bmp", True, lambda im: _save(_alpha(im), "BMP")),
        ("BMP 1-bit", ".bmp", False, lambda im: _save(im.convert("1"), "BMP")),
        ("WebP lossy", ".webp", True, lambda im: _save(im, "WEBP", quality=90)),
        ("WebP RGBA", ".webp", True, lambda im: _save(_alpha(im), "WEBP", lossless=True)),
        ("WebP animated", ".webp", False, lambda im: _save(im, "WEBP", save_all=True,
                                                           append_images=[im.rotate(90)])),
        ("TIFF RGB", ".tif", False, lambda im: _save(im, "TIFF")),
        ("TIFF 16-bit", ".tiff", False, lambda im: _save(_sixteen(im), "TIFF")),
        ("TIFF float", ".tif", False, lambda im: _save(
            Image.fromarray(np.asarray(im.convert("L"), np.float32) / 255.0), "TIFF")),
        ("TIFF CMYK", ".tif", False, lambda im: _save(im.convert("CMYK"), "TIFF")),
    ]  # fmt: skip
    for orientation in range(2, 9):
        recipes.append((f"JPEG EXIF {orientation}", ".jpg", True,
                        lambda im, o=orientation: _save(im, "JPEG", exif=_exif(o))))  # fmt: skip
    recipes.append(("PNG EXIF 6", ".png", True, lambda im: _save(im, "PNG", exif=_exif(6))))
    recipes.append(("WebP EXIF 8", ".webp", True, lambda im: _save(im, "WEBP", exif=_exif(8))))
    if formats.available("AVIF"):
        recipes.append(("AVIF", ".avif", False, lambda im: _save(im, "AVIF", quality=90)))
    if formats.available("HEIF") and formats.heif_can_write():
        recipes.append(("HEIC", ".heic", False, lambda im: _save(im, "HEIF", quality=90)))
    return recipes


def graph_kinds() -> dict[str, bool]:
    """Every kind the corpus holds on this installation, in order: whether serve_bytes reads it."""
    return {kind: graph for kind, _, graph, _ in _recipes()}


def build(images: Iterable[np.ndarray], scale: tuple[float, float] = (3.1, 2.3)) -> list[Sample]:
    """The corpus: for each uint8 image [H, W, 1|3] (the first few of a test split), every kind,
    enlarged by `scale` (height, width) so that every path resizes. Names are unique."""
    samples = []
    for i, pixels in enumerate(images):
        array = np.asarray(pixels, np.uint8)
        img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")
        size = (round(img.width * scale[1]) | 1, round(img.height * scale[0]) | 1)
        img = img.resize(size, Image.Resampling.BICUBIC)
        for kind, ext, graph, encode in _recipes():
            slug = kind.lower().replace(" ", "-").replace("(", "").replace(")", "")
            samples.append(Sample(f"{i:02d}-{slug}{ext}", kind, encode(img), graph))
    return samples
