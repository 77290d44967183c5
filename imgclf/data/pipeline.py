"""Batch pipelines over decoded splits: tf.data (`make_dataset`) on TensorFlow, or a
backend-neutral `keras.utils.PyDataset` (`make_pydataset`) for JAX and torch."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.data.pool import Split
from imgclf.data.store import ImageView

if TYPE_CHECKING:
    import tensorflow as tf


def make_dataset(
    split: Split,
    batch_size: int,
    num_classes: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    augment: Any = None,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """A tf.data pipeline over a split: [shuffle], batch, read, [augment], prefetch.

    Yields (images, labels): raw float32 pixels 0..255 (the model preprocesses) and one-hot
    float32 labels (MixUp/CutMix blend them; label smoothing and MSE need them). `augment` is a
    callable on batches `(images, labels) -> (images, labels)`, applied after batching because
    Keras' random layers are vectorised over a batch. In-memory splits are sliced (and cached)
    by tf.data; streamed splits (`Split.streamed`) shuffle their positions and read each batch's
    pixels in parallel (decoded, or from the disk cache), so memory does not grow with the set;
    an image that fails to decode is left out of its batch and reported by the store.
    `shard` = (count, index) keeps every count-th image from index (a worker's own share).
    """
    import tensorflow as tf

    if split.streamed:
        ds = _streamed(split, batch_size, num_classes, shuffle, seed, shard)
    else:
        ds = tf.data.Dataset.from_tensor_slices((split.x, split.y))
        ds = (ds.shard(*shard) if shard else ds).cache()
        if shuffle:
            ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        ds = ds.map(
            lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes, dtype=tf.float32)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if augment is not None:
        # Sequential on purpose: the random layers advance a seed state, and parallel calls
        # would consume it in a racy order, making runs with the same seed differ.
        ds = ds.map(augment)
    return ds.prefetch(tf.data.AUTOTUNE)


def _streamed(
    split: Split, batch_size: int, num_classes: int, shuffle: bool, seed: int, shard: Any
):
    """Positions -> [shuffle] -> batch -> read pixels (parallel, in order) -> float32 + one-hot."""
    import tensorflow as tf

    view, labels = split.x, np.asarray(split.y, dtype=np.int64)
    eye = np.eye(num_classes, dtype=np.float32)
    height, width, channels = view.shape[1:]

    def read(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images, ok = view.read(positions)
        if not ok.any():  # every file of the batch failed: one readable image stands in, so no
            # batch is empty (the number of batches stays known, and no loss is a 0/0)
            for other in range(len(labels)):
                images, ok = view.read(np.array([other]))
                if ok.any():
                    positions = np.array([other])
                    break
        return images.astype(np.float32), eye[labels[positions[ok]]]

    def load(positions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(read, [positions], (tf.float32, tf.float32), stateful=False)
        x.set_shape([None, height, width, channels])
        y.set_shape([None, num_classes])
        return x, y

    ds = tf.data.Dataset.from_tensor_slices(np.arange(len(split), dtype=np.int64))
    if shard:  # before reading anything: a worker decodes only its own files
        ds = ds.shard(*shard)
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# --------------------------------------------------------------------------------------------
# Backend-neutral pipeline (keras.utils.PyDataset)


@functools.cache
def _array_dataset_class() -> type:
    """The PyDataset subclass, defined on first use so importing this module imports no Keras."""
    import keras

    class ArrayDataset(keras.utils.PyDataset):
        """Batches of a decoded split as NumPy arrays, for any Keras backend (no tf.data)."""

        def __init__(self, split: Split, batch_size: int, num_classes: int, **options: Any):
            # make_dataset's keywords: shuffle (False), seed (0), augment (None).
            unknown = set(options) - {"shuffle", "seed", "augment"}
            if unknown:
                raise TypeError(f"unknown option(s) {sorted(unknown)}; use shuffle, seed, augment")
            shuffle, augment = bool(options.get("shuffle", False)), options.get("augment")
            seed = int(options.get("seed", 0))
            # One worker, no multiprocessing: batches are made in order in the training loop, so
            # the augmentation layers' seed state advances in the same order on every run.
            super().__init__(workers=1, use_multiprocessing=False)
            if batch_size < 1:
                raise ValueError(f"batch_size must be >= 1, got {batch_size}")
            self.x, self.y = split.x, np.asarray(split.y, dtype=np.int64)
            self.batch_size = int(batch_size)
            self.num_classes = int(num_classes)
            self.shuffle = shuffle
            self.augment = augment
            self._eye = np.eye(self.num_classes, dtype=np.float32)
            self._rng = np.random.default_rng(seed)
            self.order = self._new_order()

        def _new_order(self) -> np.ndarray:
            n = len(self.y)
            return self._rng.permutation(n) if self.shuffle else np.arange(n)

        def __len__(self) -> int:
            return -(-len(self.y) // self.batch_size)  # the last batch may be smaller

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            if not 0 <= index < len(self):
                raise IndexError(f"batch {index} out of range 0..{len(self) - 1}")
            idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            if isinstance(self.x, ImageView):  # streamed: unreadable files are left out
                pixels, ok = self.x.read(idx)
                images, labels = pixels.astype(np.float32), self._eye[self.y[idx[ok]]]
            else:
                images = self.x[idx].astype(np.float32)
                labels = self._eye[self.y[idx]]
            if self.augment is not None:
                images, labels = self.augment(images, labels)
                # The layers run on the active backend (jax/torch/tf arrays): back to NumPy.
                images = np.asarray(keras.ops.convert_to_numpy(images), dtype=np.float32)
                labels = np.asarray(keras.ops.convert_to_numpy(labels), dtype=np.float32)
            return images, labels

        def on_epoch_end(self) -> None:
            # A new seeded order for the next epoch: same seed, same sequence of epochs.
            if self.shuffle:
                self.order = self._new_order()

    return ArrayDataset


def make_pydataset(split: Split, batch_size: int, num_classes: int, **options: Any) -> Any:
    """The backend-neutral twin of `make_dataset`: a `keras.utils.PyDataset` over a decoded split.

    Yields the same (images, labels) batches as `make_dataset`, as NumPy arrays: raw float32
    pixels 0..255 and one-hot float32 labels, `augment` applied per batch, the order reshuffled
    every epoch (`on_epoch_end`) by a NumPy generator seeded with `seed`; `options` are
    make_dataset's keywords (shuffle, seed, augment). It needs no TensorFlow,
    so it feeds `fit` under KERAS_BACKEND=jax or torch. The shuffled order is not the one tf.data
    draws for the same seed.
    """
    return _array_dataset_class()(split, batch_size, num_classes, **options)
