"""From a source to the splits: `load_pool` by `data.source`, the stratified seeded split (or
the source's own test set, `data.split`), the training cap `data.max_per_class`, and the data
report written to the run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.data import builtin, duplicates, suspects
from imgclf.data.folder import load_csv, load_folder
from imgclf.data.pool import TEST, TRAIN, UNASSIGNED, VAL, Pool, Split, Splits, conform
from imgclf.data.pool import take as _take
from imgclf.data.store import FileStore
from imgclf.infra.errors import DataError

if TYPE_CHECKING:
    from imgclf.schema import Config, DataConfig


def load_pool(cfg: DataConfig) -> Pool:
    """All usable images of `cfg.source` at `cfg.image_size` and `cfg.channels`."""
    if cfg.source == "digits":
        return builtin.digits(cfg)
    if cfg.source == "mnist5k":
        return builtin.mnist5k(cfg)
    if cfg.source == "folder":
        return load_folder(cfg)
    if cfg.source == "csv":
        return load_csv(cfg)
    if cfg.source == "fashion_mnist":
        return builtin.fashion_mnist(cfg)
    if cfg.source.startswith("keras:"):
        return builtin.keras_dataset(cfg)
    raise DataError(f"data.source: unknown source {cfg.source!r}")


def _split_keeping_copies(pool: Pool, config: Config) -> tuple[list[np.ndarray], dict, tuple]:
    """Find the exact duplicates, apply `data.duplicates` and `data.conflicting_labels`, and
    split with each group kept in one part: (groups, the report's `duplicates` section, `_split`'s
    (train, val, test, how))."""
    cfg = config.data
    groups = duplicates.exact_groups(pool)
    found = duplicates.resolve(pool, groups, cfg.duplicates, cfg.conflicting_labels)
    ids = duplicates.group_ids(len(pool.labels), groups)
    ids[found.pop("left_out")] = -1  # known before the split: they must not take a place in it
    if found["conflicting_groups"] and len(np.unique(pool.labels[ids >= 0])) < 2:
        raise DataError(
            f"{found['conflicting_groups']} image(s) are filed under two or more classes and "
            "left out (data.conflicting_labels=drop), and fewer than 2 classes keep an image: "
            "if a photo may have several labels, set task=multilabel (docs/multilabel.md); "
            "else file each image under one class"
        )
    split = _split(pool, cfg, config.seed, ids)
    if split[3] == "predefined" and pool.assigned is not None:
        # Copies the source's own split put in two parts (before any is left out).
        own = pool.assigned
        parts = {"train": np.flatnonzero((own == TRAIN) | (own == UNASSIGNED))}
        parts.update(val=np.flatnonzero(own == VAL), test=np.flatnonzero(own == TEST))
        found["leaked_across_splits"] = duplicates.leaked(groups, parts)
    return groups, found, split


def split_indices(
    labels: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded split: each class is cut in the same proportions.

    Returns sorted index arrays (train, val, test), disjoint and covering every index. Every class
    keeps at least one training image; a class too small for val/test contributes to train only.
    `groups` (int64 [N], `duplicates.group_ids`): images with the same id land in the same part
    (the group is split as one image, by its first member's label, as scikit-learn's
    StratifiedGroupKFold keeps groups whole), and images with id -1 (left out: a copy, or a
    conflicting label) in none; without duplicates the split is the same as without `groups`.
    """
    if groups is not None:
        # One image per group (its first position) is split; the rest follow it. Images whose
        # group is -1 (left out before the split) are in no part.
        kept = np.flatnonzero(groups >= 0)
        _, firsts, group_of = np.unique(groups[kept], return_index=True, return_inverse=True)
        order = np.argsort(firsts, kind="stable")  # groups in order of appearance
        split = split_indices(labels[kept][firsts[order]], val_fraction, test_fraction, seed)
        part_of = np.empty(len(firsts), dtype=np.int8)
        for code, chosen in enumerate(split):
            part_of[order[chosen]] = code
        where = np.full(len(groups), -1, dtype=np.int8)
        where[kept] = part_of[group_of.reshape(-1)]
        train, val, test = (np.flatnonzero(where == code).astype(np.int64) for code in range(3))
        return train, val, test
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


