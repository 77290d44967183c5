"""Backbone features cached for the head phase of a transfer run (`transfer.fit_head_on_features`):
the features of every image computed once (`cached_split`), or, with augmentation, the features of
K augmented views of every training image (`views_split`, `transfer.augmented_views`).

Both run the frozen backbone through a compiled function on bounded batches (`forward.Forward`,
`train.eval_batch_size`), reading streamed images batch by batch; a file that fails to decode is
left out. The views live in a memory-mapped temporary file in the cache folder (the pages are
the OS's file cache, not this process's memory): K × images × features × 4 bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.data.pool import batches
from imgclf.infra.cache import cache_dir
from imgclf.infra.errors import DataError

if TYPE_CHECKING:
    from imgclf.data import Split, Splits
    from imgclf.forward import Forward


def cached_split(
    extractor: Forward, split: Split, estimate: Any = None, share: Share | None = None
) -> Split:
    """`split` with its images replaced by their features float32 [n, D] (the readable ones);
    `estimate` (imgclf.training.estimate.Estimate) is told how long the forward pass took.

    With `share` (a multi-worker run: `Share`), this worker runs the backbone on its share of
    the images only (every `count`-th from `index` on) and the shares are summed over the
    workers (`share.combine`, an all-reduce, where every other worker contributes zeros to a
    row), so every worker ends with every image's features for 1/count of the compute."""
    start, outs, kept = time.perf_counter(), [], []
    mine = None if share is None else np.arange(share.index, len(split), share.count)
    for out, positions in extractor.stream(split.x, mine):
        outs.append(np.asarray(out, np.float32).reshape(len(positions), -1))
        kept.append(positions)
    width = int(np.prod(extractor.model.output.shape[1:]))
    x = np.concatenate(outs) if outs else np.zeros((0, width), np.float32)
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    if estimate is not None:
        estimate.observe_forward(len(kept), time.perf_counter() - start)
    if share is not None:
        with share.guard():
            x, kept = _gather(share, x, kept, len(split), width)
    return _keep(split, x, kept)


@dataclasses.dataclass(frozen=True)
class Share:
    """This worker's share of a multi-worker feature computation: every `count`-th image
    from `index` on; `combine(features float32 [k, D], read int64 [k])` returns the sums of
    every worker's arrays (the same shapes: `cluster_sync.all_sum`); `guard()`, a context
    around the exchange (lost peers, the watchdog)."""

    count: int
    index: int
    combine: Any
    guard: Any = contextlib.nullcontext


GATHER_ROWS = 4096  # rows of features per all-reduce: bounds the float64 copies in flight


