"""The folder source: one sub-folder per class, every file decoded by `images.load_image`;
unreadable files are skipped and reported, files that are not images are listed as ignored."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgclf.data.pool import Pool, kept_classes
from imgclf.errors import DataError
from imgclf.images import IMAGE_EXTENSIONS, ImageError, load_image

if TYPE_CHECKING:
    from imgclf.schema import DataConfig


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def check_root(path: str | Path | None) -> Path:
    """The dataset folder `data.path` as a Path; DataError when it is not a folder."""
    root = Path(path or "")
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise DataError(
            f"data.path: {root} {what}; expected a folder with one sub-folder of images per class"
        )
    return root


def load_folder(cfg: DataConfig) -> Pool:
    """Every readable image under `cfg.path`'s class sub-folders, decoded at `cfg.image_size`
    and `cfg.channels`. Raises DataError for a missing folder, fewer than 2 classes, or a class
    with no readable image."""
    root = check_root(cfg.path)
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
    kept = kept_classes(cfg, [d.name for d in class_dirs], f"source folder {root}")
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