def _own_split(
    pool: Pool, cfg: DataConfig, seed: int, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The source's own split; a part it lacks (val, or test) comes from its training part,
    stratified: `val_fraction` for val, `test_fraction` for test. Unassigned images train."""
    assigned = pool.assigned
    rest = np.flatnonzero((assigned == TRAIN) | (assigned == UNASSIGNED))
    val, test = np.flatnonzero(assigned == VAL), np.flatnonzero(assigned == TEST)
    val_fraction = cfg.val_fraction if len(val) == 0 else 0.0
    test_fraction = cfg.test_fraction if len(test) == 0 else 0.0
    train, carved_val, carved_test = split_indices(
        pool.labels[rest], val_fraction, test_fraction, seed, groups[rest]
    )
    val = np.sort(np.concatenate([val, rest[carved_val]]))
    test = np.sort(np.concatenate([test, rest[carved_test]]))
    return rest[train], val, test


def _split(
    pool: Pool, cfg: DataConfig, seed: int, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(train, val, test indices, how): the source's own split when `data.split` asks for it
    (how = "predefined"), else a stratified split of the whole pool (how = "stratified").
    `groups`: `duplicates.group_ids`, the images that must land in one part."""
    own = cfg.split == "predefined" or (cfg.split == "auto" and pool.assigned is not None)
    if not own:
        vf, tf = cfg.val_fraction, cfg.test_fraction
        return (*split_indices(pool.labels, vf, tf, seed, groups), "stratified")
    if pool.assigned is None:
        raise DataError(
            f"data.split=predefined: this {cfg.source} source has no split of its own (a folder "
            "needs train/, val/ and test/ sub-folders; a CSV a `split` column); use "
            "data.split=stratified"
        )
    return (*_own_split(pool, cfg, seed, groups), "predefined")


def minimum_per_class(val_fraction: float, test_fraction: float) -> int:
    """The fewest images a class needs to keep at least one in train, val and test under the
    stratified split's rounding (`split_indices`)."""
    n = 3
    while round(n * test_fraction) < 1 or round(n * val_fraction) < 1:
        n += 1
    return n


def _check_every_class_tested(
    pool: Pool,
    cfg: DataConfig,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    own_parts: frozenset[str] = frozenset(),
) -> None:
    """A class with no validation or test image would be reported as 0.000 precision and
    recall, read as "never recognised" when it was never tested: refuse it before training,
    unless `data.allow_untested_classes` (the metrics then say "not tested"). A class with no
    training image is refused whatever that switch says: there is nothing to learn it from (its
    test scores read 1.000 when nothing predicted it). `own_parts`: the parts ("training",
    "validation", "test") that are the source's own (train/, val/, test/ folders, a CSV's split
    column): the message names the part that lacks the class instead of calling it too small."""
    present = [set(pool.labels[idx].tolist()) for idx in (train, val, test)]
    parts = ("training", "validation", "test")
    for part, found in zip(parts, present, strict=True):
        missing = [c for c in range(len(pool.class_names)) if c not in found]
        if not missing or (part != "training" and cfg.allow_untested_classes):
            continue
        named = ", ".join(repr(pool.class_names[c]) for c in missing[:5])
        if part in own_parts or part == "training":
            switch = (
                ""
                if part == "training"
                else (
                    ", or set data.allow_untested_classes=true to train anyway (its metrics then "
                    "say 'not tested')"
                )
            )
            raise DataError(
                f"class(es) {named} have no {part} image{_where(part, own_parts)}"
                f"{_left_out(pool, missing)}: add {part} images of it, or leave it out with "
                f"data.classes{switch}"
            )
        _too_small(pool, cfg, missing)


def _left_out(pool: Pool, classes: list[int]) -> str:
    """How many images of `classes` were left out before the split (unreadable, exact copies,
    conflicting labels), so the message says where a class's images went."""
    if pool.failed is None:
        return ""
    n = int(np.isin(pool.labels[pool.failed], classes).sum())
    if not n:
        return ""
    return (
        f" ({n} of its images were left out: unreadable, exact copies or conflicting labels; "
        "the data report's skipped files say which, and data.conflicting_labels=keep keeps "
        "images filed under two classes)"
    )


def _where(part: str, own_parts: frozenset[str]) -> str:
    if part not in own_parts:
        return " after the split"
    folder, value = {"training": ("train", "train"), "validation": ("val", "val"),
                     "test": ("test", "test")}[part]  # fmt: skip
    return f" in the source's own split (its {folder}/ folder, or CSV rows with split {value})"


def similar_names(names: list[str]) -> list[list[str]]:
    """Groups of class names equal but for upper/lower case (`str.casefold`), e.g. `Cat` and
    `cat`: probably one class filed under two names. (Names are already NFC, `class_name`.)"""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.casefold(), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def _own_parts(pool: Pool, how: str) -> frozenset[str]:
    """The parts that came from the source's own split (a part it lacks was carved out)."""
    if how != "predefined" or pool.assigned is None:
        return frozenset()
    codes = {"training": TRAIN, "validation": VAL, "test": TEST}
    return frozenset(part for part, code in codes.items() if (pool.assigned == code).any())


def _too_small(pool: Pool, cfg: DataConfig, short: list[int]) -> None:
    counts = np.bincount(
        pool.labels[_readable(pool, np.arange(len(pool.labels)))], minlength=len(pool.class_names)
    )
    named = ", ".join(f"{pool.class_names[c]!r} ({counts[c]} images)" for c in short[:5])
    need = minimum_per_class(cfg.val_fraction, cfg.test_fraction)
    raise DataError(
        f"class(es) {named} too small to appear in the training, validation and test splits; "
        f"each class needs at least {need} images with data.val_fraction={cfg.val_fraction} "
        f"and data.test_fraction={cfg.test_fraction}: add images, or set "
        "data.allow_untested_classes=true to train anyway (its metrics then say 'not tested')"
    )


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


def _readable(pool: Pool, idx: np.ndarray) -> np.ndarray:
    """`idx` without the files already known not to decode."""
    return idx if pool.failed is None else idx[~pool.failed[idx]]


def _counts(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(n) for name, n in zip(class_names, counts, strict=True)}


def _check_not_empty(pool: Pool, val_idx: np.ndarray, test_idx: np.ndarray) -> None:
    """Raise DataError when the validation or the test split has no image."""
    for name, idx, frac in (("val", val_idx, "val_fraction"), ("test", test_idx, "test_fraction")):
        if len(idx) == 0:
            usable = len(pool.labels) - (int(pool.failed.sum()) if pool.failed is not None else 0)
            raise DataError(
                f"data: the {name} split is empty ({usable} usable images); add images "
                f"or raise data.{frac}"
            )


def _cache_report(store: FileStore) -> dict[str, Any]:
    """The report's `cache` entry: how the pixels were read (built now, or a re-used disk cache)."""
    reused = store.mode == "disk" and not store.built
    return {
        "mode": store.mode,
        "reused": reused,
        "bytes": store.nbytes if store.mode != "none" else 0,
        "seconds": round(store.seconds, 2),  # to decode the set (or open the cache)
        **({"file": str(store.path)} if store.path is not None else {}),
        **({"note": store.note} if store.note else {}),
    }


def load_data(config: Config) -> Splits:
    """Load `config.data` and split it (see `_load_single`); `task: multilabel` loads multi-hot
    targets and splits by iterative stratification (`imgclf.data.multilabel`)."""
    if config.task == "multilabel":
        from imgclf.data.multilabel import load_multilabel

        return load_multilabel(config)
    return _load_single(config)


def _load_single(config: Config) -> Splits:
    """Load `config.data`, split it with `config.seed`, and build the data report.

    The split is computed on every listed image of the kept classes; `data.max_per_class` then
    keeps at most that many training images per class (seeded by `config.seed`), so validation
    and test are identical with and without the cap; files that do not decode leave their split
    last (so every `data.cache` mode gives the same splits).

    Raises:
        DataError: the source cannot be read (a missing folder or dataset file), has fewer than
            2 classes, a class without a readable image, or too few images for a val/test split.
    """
    cfg = config.data
    pool = load_pool(cfg)
    if len(pool.class_names) < 2:
        raise DataError(f"data: found {len(pool.class_names)} class(es); need at least 2")
    groups, found, (train_idx, val_idx, test_idx, how) = _split_keeping_copies(pool, config)
    train_before_cap = _counts(pool.labels[_readable(pool, train_idx)], pool.class_names)
    if cfg.max_per_class is not None:
        train_idx = cap_per_class(pool.labels, train_idx, cfg.max_per_class, config.seed)
    # Files known not to decode leave their split only now, so the split and the cap are the
    # same whether the decoded cache found them up front or reading finds them later.
    train_idx, val_idx, test_idx = (_readable(pool, i) for i in (train_idx, val_idx, test_idx))
    _check_not_empty(pool, val_idx, test_idx)
    _check_every_class_tested(pool, cfg, train_idx, val_idx, test_idx, _own_parts(pool, how))
    near, per_image = suspects.training_findings(pool, config, groups, train_idx, test_idx)
    splits = {"train": _take(pool, train_idx, cfg), "val": _take(pool, val_idx, cfg)}
    splits["test"] = _take(pool, test_idx, cfg)
    report: dict[str, Any] = {
        "source": cfg.source,
        "path": cfg.path,  # as the user gave it (relative paths stay relative)
        "image_size": list(cfg.image_size),
        "channels": cfg.channels,
        "classes": pool.class_names,
        "seed": config.seed,
        "split": how,
        "totals": {name: len(split) for name, split in splits.items()},
        "counts": {name: _counts(split.y, pool.class_names) for name, split in splits.items()},
        "skipped": pool.skipped,
        "ignored": pool.ignored,
        **per_image,
    }
    if pool.store is not None:
        report["cache"] = _cache_report(pool.store)
    if groups:
        leaked = duplicates.leaked_test_files(pool, groups, train_idx, test_idx)
        report["duplicates"] = {**found, **({"leaked_test_files": leaked} if leaked else {})}
    if near is not None:
        report["near_duplicates"] = near
    similar = similar_names(pool.class_names)
    if similar:
        report["similar_class_names"] = similar
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
