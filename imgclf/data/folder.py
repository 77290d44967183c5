"""File datasets: a folder with one sub-folder per class (or `train/`, `val/` (`valid/`) and
`test/` folders, each with one sub-folder per class), and a CSV list of `path,label[,split]`.

Listing is cheap: no pixel is decoded until the store opens (`data.cache`: memory and disk decode
every file once, then; none decodes at every read). Files that cannot be decoded are skipped and
reported with their reason; files that are not images are listed as ignored.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgclf.data.one_hot import one_hot_rows
from imgclf.data.pool import TEST, TRAIN, UNASSIGNED, VAL, Pool, class_name, kept_classes
from imgclf.data.roots import OUTSIDE, ROOTS_ENV, inside, named_roots
from imgclf.data.store import FileStore
from imgclf.formats import SYSTEM_FOLDERS, is_image_name, walk
from imgclf.images import check_header, file_problem
from imgclf.infra.errors import DataError

if TYPE_CHECKING:
    from imgclf.schema import DataConfig

SPLIT_FOLDERS = {"train": TRAIN, "val": VAL, "valid": VAL, "validation": VAL, "test": TEST}
SPLIT_VALUES = {"train": TRAIN, "val": VAL, "valid": VAL, "validation": VAL, "test": TEST, "": -1}
CSV_COLUMNS = ("path", "label", "split")

# (relative file, class name, split) of one listed image
Entry = tuple[str, str, int]


def check_root(path: str | Path | None) -> Path:
    """The dataset folder `data.path` as a Path; DataError when it is not a folder."""
    root = Path(path or "")
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise DataError(
            f"data.path: {root} {what}; expected a folder with one sub-folder of images per class"
        )
    real = os.path.realpath(root)
    system = any(real == s or real.startswith(s + "/") for s in SYSTEM_FOLDERS)
    if real == os.path.realpath(root.anchor or "/") or system:
        raise DataError(  # a walk of the whole disk (or of /proc) never ends in a dataset
            f"data.path: {root} is the root of the file system or a system folder; point at "
            "the dataset's folder (one sub-folder of images per class)"
        )
    return root


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


# Folders an archive tool adds (macOS zip resource forks): never a class.
NOT_CLASSES = {"__MACOSX"}


def _listed(folder: Path) -> list[Path]:
    """The entries of a folder the layout depends on (the root, a train/val/test folder),
    sorted by name; DataError when it cannot be read (guessing the layout without it would
    train on the wrong classes)."""
    try:
        return sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise DataError(
            f"data.path: {folder} cannot be read ({exc.strerror or exc}); fix its permissions"
        ) from None


def _subfolders(folder: Path) -> list[Path]:
    return [
        d
        for d in _listed(folder)
        if d.is_dir() and not d.name.startswith(".") and d.name not in NOT_CLASSES
    ]


def _list_class(root: Path, class_dir: Path, split: int, ignored: list[dict[str, str]]):
    unread: list[tuple[Path, str]] = []
    for path in sorted(walk(class_dir, unread)):  # follows symlinked folders, once each
        rel = path.relative_to(root)
        if _is_hidden(rel):
            continue
        problem = file_problem(path)  # a FIFO, a device, a symlink loop: listed, never opened
        if problem is not None:
            ignored.append({"file": rel.as_posix(), "reason": problem})
            continue
        if is_image_name(path):
            yield (rel.as_posix(), class_name(class_dir.name), split)
        else:
            ignored.append({"file": rel.as_posix(), "reason": "not an image file extension"})
    for folder, reason in unread:  # named, so a class is never silently missing files
        rel = folder.relative_to(root).as_posix()
        if folder == class_dir:  # the whole class: training it without its images is wrong
            fix = "" if "system folder" in reason else "; fix its permissions"
            raise DataError(f"data.path: class {rel}/: {reason}{fix}")
        ignored.append({"file": rel + "/", "reason": reason})


def list_folder(root: Path) -> tuple[list[Entry], list[str], list[dict[str, str]], bool]:
    """(entries, class names, ignored, pre-split): every image file under the class folders,
    the class folders' names (sorted), and whether the folder is laid out as train/val/test
    folders. Nothing is opened."""
    tops = _subfolders(root)
    ignored = [
        {"file": f.name, "reason": "not inside a class sub-folder"}
        for f in _listed(root)
        if f.is_file() and not f.name.startswith(".")
    ]
    names = {d.name.lower() for d in tops}
    pre_split = bool(tops) and names <= set(SPLIT_FOLDERS) and "train" in names
    others = sorted(d.name for d in tops if d.name.lower() not in SPLIT_FOLDERS)
    if "train" in names and others:
        # train/ beside class-like folders: neither layout is safe to guess (training "train"
        # against "test" as classes would be silently wrong).
        beside = ", ".join(others[:5])
        raise DataError(
            f"data.path: {root} has a train/ folder beside other folders ({beside}); use "
            "either train/, val/ and test/ folders each with one sub-folder per class, or one "
            "sub-folder per class and no train/ folder"
        )
    entries: list[Entry] = []
    classes: set[str] = set()
    for top in tops:
        if pre_split:
            ignored += [
                {"file": f.relative_to(root).as_posix(), "reason": "not inside a class sub-folder"}
                for f in _listed(top)
                if f.is_file() and not f.name.startswith(".")
            ]
            for class_dir in _subfolders(top):
                classes.add(class_name(class_dir.name))
                entries += _list_class(root, class_dir, SPLIT_FOLDERS[top.name.lower()], ignored)
        else:
            classes.add(class_name(top.name))
            entries += _list_class(root, top, UNASSIGNED, ignored)
    return entries, sorted(classes), ignored, pre_split


def read_csv_text(path: Path) -> str:
    """The text of the CSV list `path`. Raises DataError when it is missing or not UTF-8."""
    if not path.is_file():
        raise DataError(f"data.path: {path} not found; expected a CSV file of path,label rows")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"data.path: {path} is not a readable UTF-8 CSV file ({exc})") from None


def list_csv(path: Path) -> tuple[list[Entry], list[dict[str, str]], bool, Path]:
    """(entries, skipped rows, has a split column, the folder paths are relative to) of a CSV
    with a header naming `path`, `label` and optionally `split` (train, val/valid or test), or
    `path`, one column per label and optionally `split` (`one_hot.one_hot_rows`). Raises
    DataError for a missing file, a missing or unknown column, or no usable row."""
    text = read_csv_text(path)
    text = one_hot_rows(text) or text  # one column per label: rows of label sets
    # newline="": quoted fields may hold line breaks; line_num counts physical lines.
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    missing = [c for c in CSV_COLUMNS[:2] if c not in columns]
    if unknown or missing:
        what = f"unknown column {unknown[0]!r}" if unknown else f"no column {missing[0]!r}"
        raise DataError(
            f"{path}: {what}; the header must name path, label and optionally split "
            "(e.g. `path,label,split`)"
        )
    root, entries, skipped = path.parent, [], []
    seen: dict[str, tuple[int, str]] = {}  # normalised path -> (line, label)
    for raw in reader:
        line = reader.line_num
        extra = raw.pop(None, None)  # fields beyond the header's columns
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        file, label, split = row.get("path", ""), row.get("label", ""), row.get("split", "")
        label = class_name(label)
        posix = file.replace("\\", "/")  # a list made on Windows: images\x.png
        if posix != file and not (root / file).is_file() and (root / posix).is_file():
            file = posix
        key = os.path.normpath(file) if file else ""
        reason = None
        if extra is not None:
            reason = f"{len(extra)} field(s) more than the header; quote a path holding a comma"
        elif not file:
            reason = "empty path"
        elif not label:
            reason = "empty label"
        elif split.lower() not in SPLIT_VALUES:
            reason = f"split {split!r} is not train, val or test"
        elif not (root / file).is_file():
            reason = "file not found"
        elif key in seen and seen[key][1] != label:
            raise DataError(
                f"{path}: line {line} labels {file} {label!r}, line {seen[key][0]} labels it "
                f"{seen[key][1]!r}; an image has one label: fix one of the two rows"
            )
        elif key in seen:
            reason = f"duplicate of line {seen[key][0]}"
        if reason:
            skipped.append({"file": f"{path.name} line {line}: {file}", "reason": reason})
        else:
            seen[key] = (line, label)
            entries.append((file, label, SPLIT_VALUES[split.lower()]))
    return entries, skipped, "split" in columns, root


def confined(
    source: Path, entries: list[Entry], left_out: list[dict[str, str]], root: Path | None = None
) -> list[Entry]:
    """`entries` whose files lie in the folders IMGCLF_DATA_ROOTS allows (links resolved); the
    others go to `left_out` with the reason. Everything when the variable is unset. `root`:
    the folder the entries' paths are relative to (default `source`). Raises DataError when
    `source` itself is outside (nothing of it may be read)."""
    roots = named_roots()
    if roots is None:
        return entries
    if not inside(source, roots):
        raise DataError(
            f"data.path: {source} is {OUTSIDE} ({', '.join(map(str, roots))}); move the data "
            f"into one of them, or add its folder to {ROOTS_ENV}"
        )
    base = source if root is None else root
    kept = [e for e in entries if inside(base / e[0], roots)]
    if len(kept) < len(entries):
        names = {e[0] for e in kept}
        left_out += [{"file": e[0], "reason": OUTSIDE} for e in entries if e[0] not in names]
    return kept


def _open_store(
    root: Path, entries: list[Entry], cfg: DataConfig
) -> tuple[FileStore, list[dict[str, str]]]:
    """The store of `entries`, opened; (store, skipped: the files found unreadable so far)."""
    files = [file for file, _, _ in entries]
    store = FileStore(root, files, tuple(cfg.image_size), cfg.channels, cfg.cache)
    if store.mode == "none":  # no decode pass: check each header now, the pixels when read
        for i, file in enumerate(files):
            reason = check_header(root / file)
            if reason is not None:
                store.failures[i] = reason
    store.open()
    skipped = [{"file": files[i], "reason": reason} for i, reason in sorted(store.failures.items())]
    return store, skipped


def _pool(
    cfg: DataConfig, root: Path, entries: list[Entry], found: list[str], where: str, own: bool
) -> Pool:
    """A pool of file entries of the classes `found`: keep `data.classes`, open the store, and
    mark the files that do not decode (`Pool.failed`). `own`: the entries carry the source's
    own split."""
    kept = kept_classes(cfg, found, where)
    class_names = [found[i] for i in kept]
    # Only the kept classes are opened: files of the others are not even read.
    entries = [e for e in entries if e[1] in class_names]
    store, skipped = _open_store(root, entries, cfg)
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[label] for _, label, _ in entries], dtype=np.int64)
    failed = np.zeros(len(entries), dtype=bool)
    failed[list(store.failures)] = True
    counts = np.bincount(labels[~failed], minlength=len(class_names))
    empty = [name for name, n in zip(class_names, counts, strict=True) if n == 0]
    if empty:
        raise DataError(
            f"class(es) {', '.join(map(repr, empty))} in {where} have no readable image "
            f"({len(skipped)} file(s) skipped as unreadable); add images or remove the class"
        )
    assigned = np.array([split for _, _, split in entries], dtype=np.int8) if own else None
    return Pool(
        images=None,
        labels=labels,
        class_names=class_names,
        files=[file for file, _, _ in entries],
        skipped=skipped,
        assigned=assigned,
        store=store,
        store_index=np.arange(len(entries), dtype=np.int64),
        failed=failed,
    )


def load_folder(cfg: DataConfig) -> Pool:
    """Every readable image under `cfg.path`'s class sub-folders (or its train/val/test
    folders' class sub-folders), at `cfg.image_size` and `cfg.channels`.

    Raises:
        DataError: a missing folder, fewer than 2 classes, or a class without a readable image.
    """
    root = check_root(cfg.path)
    confined(root, [], [])  # a folder outside the allowed roots is not even listed
    entries, classes, ignored, pre_split = list_folder(root)
    entries = confined(root, entries, ignored)
    if len(classes) < 2:
        layout = f"{root}/train/cats/*.jpg" if pre_split else f"{root}/cats/*.jpg"
        raise DataError(
            f"data.path: {root} has {len(classes)} class sub-folder(s); a classifier needs at "
            f"least 2 (one sub-folder per class, e.g. {layout} and {root}/dogs/*.jpg)"
        )
    pool = _pool(cfg, root, entries, classes, f"source folder {root}", pre_split)
    pool.ignored = ignored
    return pool


def load_csv(cfg: DataConfig) -> Pool:
    """Every readable image a CSV lists (`path,label[,split]`; paths relative to the CSV's
    folder), at `cfg.image_size` and `cfg.channels`. Rows naming a missing file, an empty path
    or label, or an unknown split are skipped, each reported with its line number.

    Raises:
        DataError: a missing or unreadable CSV, a bad header, fewer than 2 labels, or a label
            without a readable image.
    """
    path = Path(cfg.path or "")
    confined(path, [], [])  # a list outside the allowed roots is not even read
    entries, bad_rows, has_split, root = list_csv(path)
    entries = confined(path, entries, bad_rows, root)
    if len({label for _, label, _ in entries}) < 2:
        raise DataError(
            f"{path}: {len(entries)} usable row(s) with {len({e[1] for e in entries})} label(s); "
            f"a classifier needs at least 2 labels ({len(bad_rows)} row(s) skipped)"
        )
    labels = sorted({label for _, label, _ in entries})
    pool = _pool(cfg, root, entries, labels, f"source csv {path}", has_split)
    pool.skipped = bad_rows + pool.skipped
    return pool
