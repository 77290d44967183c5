"""Batch pipelines over splits: tf.data (`make_dataset`) on TensorFlow, or a backend-neutral
`keras.utils.PyDataset` (`make_pydataset`) for JAX and torch.

Both read a batch of positions at a time (sliced from memory, or read from files through the
decoded cache) and shuffle by an order that is a function of the seed and the epoch alone:
`set_epoch(data, e)` (the `EpochOrder` callback calls it at every epoch's start) selects epoch
e's order. So a run resumed at epoch e (`imgclf-train --resume`) sees exactly the batches the
uninterrupted run saw, whatever happened before.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.data.pool import Split
from imgclf.data.store import ImageView

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The PyDataset's order of epoch `epoch`: a permutation of range(n) drawn from (seed,
    epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _reader(split: Split, num_classes: int) -> Any:
    """positions -> (float32 images, one-hot labels) of the readable images among them."""
    x, labels = split.x, np.asarray(split.y, dtype=np.int64)
    eye = np.eye(num_classes, dtype=np.float32)
    if split.targets is not None:  # task: multilabel: the multi-hot rows themselves
        rows = np.asarray(split.targets, dtype=np.float32)
        eye, labels = rows, np.arange(len(rows))

    def read(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(x, ImageView):
            return x[positions].astype(np.float32), eye[labels[positions]]
        images, ok = x.read(positions)
        if not ok.any():  # every file of the batch failed: one readable image stands in, so no
            # batch is empty (the number of batches stays known, and no loss is a 0/0)
            for other in range(len(labels)):
                images, ok = x.read(np.array([other]))
                if ok.any():
                    positions = np.array([other])
                    break
        return images.astype(np.float32), eye[labels[positions[ok]]]

    return read


def _position_batches(
    positions: np.ndarray, batch_size: int, seed: int, epoch: tf.Variable | None
) -> tf.data.Dataset:
    """Batches of `positions` (int64 [B]): in order, or shuffled by (seed, `epoch`) if given."""
    import tensorflow as tf

    if epoch is None:
        return tf.data.Dataset.from_tensor_slices(positions).batch(batch_size)
    key = tf.constant(seed, tf.int64)
    # Read when an epoch's iterator starts, after `set_epoch`: the order of (seed, epoch).
    order = tf.data.Dataset.from_tensors(positions).flat_map(
        lambda p: tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(p, seed=tf.stack([key, epoch]))
        )
    )
    # flat_map hides the length: say it, so Keras knows an epoch's steps.
    steps = -(-len(positions) // batch_size)
    return order.batch(batch_size).apply(tf.data.experimental.assert_cardinality(steps))


def make_dataset(
    split: Split,
    batch_size: int,
    num_classes: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    augment: Any = None,
    shard: tuple[int, int] | None = None,
    epoch: tf.Variable | None = None,
) -> tf.data.Dataset:
    """A tf.data pipeline over a split: positions, [shuffled], batched, read, [augment],
    prefetched.

    Yields (images, labels): raw float32 pixels 0..255 (the model preprocesses) and one-hot
    float32 labels (MixUp/CutMix blend them; label smoothing and MSE need them). `augment` is a
    callable on batches `(images, labels) -> (images, labels)`, applied after batching because
    Keras' random layers are vectorised over a batch. Pixels are read a batch at a time, in
    parallel and in order: sliced from an in-memory split, or decoded (or read from the disk
    cache) for a streamed one, so memory does not grow with the set; an image that fails to
    decode is left out of its batch and reported by the store. The shuffled order of epoch e is
    a function of (seed, e): `set_epoch(dataset, e)` selects it (the `epoch_order_callback`
    of every fit does; iterated without one, every pass has epoch 0's order). `epoch` is the
    int64 variable holding the epoch (one is made when None). `shard` = (count, index) keeps
    every count-th image from index, len(split) // count of them (a worker's equal share).
    """
    import tensorflow as tf

    positions = np.arange(len(split), dtype=np.int64)
    if shard:  # before reading anything: a worker reads only its own images
        # Equal shares (the last len % count images sit out): every worker must run the same
        # number of steps, or the one with an extra step waits forever in the all-reduce.
        positions = positions[shard[1] :: shard[0]][: len(positions) // shard[0]]
    shape = list(split.x.shape[1:])  # [H, W, C] images, or [F] cached features
    read = _reader(split, num_classes)

    def load(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(read, [batch], (tf.float32, tf.float32), stateful=False)
        x.set_shape([None, *shape])
        y.set_shape([None, num_classes])
        return x, y

    if shuffle and epoch is None:
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    batches = _position_batches(positions, batch_size, seed, epoch if shuffle else None)
    ds = batches.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment is not None:
        # Sequential on purpose: the random layers advance a seed state, and parallel calls
        # would consume it in a racy order, making runs with the same seed differ.
        ds = ds.map(augment)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.imgclf_epoch = epoch  # the order's epoch (set_epoch)
    return ds


def set_epoch(data: Any, epoch: int) -> None:
    """Select epoch `epoch`'s shuffled order of a pipeline made here (no-op otherwise)."""
    variable = getattr(data, "imgclf_epoch", None)
    if variable is not None:
        variable.assign(epoch)
    elif hasattr(data, "set_epoch"):
        data.set_epoch(epoch)


def epoch_order_callback(data: Any) -> keras.callbacks.Callback:
    """A callback that selects each epoch's order of `data` at the epoch's start (a resumed
    fit starts at its epoch too)."""
    import keras

    class EpochOrder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            set_epoch(data, epoch)

    return EpochOrder()


# --------------------------------------------------------------------------------------------
# Backend-neutral pipeline (keras.utils.PyDataset)


@functools.cache
def _array_dataset_class() -> type:
    """The PyDataset subclass, defined on first use so importing this module imports no Keras."""
    import keras

    class ArrayDataset(keras.utils.PyDataset):
        """Batches of a split as NumPy arrays, for any Keras backend (no tf.data)."""

        def __init__(self, split: Split, batch_size: int, num_classes: int, **options: Any):
            # make_dataset's keywords: shuffle (False), seed (0), augment (None).
            unknown = set(options) - {"shuffle", "seed", "augment"}
            if unknown:
                raise TypeError(f"unknown option(s) {sorted(unknown)}; use shuffle, seed, augment")
            # One worker, no multiprocessing: batches are made in order in the training loop, so
            # the augmentation layers' seed state advances in the same order on every run.
            super().__init__(workers=1, use_multiprocessing=False)
            if batch_size < 1:
                raise ValueError(f"batch_size must be >= 1, got {batch_size}")
            self.n, self.batch_size = len(split), int(batch_size)
            self.shuffle, self.augment = bool(options.get("shuffle")), options.get("augment")
            self.seed = int(options.get("seed", 0))
            self._read = _reader(split, num_classes)
            self.set_epoch(0)

        def set_epoch(self, epoch: int) -> None:
            """Epoch `epoch`'s order (a function of the seed and the epoch)."""
            self.epoch = epoch
            self.order = (
                epoch_order(self.n, self.seed, epoch) if self.shuffle else np.arange(self.n)
            )

        def on_epoch_end(self) -> None:
            # The next epoch's order (set_epoch at an epoch's start says which, when resuming).
            self.set_epoch(self.epoch + 1)

        def __len__(self) -> int:
            return -(-self.n // self.batch_size)  # the last batch may be smaller

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            if not 0 <= index < len(self):
                raise IndexError(f"batch {index} out of range 0..{len(self) - 1}")
            idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            images, labels = self._read(idx)  # streamed: unreadable files are left out
            if self.augment is not None:
                images, labels = self.augment(images, labels)
                # The layers run on the active backend (jax/torch/tf arrays): back to NumPy.
                images = np.asarray(keras.ops.convert_to_numpy(images), dtype=np.float32)
                labels = np.asarray(keras.ops.convert_to_numpy(labels), dtype=np.float32)
            return images, labels

    return ArrayDataset


def make_pydataset(split: Split, batch_size: int, num_classes: int, **options: Any) -> Any:
    """The backend-neutral twin of `make_dataset`: a `keras.utils.PyDataset` over a split.

    Yields the same kind of (images, labels) batches as `make_dataset`, as NumPy arrays: raw
    float32 pixels 0..255 and one-hot float32 labels, `augment` applied per batch, epoch e in
    the order `epoch_order(n, seed, e)` (selected by `set_epoch`); `options` are make_dataset's
    keywords (shuffle, seed, augment). It needs no TensorFlow, so it feeds `fit` under
    KERAS_BACKEND=jax or torch. Its order is not the one tf.data draws for the same seed.
    """
    return _array_dataset_class()(split, batch_size, num_classes, **options)