def _gather(
    share: Share, x: np.ndarray, kept: np.ndarray, n: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(features of every readable image [m, D], their positions [m]) from every worker's
    (features, positions), in row blocks of GATHER_ROWS."""
    parts, read = [], []
    for begin in range(0, n, GATHER_ROWS):
        end = min(n, begin + GATHER_ROWS)
        block = np.zeros((end - begin, width), np.float32)
        flags = np.zeros(end - begin, np.int64)
        inside = (kept >= begin) & (kept < end)
        block[kept[inside] - begin] = x[inside]
        flags[kept[inside] - begin] = 1
        block, flags = share.combine(block, flags)
        parts.append(block[flags > 0])
        read.append(begin + np.flatnonzero(flags > 0))
    if not parts:
        return np.zeros((0, width), np.float32), np.zeros(0, np.int64)
    return np.concatenate(parts), np.concatenate(read)


def _keep(split: Split, x: Any, kept: np.ndarray) -> Split:
    files = [split.files[i] for i in kept] if split.files is not None else None
    targets = None if split.targets is None else split.targets[kept]  # task: multilabel
    return dataclasses.replace(
        split, x=x, y=np.asarray(split.y)[kept], files=files, targets=targets
    )


class AugmentedViews:
    """The cached features of `views` augmented versions of every training image, float32
    [views, N, D] (`rows`: the rows of it in use), read as one array [n, D] whose rows come
    from view `epoch % views`: `set_epoch(e)` (called at every epoch's start) selects it, so
    a resumed run reads the same views as the run it continues."""

    def __init__(self, features: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.features = features
        self.rows = np.arange(features.shape[1]) if rows is None else rows
        self.current = 0
        self.seconds = 0.0  # how long computing them took

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.features.shape[2:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: Any) -> np.ndarray:
        return np.asarray(self.features[self.current][self.rows[positions]])

    def set_epoch(self, epoch: int) -> None:
        self.current = epoch % len(self.features)


def augmented_views(
    extractor: Forward, split: Split, augmenter: Any, views: int, num_classes: int, store: Any
) -> tuple[AugmentedViews, np.ndarray]:
    """(views of the features, positions of the images read in every view): `views` passes
    over `split`, each batch augmented by `augmenter` (as training augments it) and run through
    `extractor` (the backbone up to the features), written into the open file `store` (its
    space reserved first: a full disk is an OSError here, not a crash on a page write). An
    image that failed to decode in any pass is left out of all of them, so every row keeps its
    label.

    Raises DataError when no training image could be read."""

    width = int(np.prod(extractor.model.output.shape[1:]))
    readable = split.readable()
    if not len(readable):
        raise DataError("no training image could be read: nothing to cache features of")
    nbytes = views * len(readable) * width * 4
    os.posix_fallocate(store.fileno(), 0, nbytes)
    features = np.memmap(store, np.float32, "w+", shape=(views, len(readable), width))
    seen = np.zeros((views, len(readable)), bool)
    eye = np.eye(num_classes, dtype=np.float32)
    for view in range(views):
        for pixels, positions in batches(split.x, extractor.batch_size):
            if not len(positions):
                continue
            images, _ = augmenter(pixels.astype(np.float32), eye[np.asarray(split.y)[positions]])
            out = extractor.run_batch(np.asarray(images)).reshape(len(positions), width)
            rows = np.searchsorted(readable, positions)
            features[view, rows] = out
            seen[view, rows] = True
    rows = np.flatnonzero(seen.all(axis=0))  # read in every view
    if not len(rows):
        raise DataError("no training image could be read: nothing to cache features of")
    return AugmentedViews(features, rows), readable[rows]


def views_split(
    extractor: Forward,
    split: Split,
    augmenter: Any,
    views: int,
    num_classes: int,
    stack: contextlib.ExitStack,
    estimate: Any = None,
) -> Split:
    """`split` with its images replaced by the AugmentedViews of `views` augmented passes, in
    a temporary file of the cache folder that `stack` removes when it closes. Raises DataError
    (one line, the fixes) when the file cannot be written."""

    start = time.perf_counter()
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Closed (and so deleted) by `stack`, when the phase that reads it ends.
        file = tempfile.NamedTemporaryFile(dir=folder, prefix="imgclf-views-", suffix=".f32")  # noqa: SIM115
        temporary = stack.enter_context(file)
        x, kept = augmented_views(extractor, split, augmenter, views, num_classes, temporary)
    except OSError as exc:  # a full or read-only disk: the run stops with one line
        raise DataError(
            f"cannot write the cached augmented views in {folder} ({exc.strerror or exc}): "
            "free space there, point IMGCLF_CACHE at another disk, or set "
            "transfer.augmented_views=0"
        ) from None
    x.seconds = time.perf_counter() - start
    if estimate is not None:
        estimate.observe_forward(views * len(kept), x.seconds)
    return _keep(split, x, kept)


def head_splits(
    extractor: Forward,
    splits: Splits,
    augmenter: Any,
    views: int,
    stack: contextlib.ExitStack,
    estimate: Any = None,
    share: Share | None = None,
) -> Splits:
    """`splits` with the training and validation images replaced by their features: the
    training split's `views` augmented views when `views` > 0, else its plain features; with
    `share`, the plain features are computed sharded between the workers (`cached_split`;
    the augmented views are not: every worker computes all of them)."""
    if views:
        n = len(splits.class_names)
        train = views_split(extractor, splits.train, augmenter, views, n, stack, estimate)
    else:
        train = cached_split(extractor, splits.train, estimate, share)
    val = cached_split(extractor, splits.val, estimate, share)
    return dataclasses.replace(splits, train=train, val=val)


def describe(split: Split) -> str:
    """One line on a split of AugmentedViews."""
    views = split.x
    return (
        f"features of {len(views.features)} augmented views of {len(views):,} training images "
        f"cached in {views.seconds:.1f} s"
    )
