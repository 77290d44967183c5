"""Grad-CAM heatmaps as pictures: blended over the image (`overlay`), upscaled and saved as PNG
files named after their sources (`save_overlays`, `explain_files`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from imgclf.explain.gradcam import gradcam
from imgclf.images import load_image, png_bytes

if TYPE_CHECKING:
    import keras

VIEW_SIDE = 224  # saved overlays are upscaled (nearest) until their long side reaches this
COLORMAP = "jet"
_UNSAFE_IN_NAMES = re.compile(r'[<>:"/\\|?*\x00-\x1f]')  # not allowed in file names somewhere


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image blended with a colour map ("jet") of its heatmap: uint8 RGB [H, W, 3].

    `image` is [H, W], [H, W, 1] or [H, W, 3] with values 0..255 (grey becomes RGB); `heatmap`
    is [h, w] in 0..1 and is resized (bilinear) to H×W when its size differs. Each pixel is
    (1 - alpha) * image + alpha * colour(heat).
    """
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in 0..1, got {alpha}")
    rgb = np.asarray(image, dtype=np.float32)
    if rgb.ndim == 3 and rgb.shape[-1] == 1:
        rgb = rgb[..., 0]
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"image must be [H, W], [H, W, 1] or [H, W, 3], got {image.shape}")
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be [H, W], got {heat.shape}")
    height, width = rgb.shape[:2]
    if heat.shape != (height, width):
        resized = Image.fromarray(heat).resize((width, height), Image.Resampling.BILINEAR)
        heat = np.asarray(resized)  # a float32 array is a mode "F" image: no 8-bit rounding
    colour = colormaps[COLORMAP](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0  # [H, W, 3]
    blended = (1.0 - alpha) * rgb + alpha * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _upscale(rgb: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour upscaling by a whole factor until the long side reaches `side`: every
    model pixel stays a crisp square, so the picture shows the resolution the model saw."""
    factor = max(1, math.ceil(side / max(rgb.shape[:2])))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1) if factor > 1 else rgb


def _file_stem(source: str, used: set[str]) -> str:
    stem = _UNSAFE_IN_NAMES.sub("_", Path(source).stem) or "image"
    unique, n = stem, 1
    while unique in used:  # same stem from two folders: photo.jpg, photo-2, photo-3, ...
        n += 1
        unique = f"{stem}-{n}"
    used.add(unique)
    return unique


def save_overlays(
    model: keras.Model,
    images: np.ndarray,
    sources: Sequence[str],
    out_dir: str | Path,
    class_index: int | Sequence[int] | None = None,
    layer: str | None = None,
    side: int = VIEW_SIDE,
) -> list[Path]:
    """Write `out_dir/<stem of source>_gradcam.png` for each raw image [N, H, W, C]; return paths.

    The overlay is made at the model's input size and upscaled (nearest, by a whole factor)
    until its long side is at least `side` pixels. Repeated stems get -2, -3, ...; existing
    files are overwritten. `class_index` and `layer` are as for `gradcam`.
    """
    if len(sources) != len(images):
        raise ValueError(f"{len(sources)} sources for {len(images)} images")
    heatmaps = gradcam(model, images, class_index, layer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    paths = []
    for source, image, heat in zip(sources, images, heatmaps, strict=True):
        path = out / f"{_file_stem(source, used)}_gradcam.png"
        path.write_bytes(png_bytes(_upscale(overlay(image, heat), side)))
        paths.append(path)
    return paths


def explain_files(
    model: keras.Model,
    files: Sequence[str | Path],
    out_dir: str | Path,
    class_index: int | Sequence[int] | None = None,
    layer: str | None = None,
    side: int = VIEW_SIDE,
) -> list[Path]:
    """Decode image files at the model's input size (`images.load_image`) and write their
    Grad-CAM overlays with `save_overlays`. Raises ImageError for a file that cannot be read."""
    if not files:
        return []
    _, height, width, channels = model.input_shape
    images = np.stack([load_image(f, (height, width), channels) for f in files]).astype(np.float32)
    return save_overlays(model, images, [str(f) for f in files], out_dir, class_index, layer, side)
