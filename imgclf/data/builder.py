"""A folder dataset built from images a user adds one by one (the app's dataset builder, in the
manner of Teachable Machine): `<data root>/<dataset>/<class>/<image>`, the layout
`data.source: folder` trains on, so the command line trains the same data.

Every name is sanitised (`sanitise`): class and dataset names keep letters, digits, `-`, `_`
and `.` (whitespace and anything else become `_`), so a name is one safe path component; the
split folder names (`train`, `val`, `test`, ...) are refused as class names, because the folder
listing would read them as a split. Every image goes through `images.load_image` (the one
decoder, with its size and pixel limits) before it is written, and is written atomically
(`runs.write_bytes`: a crash never leaves half a file). An image whose bytes (SHA-256) are
already anywhere in the dataset is skipped and reported with the copy it duplicates; with
`several` (a multi-label dataset, `task: multilabel`), the same image added to another class
is saved there too, as a hard link to the first copy where the disk allows (else a copy): one
photo in each of its labels' folders, the layout `imgclf.data.multilabel` reads.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgclf import archives
from imgclf.data.folder import NOT_CLASSES, SPLIT_FOLDERS
from imgclf.formats import FORMATS, is_image_name, register_plugins, walk
from imgclf.images import ImageError, load_image
from imgclf.infra.errors import UserError
from imgclf.runs import write_bytes

MAX_NAME = 64


def sanitise(name: str, what: str = "class name") -> str:
    """`name` as one safe folder name (see the module's docstring). Raises UserError when
    nothing is left of it or it is a split folder's name."""
    text = unicodedata.normalize("NFKC", str(name)).strip()
    text = re.sub(r"[^\w.\-]+", "_", text).strip("._")[:MAX_NAME].strip("._")
    if not text:
        raise UserError(f"{what} {name!r}: use letters or digits")
    if text.lower() in SPLIT_FOLDERS or text in NOT_CLASSES:
        raise UserError(
            f"{what} {text!r} is reserved (a train/val/test split folder): choose another name"
        )
    if text.split(".")[0].upper() in WINDOWS_DEVICES:
        raise UserError(
            f"{what} {text!r} is a Windows device name (CON, NUL, COM1, ...): a folder of that "
            "name cannot be copied to Windows; choose another name"
        )
    return text


# Names Windows reserves for devices, with or without an extension ("nul.txt"): a dataset
# holding such a folder cannot be unzipped or copied there.
WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)
}


@dataclass(frozen=True)
class Added:
    """What became of one added image: status `added` (saved as `path`), `duplicate` (the same
    bytes are already saved as `path`) or `refused` (with the decoder's `reason`, or `not saved
    (...)` when the disk refused the write: what was added before is kept and listed)."""

    source: str
    status: str
    path: str = ""
    reason: str = ""


