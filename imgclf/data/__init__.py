"""Data: sources (digits, mnist5k, fashion_mnist, folder, keras:*), a stratified seeded split (or
the source's own test set), and batch pipelines: tf.data (`make_dataset`) or backend-neutral
(`make_pydataset`).

Every source becomes one in-memory pool of uint8 images [N, H, W, C]; folder files are decoded
once at the configured size, by `images.load_image`, and unreadable ones are skipped and
reported; built-in sets keep their own size until the split, and only the images a run uses are
resized (`conform`). `data.classes` keeps some classes of a source (in the listed order,
re-labelled 0..K-1) without decoding or resizing any image of the others. The pool is split per
class (stratified) with the config's seed, so the same seed always gives the same split;
`data.max_per_class` then thins the training split only, so validation and test are the same
with and without it.

Modules: `pool` (Pool, Split, Splits, conform), `builtin` (digits, mnist5k, fashion_mnist,
keras:*), `folder` (a folder per class), `split` (load_pool, the split, load_data) and `pipeline`
(tf.data and PyDataset batches). Import from `imgclf.data`.
"""

from imgclf.data.builtin import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    FASHION_MNIST_FILES,
    fashion_mnist_dirs,
    read_idx,
)
from imgclf.data.pipeline import make_dataset, make_pydataset
from imgclf.data.pool import Pool, Split, Splits, conform
from imgclf.data.split import (
    cap_per_class,
    load_data,
    load_pool,
    split_indices,
    splits_from_arrays,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_FILES",
    "Pool",
    "Split",
    "Splits",
    "cap_per_class",
    "conform",
    "fashion_mnist_dirs",
    "load_data",
    "load_pool",
    "make_dataset",
    "make_pydataset",
    "read_idx",
    "split_indices",
    "splits_from_arrays",
]
