"""Fixing what the audit found, without ever losing a photo: relabel, remove (quarantine) and
keep, each recorded in a review log with undo.

A review works on a folder dataset (`data.source: folder`, pre-split or not, the app's builder
datasets included) at `root`:

- **relabel** moves `<class>/x.jpg` to the sibling class folder (`train/cat/x.jpg` becomes
  `train/dog/x.jpg` in a pre-split folder), creating it when the class is new;
- **remove** moves the file into `<root>/.quarantine/`, under its own relative path. Nothing is
  ever deleted: the folder listing skips hidden folders, so a quarantined image is out of every
  split and still on disk;
- **keep** records the file's SHA-256 for one kind of finding (`near_duplicates`,
  `label_issues`, `outliers`): `kept_in` lets the audit and training leave it out next time,
  even after the file was renamed or moved. (Exact copies are not kept this way: whether they
  train is `data.duplicates`.)

Every move is atomic and never replaces a file: a hard link to the new name, then the old name
removed (`os.link` fails when the target exists; on a file system without hard links, a rename
after checking the target is free). The log, `<root>/.imgclf-review.json`, is written atomically
(`runs.write_json`) before each move with the action marked pending and again after it, so an
interrupted action is settled on the next read by looking where the file is. `undo` reverses
the last action that is not undone, after checking the file's bytes are still the ones moved.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from imgclf.data.builder import sanitise
from imgclf.data.folder import SPLIT_FOLDERS
from imgclf.infra.errors import UserError
from imgclf.runs import write_json
from imgclf.runs.files import read_json

LOG = ".imgclf-review.json"
LOCK = ".imgclf-review.lock"
QUARANTINE = ".quarantine"
KINDS = ("near_duplicates", "label_issues", "outliers")


def sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def move(src: Path, dst: Path) -> None:
    """Move `src` to `dst` atomically, never replacing a file (see the module's docstring).
    Raises FileExistsError when `dst` exists, OSError when the move fails (nothing moved: a
    link made before a failed unlink is taken back)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(dst):  # no hard links here: check, then rename
            raise FileExistsError(errno.EEXIST, "exists", str(dst)) from exc
        os.rename(src, dst)
        return
    try:
        os.unlink(src)
    except OSError:
        os.unlink(dst)  # the same file under its new name: the move did not happen
        raise


def _prune(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents up to `root` while they are empty: a class folder left
    empty by a move would stop the folder listing ("a class with no readable image")."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:  # not empty (or not ours to remove): the usual case
            return
        folder = folder.parent


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One action at a time on a dataset (two browser tabs, the app and a script): an exclusive
    `fcntl.flock` on `.imgclf-review.lock` where the platform has it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        yield
        return
    with open(root / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class Review:
    """The review of the folder dataset at `root`. Raises UserError when `root` is not a folder
    or its log cannot be read (or names a path outside the dataset)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise UserError(f"{root}: not a folder; review works on a folder dataset")
        self.log = self.root / LOG
        self.actions: list[dict[str, Any]] = self._read()

    def _read(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        try:
            actions = list(read_json(self.log)["actions"])
            for action in actions:
                for key in ("file", "to"):
                    if action.get(key) is not None:
                        self._inside(action[key])
        except (OSError, ValueError, KeyError, TypeError, UserError) as exc:
            raise UserError(
                f"{self.log}: the review log cannot be used ({exc}); move it aside to start a "
                "new log (the files it moved stay where they are)"
            ) from None
        return [a for a in actions if self._settle(a)]

    def _settle(self, action: dict[str, Any]) -> bool:
        """False for a pending action whose move never happened (the file is still where it
        was); a pending one whose file arrived is complete (a move stopped between its link
        and its unlink is finished)."""
        if not action.pop("pending", False) or action["action"] == "keep":
            return True
        src, dst = self.root / action["file"], self.root / action["to"]
        if dst.exists() and src.exists() and os.path.samefile(src, dst):
            try:
                os.unlink(src)
            except OSError:
                return False
        return dst.exists() and not src.exists()

    def _write(self) -> None:
        write_json(self.log, {"version": 1, "actions": self.actions})

    def _inside(self, file: str) -> Path:
        """`root / file` with its folder resolved; UserError when it is outside the dataset."""
        path = self.root / file
        folder = path.parent.resolve()
        if not folder.is_relative_to(self.root) or path.name in ("", ".", ".."):
            raise UserError(f"{file}: outside the dataset {self.root}")
        return folder / path.name

    def path(self, file: str) -> Path:
        """The file at `file` (relative to the root, as the data report names it). Raises
        UserError when it is outside the dataset, a symbolic link, or not there."""
        path = self._inside(file)
        if path.is_symlink():
            raise UserError(f"{file}: a symbolic link; review the file it points to instead")
        if not path.is_file():
            raise UserError(f"{file}: not in {self.root} (moved or removed since the audit?)")
        return path

    def class_of(self, file: str) -> tuple[Path, str, Path]:
        """(the split folder or the root, the class, the rest of the path) of `file`: the class
        is the first folder under the root, or under `train/`, `val/`, `test/` in a pre-split
        dataset, as the folder listing reads it (sub-folders of a class belong to it)."""
        parts = Path(file).parts
        split = 1 if len(parts) >= 3 and parts[0].lower() in SPLIT_FOLDERS else 0
        if len(parts) < split + 2:
            raise UserError(f"{file}: not inside a class folder")
        return self.root.joinpath(*parts[:split]), parts[split], Path(*parts[split + 1 :])

    def relabel(self, file: str, new_class: str) -> dict[str, Any]:
        """Move `file` into the class folder `new_class` (created if new; the name sanitised as
        the builder does), in the same split folder and sub-folder. Returns the logged action."""
        base, cls, rest = self.class_of(self._rel(file))
        name = sanitise(new_class)
        if name == cls:
            raise UserError(f"{file} is already in class {name}")
        return self._move("relabel", file, lambda: _free(base / name / rest))

    def remove(self, file: str) -> dict[str, Any]:
        """Move `file` into the quarantine folder (out of every split, never deleted)."""
        rel = self._rel(file)
        return self._move("remove", file, lambda: _free(self.root / QUARANTINE / rel))

    def keep(self, file: str, finding: str) -> dict[str, Any]:
        """Remember that `file` is fine for the finding kind `finding` (one of KINDS)."""
        if finding not in KINDS:
            raise UserError(f"finding {finding!r}: one of {', '.join(KINDS)}")
        with _locked(self.root):
            self.actions = self._read()
            digest = sha256(self.path(file))
            return self._record({"action": "keep", "file": self._rel(file), "to": None,
                                 "finding": finding, "sha256": digest})  # fmt: skip

    def _rel(self, file: str) -> str:
        return self.path(file).relative_to(self.root).as_posix()

    def _move(self, kind: str, file: str, target: Callable[[], Path]) -> dict[str, Any]:
        with _locked(self.root):
            self.actions = self._read()  # what another tab or a script did meanwhile
            src, dst = self.path(file), target()
            action = self._record(
                {"action": kind, "file": self._rel(file),
                 "to": dst.relative_to(self.root).as_posix(), "finding": None,
                 "sha256": sha256(src), "pending": True}
            )  # fmt: skip
            try:
                move(src, dst)
            except OSError as exc:
                self.actions.pop()
                self._write()
                _prune(dst.parent, self.root)
                raise UserError(
                    f"{file}: not moved ({exc.strerror or exc}); nothing changed"
                ) from None
            del action["pending"]
            self._write()
            _prune(src.parent, self.root)
            return action

    def _record(self, action: dict[str, Any]) -> dict[str, Any]:
        number = max((a["id"] for a in self.actions), default=0) + 1
        action = {"id": number, **action, "at": _now(), "undone": False}
        self.actions.append(action)
        self._write()
        return action

    def undo(self) -> dict[str, Any] | None:
        """Reverse the last action not undone (a move goes back to the original path, bytes
        checked); returns it, or None when there is nothing to undo. Raises UserError when the
        file was changed or its old place is taken (nothing is moved then)."""
        with _locked(self.root):
            self.actions = self._read()
            live = [a for a in self.actions if not a["undone"]]
            if not live:
                return None
            action = live[-1]
            if action["action"] != "keep":
                moved = self._inside(action["to"])
                if moved.is_symlink() or not moved.is_file() or sha256(moved) != action["sha256"]:
                    raise UserError(
                        f"cannot undo: {action['to']} is no longer the file that was moved there"
                    )
                try:
                    move(moved, self._inside(action["file"]))
                except OSError as exc:
                    raise UserError(
                        f"cannot undo: {action['file']} ({exc.strerror or exc}); nothing changed"
                    ) from None
                _prune(moved.parent, self.root)
            action["undone"] = True
            self._write()
            return action

    def kept(self, finding: str) -> set[str]:
        """The SHA-256 of the files kept for the finding kind `finding`."""
        return {
            a["sha256"]
            for a in self.actions
            if a["action"] == "keep" and a["finding"] == finding and not a["undone"]
        }


def _free(path: Path) -> Path:
    """`path`, or `name-2.ext`, `name-3.ext`, ... when a file of that name is there."""
    n = 1
    candidate = path
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def kept_in(root: str | Path | None) -> Callable[[str, str], bool] | None:
    """For the folder dataset at `root`: `kept(kind, file)`, true when the review keeps `file`
    (relative to `root`) for the finding kind `kind`; None when nothing is kept there (no log,
    or `root` None). A log that cannot be read keeps nothing (the audit then reports all)."""
    if root is None or not (Path(root) / LOG).is_file():
        return None
    try:
        review = Review(root)
    except (UserError, OSError):  # an unusable log keeps nothing: the audit reports all
        return None
    hashes = {kind: review.kept(kind) for kind in KINDS}
    if not any(hashes.values()):
        return None
    cache: dict[str, str | None] = {}

    def kept(kind: str, file: str) -> bool:
        if not hashes.get(kind):
            return False
        if file not in cache:
            try:
                cache[file] = sha256(review.root / file)
            except OSError:
                cache[file] = None
        return cache[file] in hashes[kind]

    return kept
