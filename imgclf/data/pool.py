"""The pool and the splits: every usable image of a source (`Pool`), the train/val/test `Splits`,
bringing in-memory images to the configured size and channels (`conform`), and reading a
split's images in batches whether they are in memory or streamed from files (`batches`)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.data.store import FileStore, ImageView
from imgclf.images import resize_array, to_pil
from imgclf.infra.errors import DataError

if TYPE_CHECKING:
    from imgclf.schema import DataConfig

# A source's own split of each image (Pool.assigned).
TRAIN, VAL, TEST, UNASSIGNED = 0, 1, 2, -1


@dataclass
class Pool:
    """Every usable image of a source, before splitting.

    In-memory sources keep their own size here (e.g. 28×28 grey); `load_data` brings only the
    images it selects to `data.image_size` and `data.channels` (`conform`), so a few-shot run on
    a big source never resizes the images it does not use.
    """

    images: np.ndarray | None  # uint8 [N, h, w, c] at the source's size; None: in `store`
    labels: np.ndarray  # int64 [N], index into class_names
    class_names: list[str]
    files: list[str] | None = None  # relative paths, for file sources
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable files and why
    ignored: list[dict[str, str]] = field(default_factory=list)  # files that are not images
    # The source's own split (int8 [N]: TRAIN, VAL, TEST or UNASSIGNED), for sources that
    # have one (Fashion-MNIST's test set, train/val/test folders, a CSV's split column).
    assigned: np.ndarray | None = None
    store: FileStore | None = None  # file sources: the pixels, by store index
    store_index: np.ndarray | None = None  # int64 [N]: each pool image's index in `store`
    # bool [N]: files already known not to decode (listed in `skipped`). They stay in the pool
    # until after the split, so the split is the same whichever `data.cache` found them.
    failed: np.ndarray | None = None


@dataclass
class Split:
    """One split: images, labels and (for folder sources) the file of each image."""

    x: np.ndarray | ImageView  # uint8 [N, H, W, C], in memory or read on demand
    y: np.ndarray  # int64 [N]
    files: list[str] | None = None
    # task: multilabel: float32 multi-hot [N, K], what the model learns (y: each first label)
    targets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def streamed(self) -> bool:
        """True when the images are read from files (or the disk cache) on demand."""
        return isinstance(self.x, ImageView)

    def readable(self) -> np.ndarray:
        """Positions of the images known to decode (all but files that failed a read)."""
        if not isinstance(self.x, ImageView):
            return np.arange(len(self))
        failed = np.fromiter(self.x.store.failures, dtype=np.int64)
        return np.flatnonzero(~np.isin(self.x.indices, failed))


def readable_sample(split: Split, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of the first `limit` readable images of `split`, in order."""
    images, labels, have = [], [], 0
    for pixels, positions in batches(split.x, min(limit, 256) or 1):
        images.append(pixels[: limit - have])
        labels.append(split.y[positions][: limit - have])
        have += len(images[-1])
        if have >= limit:
            break
    if not images:
        return np.zeros((0, *split.x.shape[1:]), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(images), np.concatenate(labels)


def batches(
    x: np.ndarray | ImageView, size: int = 256, positions: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(uint8 images [k, H, W, C], their positions [k]) for every readable image of `x` (or of
    its `positions`, ascending), `size` positions at a time, in order: an in-memory array is
    sliced; streamed images are read (a file that fails to decode is left out and recorded in
    the store's failures)."""
    if positions is not None:
        for start in range(0, len(positions), size):
            chunk = np.asarray(positions[start : start + size], np.int64)
            if isinstance(x, ImageView):
                images, ok = x.read(chunk)
                yield images, chunk[ok]
            else:
                yield np.asarray(x[chunk]), chunk
        return
    for start in range(0, len(x), size):
        positions = np.arange(start, min(start + size, len(x)))
        if isinstance(x, ImageView):
            images, ok = x.read(positions)
            yield images, positions[ok]
        else:
            yield np.asarray(x[start : start + size]), positions


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


def pixel_chunks(
    pool: Pool, size: int = 256, indices: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(pool indices, uint8 images [k, H, W, C]) of the usable images (not `failed`; of
    `indices` only, when given), `size` at a time, for checks that look at every image
    (`near_duplicates`, `label_issues`): from memory for a built-in set, else from the file
    store (its decoded cache), so a disk cache stays on disk. Images the store cannot read are
    left out of the indices too. Nothing for a file source whose pixels are not kept
    (`data.cache: none`): check `has_pixels` first."""
    usable = np.arange(len(pool.labels)) if indices is None else np.asarray(indices, np.int64)
    if pool.failed is not None:
        usable = usable[~pool.failed[usable]]
    for start in range(0, len(usable), size):
        chunk = usable[start : start + size]
        if pool.images is not None:
            yield chunk, pool.images[chunk]
        elif has_pixels(pool):
            images, ok = pool.store.read(pool.store_index[chunk])
            yield chunk[ok], images


def has_pixels(pool: Pool) -> bool:
    """Whether every image's pixels are at hand without decoding: a built-in set, or a file
    source with a memory or disk cache."""
    if pool.images is not None:
        return True
    return pool.store is not None and pool.store.mode in ("memory", "disk")


def class_name(name: str) -> str:
    """A class name as imgclf keeps it: Unicode NFC. A Mac writes `café` decomposed (NFD: `e`
    and a combining accent), Linux and Windows composed; the two look the same in every table
    and were two classes."""
    return unicodedata.normalize("NFC", name)


def kept_classes(cfg: DataConfig, available: list[str], where: str) -> list[int]:
    """Indices into `available` of the classes `cfg.classes` keeps, in the config's order
    (every class when it is unset); DataError naming any name the source does not have. Names
    are compared in NFC (`class_name`)."""
    if cfg.classes is None:
        return list(range(len(available)))
    available = [class_name(a) for a in available]
    wanted = [class_name(name) for name in cfg.classes]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise DataError(
            f"data.classes: unknown class(es) {', '.join(map(repr, unknown))} for {where}; "
            f"available: {', '.join(available)}"
        )
    return [available.index(name) for name in wanted]


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
    assigned = None if test is None else np.where(test, TEST, TRAIN).astype(np.int8)
    return Pool(images, labels, class_names, assigned=assigned)


def take(pool: Pool, idx: np.ndarray, cfg: DataConfig) -> Split:
    """The pool images `idx` as a split: in-memory sources conformed to the configured size,
    file sources decoded in memory or, for the disk cache and no cache, read on demand."""
    files = [pool.files[i] for i in idx] if pool.files is not None else None
    if pool.store is None:
        images = conform(pool.images[idx], cfg.image_size, cfg.channels)
        return Split(images, pool.labels[idx], files)
    where = pool.store_index[idx]
    if pool.store.mode == "memory":
        return Split(pool.store.read(where)[0], pool.labels[idx], files)
    return Split(ImageView(pool.store, where), pool.labels[idx], files)