class DatasetBuilder:
    """Adds classes and images to the folder dataset at `root` (created on the first class)."""

    def __init__(self, root: str | Path, several: bool = False) -> None:
        self.root = Path(root)
        self.several = several  # multi-label: one image may be filed under several classes
        self._hashes: dict[str, str] | None = None  # SHA-256 -> path relative to root
        self._classes_of: dict[str, set[str]] = {}  # SHA-256 -> the classes holding it
        self._stamp: list[tuple[str, int, int]] = []  # the folders the index is up to date with
        # (folder, reason) of the folders `classes` could not read: the page names them.
        self.unreadable: list[tuple[Path, str]] = []

    def classes(self) -> dict[str, int]:
        """Class name -> number of image files, in name order; folders that cannot be read are
        left in `unreadable`, with the reason."""
        self.unreadable = []
        return {
            d.name: sum(1 for p in walk(d, self.unreadable) if is_image_name(p))
            for d in self._class_folders()
        }

    def add_class(self, name: str) -> str:
        """Create the class folder (sanitised name; case-insensitively unique); returns the
        name. An existing class of the same name is kept as it is."""
        clean = sanitise(name)
        if (self.root / clean).is_dir():  # the common case: one stat, not a listing
            return clean
        for existing in self._class_folders():
            if existing.name.lower() == clean.lower():
                return existing.name
        (self.root / clean).mkdir(parents=True, exist_ok=True)
        return clean

    def _class_folders(self) -> list[Path]:
        """The class folders, in name order (nothing inside them is read)."""
        if not self.root.is_dir():
            return []
        return [
            d
            for d in sorted(self.root.iterdir(), key=lambda d: d.name)
            if d.is_dir() and not d.name.startswith(".") and d.name not in NOT_CLASSES
        ]

    def _index(self) -> dict[str, str]:
        """The hashes of every image in the dataset, read once and kept up to date by `add`;
        read again when a folder changed under us (its modification time: a stat per class
        folder, not a walk of the dataset per image, which made a 1,000-image zip quadratic)."""
        stamp = self._folder_stamp()
        if self._hashes is None or stamp != self._stamp:
            # An unreadable folder's images cannot be hashed; `classes` names such folders.
            files = [p for p in walk(self.root, []) if is_image_name(p)]
            self._hashes, self._classes_of = {}, {}
            for path in sorted(files) if self.root.is_dir() else []:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                relative = path.relative_to(self.root)
                self._hashes.setdefault(digest, relative.as_posix())
                self._classes_of.setdefault(digest, set()).add(relative.parts[0].lower())
        return self._hashes

    def _restamp(self) -> None:
        """After our own write: the folders' times and counts now include it."""
        self._stamp = self._folder_stamp()

    def _folder_stamp(self) -> list[tuple[str, int, int]]:
        """(name, modification time, number of entries) of the root and each class folder: a
        file added or removed there changes it, even within one tick of the clock. (A file
        rewritten in place by another program, or one added in a sub-folder of a class, does
        not: an upload of the old bytes could then be reported as a duplicate of it.)"""
        return [
            (d.name, d.stat().st_mtime_ns, len(os.listdir(d)))
            for d in [self.root, *self._class_folders()]
            if d.exists()
        ]

    def add(self, class_name: str, filename: str, data: bytes) -> Added:
        """Check `data` with the decoder and save it in the class folder (created if needed)
        under its sanitised file name; a different image of the same name gets its hash's first
        8 hex digits appended. Raises UserError for a bad class name."""

        clean = sanitise(class_name)  # a bad name fails before anything else
        digest = hashlib.sha256(data).hexdigest()
        index = self._index()
        if digest in index and self.several and clean.lower() not in self._classes_of[digest]:
            return self._add_label(clean, filename, digest, data)
        if digest in index:
            return Added(filename, "duplicate", index[digest])
        try:
            load_image(data, (8, 8), 3)  # the decoder's checks and limits, not just the header
        except ImageError as exc:
            return Added(filename, "refused", reason=exc.reason)
        cls = self.add_class(class_name)  # only now: a refused image leaves no empty class
        path = self.root / cls / _file_name(filename, digest, data)
        if path.exists():  # the same name, other bytes (the same bytes were found above)
            path = path.with_name(f"{path.stem}-{digest[:8]}{path.suffix}")
        try:
            write_bytes(path, data)  # atomic: a full disk leaves no half file
        except OSError as exc:  # a full disk, a quota, a read-only folder: this image only
            return Added(filename, "refused", reason=f"not saved ({exc.strerror or exc})")
        index[digest] = path.relative_to(self.root).as_posix()
        self._classes_of.setdefault(digest, set()).add(cls.lower())
        self._restamp()
        return Added(filename, "added", index[digest])

    def _add_label(self, class_name: str, filename: str, digest: str, data: bytes) -> Added:
        """`several`: an image already saved under another class, filed under `class_name`
        too, with the first copy's file name: a hard link to it when it is a file inside the
        dataset that still holds these bytes (the index may be stale, or a class folder a
        link elsewhere), else a copy of the bytes, written atomically."""
        first = self.root / self._hashes[digest]
        cls = self.add_class(class_name)
        path = self.root / cls / first.name
        n = 0
        while path.exists() or path.is_symlink():  # another image of that name in this class
            n += 1
            path = path.with_name(f"{first.stem}-{digest[:8]}{'-' + str(n) if n > 1 else ''}"
                                  f"{first.suffix}")  # fmt: skip
        try:
            real = first.resolve(strict=True)
            same = real.is_relative_to(self.root.resolve()) and real.is_file()
            same = same and hashlib.sha256(real.read_bytes()).hexdigest() == digest
            if not same:
                raise FileNotFoundError(first)  # write the bytes instead
            os.link(real, path)
        except OSError:  # no link here (another disk, FAT, a changed first copy): the bytes
            try:
                write_bytes(path, data)
            except OSError as exc:
                return Added(filename, "refused", reason=f"not saved ({exc.strerror or exc})")
        self._classes_of[digest].add(cls.lower())
        self._restamp()
        return Added(filename, "added", path.relative_to(self.root).as_posix())

    def add_zip(self, data: bytes, zip_name: str = "upload.zip") -> list[Added]:
        """Add a zip of class folders (`cat/1.jpg`, or one top folder holding them:
        `pets/cat/1.jpg`); images outside a class folder are refused. Raises UserError when
        the zip cannot be read or is too large (`archives.list_images`)."""
        return [added for _, _, added in self.iter_zip(data, zip_name)]

    def iter_zip(
        self, data: bytes, zip_name: str = "upload.zip", start: int = 0
    ) -> Iterator[tuple[int, int, Added]]:
        """`add_zip` one entry at a time: yields (entries done, entries in all, what became of
        this one), from entry `start` on (a page that was interrupted goes on where it
        stopped; the order is the zip's own, so it is the same every time)."""
        archive = archives.open_zip(data, zip_name)
        listing = archives.list_images(archive, zip_name)
        names = [archives.member_name(m, archive) for m in listing.images]
        parts = [n.split("/") for n in names]
        strip = (
            1
            if parts and all(len(p) >= 3 for p in parts) and len({p[0] for p in parts}) == 1
            else 0
        )
        failures = [Added(name, "refused", reason=why) for name, why in listing.failures]
        total = len(failures) + len(listing.images)
        for done, added in enumerate(failures[start:], start + 1):
            yield done, total, added
        first = max(start - len(failures), 0)
        members = zip(listing.images[first:], names[first:], parts[first:], strict=True)
        for done, (member, name, part) in enumerate(members, len(failures) + first + 1):
            added = self._add_member(archive, member, name, part[strip:])
            yield done, total, added
            if added.reason.startswith("not saved"):  # the disk: the rest would fail too
                yield (
                    total,
                    total,
                    Added(zip_name, "refused", reason=f"{total - done} more not tried"),
                )
                return

    def _add_member(self, archive: Any, member: Any, name: str, inner: list[str]) -> Added:
        if len(inner) < 2:
            return Added(name, "refused", reason="not inside a class folder")
        content = archives.read_member(archive, member)
        if isinstance(content, str):
            return Added(name, "refused", reason=content)
        try:
            return self.add(inner[0], name, content)
        except UserError as exc:
            return Added(name, "refused", reason=str(exc))


def _detected_extension(data: bytes) -> str:
    """The first extension of the format Pillow finds in `data` (a decoded image's)."""

    from PIL import Image

    register_plugins()
    with Image.open(io.BytesIO(data)) as img:
        found = img.format
    return next((f.extensions[0] for f in FORMATS if found in f.pillow), ".png")


def _file_name(filename: str, digest: str, data: bytes) -> str:
    """A safe file name for an upload: its sanitised stem and lower-case image extension; a name
    without an image extension gets the extension of the format found in its bytes, and an
    empty stem the hash's first 12 hex digits."""
    name = Path(unicodedata.normalize("NFKC", filename).replace("\\", "/")).name
    stem, suffix = Path(name).stem, Path(name).suffix.lower()
    if not is_image_name(f"x{suffix}"):
        stem, suffix = name, _detected_extension(data)
    clean = re.sub(r"[^\w.\-]+", "_", stem).strip("._")[:MAX_NAME] or digest[:12]
    return f"{clean}{suffix}"
