"""The pool and the splits: every usable image of a source (`Pool`), the train/val/test `Splits`,
and bringing in-memory images to the configured size and channels (`conform`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.errors import DataError
from imgclf.images import resize_array, to_pil

if TYPE_CHECKING:
    from imgclf.schema import DataConfig


@dataclass
class Pool:
    """Every usable image of a source, before splitting.

    In-memory sources keep their own size here (e.g. 28×28 grey); `load_data` brings only the
    images it selects to `data.image_size` and `data.channels` (`conform`), so a few-shot run on
    a big source never resizes the images it does not use.
    """

    images: np.ndarray  # uint8 [N, h, w, c]: the source's size, or data.image_size for files
    labels: np.ndarray  # int64 [N], index into class_names
    class_names: list[str]
    files: list[str] | None = None  # relative paths, for folder sources
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable files and why
    ignored: list[dict[str, str]] = field(default_factory=list)  # files that are not images
    # The source's own test set (bool [N]), for sources that define one (data.split).
    predefined_test: np.ndarray | None = None


@dataclass
class Split:
    """One split: images, labels and (for folder sources) the file of each image."""

    x: np.ndarray  # uint8 [N, H, W, C]
    y: np.ndarray  # int64 [N]
    files: list[str] | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Splits:
    """The train/val/test splits, the class names and the data report written to the run."""

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    report: dict[str, Any]


def conform(images: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """Bring in-memory uint8 images [N, H, W, C?] to `size` and `channels` like the decoder does."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 3 and channels == 1:
        # Pillow's own luma conversion, exactly what load_image does for decoded files.
        images = np.stack([np.asarray(to_pil(img).convert("L")) for img in images])
        images = images[..., None]
    elif images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    if tuple(images.shape[1:3]) != tuple(size):
        images = np.stack([resize_array(img, size) for img in images])
    return np.ascontiguousarray(images, dtype=np.uint8)


def kept_classes(cfg: DataConfig, available: list[str], where: str) -> list[int]:
    """Indices into `available` of the classes `cfg.classes` keeps, in the config's order
    (every class when it is unset); DataError naming any name the source does not have."""
    if cfg.classes is None:
        return list(range(len(available)))
    unknown = [name for name in cfg.classes if name not in available]
    if unknown:
        raise DataError(
            f"data.classes: unknown class(es) {', '.join(map(repr, unknown))} for {where}; "
            f"available: {', '.join(available)}"
        )
    return [available.index(name) for name in cfg.classes]


def from_arrays(
    cfg: DataConfig,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    test: np.ndarray | None = None,
) -> Pool:
    """A pool from arrays [N, h, w(, c)]: keep `cfg.classes` (re-labelled in the config's
    order). `test` marks the source's own test images (bool [N]), when it has them.

    Images are not resized here: `load_data` conforms the ones it selects.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if images.ndim == 3:
        images = images[..., None]  # a view: [N, h, w] -> [N, h, w, 1]
    kept = kept_classes(cfg, class_names, f"source {cfg.source}")
    if cfg.classes is not None:
        relabel = np.full(len(class_names), -1, dtype=np.int64)
        relabel[kept] = np.arange(len(kept))
        new_labels = relabel[labels]
        keep = np.flatnonzero(new_labels >= 0)
        images, labels = images[keep], new_labels[keep]
        test = test[keep] if test is not None else None
        class_names = [class_names[i] for i in kept]
    return Pool(images, labels, class_names, predefined_test=test)
