"""Exact duplicates in a dataset, found before the split: the same image twice (an album exported
twice, a folder copied into another class) must never sit in training and test at once, where
it makes the test accuracy read what the model memorised.

Method: for file sources, the files are grouped by size and only files that share a size are
read and hashed (SHA-256 of the bytes, `hashlib`), so a dataset without copies costs one `stat`
per file; for in-memory sources (the built-in datasets), SHA-256 of each image's pixels.
Byte-identical copies only: a copy re-encoded, resized or cropped is a near duplicate and is not
found here.

What becomes of a group (`data.duplicates`): `drop` (the default) trains on the first file of
the group (in the listing's order) and lists the others as skipped, `keep` trains on every copy;
either way the split keeps the whole group in one part (`split.split_indices` on one
representative per group). A group filed under two or more classes is a conflict: by default
none of its images trains (`data.conflicting_labels: drop`), since which label is right is the
user's call; `keep` trains each copy under its own label (the group still in one part).
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from imgclf.data.pool import Pool

METHOD = "SHA-256 of the file bytes (only files of equal size are read), or of the pixels"
SHOWN = 20  # groups listed in data_report.json (the count covers all)


def exact_groups(pool: Pool) -> list[np.ndarray]:
    """Groups (int64 arrays of pool indices, sorted, 2 or more each, in order of their first
    index) of images that are byte for byte the same file, or the same pixels for an
    in-memory source. Files that cannot be read are left out of every group."""
    if pool.images is not None:
        keys: list[Any] = [
            hashlib.sha256(np.ascontiguousarray(x).data).digest() for x in pool.images
        ]
        return _grouped(keys)
    root = Path(pool.store.root) if pool.store is not None else Path()
    files = pool.files or []
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, file in enumerate(files):
        try:
            by_size[os.stat(root / file).st_size].append(i)
        except OSError:
            continue  # the store lists it as skipped with its reason
    keys = [None] * len(files)
    for members in by_size.values():
        if len(members) < 2:
            continue
        for i in members:
            try:
                keys[i] = hashlib.sha256((root / files[i]).read_bytes()).digest()
            except OSError:
                continue
    return _grouped(keys)


def _grouped(keys: list[Any]) -> list[np.ndarray]:
    found: dict[Any, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if key is not None:
            found[key].append(i)
    groups = [np.array(m, dtype=np.int64) for m in found.values() if len(m) > 1]
    return sorted(groups, key=lambda g: int(g[0]))


def group_ids(n: int, groups: list[np.ndarray]) -> np.ndarray:
    """int64 [n]: for each pool index the first index of its group (itself when alone), the
    key `split.split_indices` keeps together."""
    ids = np.arange(n, dtype=np.int64)
    for group in groups:
        ids[group] = group[0]
    return ids


def resolve(pool: Pool, groups: list[np.ndarray], duplicates: str, conflicts: str) -> dict:
    """Apply `data.duplicates` and `data.conflicting_labels` to `pool` (the images left out are
    marked in `pool.failed` and listed in `pool.skipped` with the reason, as unreadable files
    are) and return the report's `duplicates` section, with `left_out` (int64 pool indices of
    the images left out) for the caller to pop before the report is written."""
    if pool.failed is None:
        pool.failed = np.zeros(len(pool.labels), dtype=bool)
    name = (lambda i: pool.files[i]) if pool.files is not None else (lambda i: f"image {i}")
    conflicting, copies, shown, left_out = 0, 0, [], []
    for group in groups:
        classes = sorted({pool.class_names[c] for c in pool.labels[group]})
        if len(classes) > 1:
            conflicting += 1
            if conflicts == "drop":
                _leave_out(pool, group, name, f"the same image is filed under {', '.join(classes)}")
                left_out += group.tolist()
        elif duplicates == "drop":
            copies += len(group) - 1
            _leave_out(pool, group[1:], name, f"an exact copy of {name(int(group[0]))}")
            left_out += group[1:].tolist()
        if len(shown) < SHOWN:
            shown.append({"files": [name(int(i)) for i in group], "classes": classes})
    return {
        "method": METHOD,
        "groups": len(groups),
        "images": int(sum(len(g) for g in groups)),
        "copies_left_out": copies,
        "conflicting_groups": conflicting,
        "policy": {"duplicates": duplicates, "conflicting_labels": conflicts},
        "examples": shown,
        "left_out": np.array(left_out, dtype=np.int64),  # popped by the caller (not JSON)
    }


def _leave_out(pool: Pool, indices: np.ndarray, name: Any, reason: str) -> None:
    for i in indices:
        if not pool.failed[i]:
            pool.failed[i] = True
            pool.skipped.append({"file": name(int(i)), "reason": reason})


def describe(found: dict[str, Any] | None, prefix: str) -> str:
    """What the exact-duplicate check found (data_report.json `duplicates`), as lines each
    starting with `prefix`; "" when it found nothing (the model card and the run's start-up
    lines)."""
    if not found:
        return ""
    text = (
        f"{prefix}Exact duplicates: {found['groups']} group(s) of identical images "
        f"({found['images']} files), each kept in one split; {found['copies_left_out']} "
        "extra copies left out (data.duplicates)"
    )
    if found["conflicting_groups"]:
        fate = "left out" if found["policy"]["conflicting_labels"] == "drop" else "kept"
        text += (
            f"{prefix}Conflicting labels: {found['conflicting_groups']} of those image(s) filed "
            f"under two or more classes, every copy {fate} (data.conflicting_labels; photos "
            "with several labels: task=multilabel)"
        )
    if found.get("leaked_across_splits"):
        text += (
            f"{prefix}Leakage in the source's own split: {found['leaked_across_splits']} "
            "group(s) of identical images were in two of train/, val/, test/"
        )
    return text


def leaked(groups: list[np.ndarray], parts: dict[str, np.ndarray]) -> int:
    """How many groups have members in more than one of `parts` (name -> pool indices): with
    the source's own split (train/ val/ test/ folders) that is leakage the data came with."""
    where = {}
    for part, idx in parts.items():
        for i in idx.tolist():
            where[i] = part
    return sum(len({where.get(int(i)) for i in g} - {None}) > 1 for g in groups)


def leaked_test_files(
    pool: Pool, groups: list[np.ndarray], train: np.ndarray, test: np.ndarray
) -> list[str]:
    """The test files that have an identical copy among the training images (pool indices
    `train`, `test`, after the split): only a source's own split can leave such pairs (the
    group-aware split keeps a group in one part), and only with `data.duplicates: keep` or
    `data.conflicting_labels: keep` (drop leaves the extra copies out). The run's test
    accuracy is recomputed without them (metrics.json `test_without_leaked`)."""
    if pool.files is None:
        return []
    in_train, in_test = set(train.tolist()), set(test.tolist())
    return [
        pool.files[int(i)]
        for g in groups
        if in_train.intersection(g.tolist())
        for i in g
        if int(i) in in_test
    ]
