"""Writing run files so that a crash never leaves a half-written one in place of a good one:
a temporary name in the same folder (named after the writing process, so leftovers of a dead
writer can be recognised and removed), flushed to disk, renamed into place, and the folder
entry flushed too. And reading them back."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgclf.infra import bounded
from imgclf.runs.names import CONFIG, LABELS

# A temporary of atomic_path: .<name>.<pid>.<random>.tmp<suffix> (or .<name>.old-<pid>).
_TEMPORARY = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(\.\w+)*$|^\..+\.old-(?P<old>\d+)$"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_debris(folder: str | Path) -> list[Path]:
    """Remove the temporaries that writers which have died left in `folder` (a crash or a kill
    between creating a temporary and renaming it); returns what was removed. Temporaries of a
    live process are left alone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if match is None:
            continue
        pid = int(match.group("pid") or match.group("old"))
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            removed.append(path)
    return removed


def _fsync(path: Path) -> None:
    """Flush a file, or every file of a folder, and the folder entries, to disk."""
    targets = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    folders = [path] if path.is_dir() else []
    folders += [p for p in path.rglob("*") if p.is_dir()] if path.is_dir() else []
    for target in [*targets, *folders]:
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success move it into place atomically.

    Works for files and directories. The temporary is named after this process and keeps the
    suffix (Keras checks it); what the writer wrote is flushed to disk before the rename and the
    folder entry after it, so a power cut cannot leave an empty or partial file in place. On
    failure the temporary is removed and `target` is left as it was. Leftover temporaries of
    dead writers in the same folder are removed first (`remove_debris`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_debris(target.parent)
    suffixes = "".join(target.suffixes[-2:])  # .weights.h5, .tar.gz: what writers check
    stem = target.name[: len(target.name) - len(suffixes)] or target.name
    tmp = target.with_name(f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffixes}")
    try:
        yield tmp
        _fsync(tmp)
        if tmp.is_dir():
            # A directory cannot replace a non-empty one atomically: move the old one aside first.
            old = None
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_folder(target.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    """Atomically write a binary file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    with atomic_path(path) as tmp:
        # surrogateescape: a non-UTF-8 file name in a config goes back out as its own bytes.
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


_UNDECODABLE = re.compile("[\udc80-\udcff]")


def printable(text: str) -> str:
    """`text` with the bytes of a non-UTF-8 file name (kept by Python as lone surrogates, e.g.
    the name b"\\xff0.png") written as `\\xNN`: lossless, and valid UTF-8 in JSON and on a
    terminal."""
    return _UNDECODABLE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def _printable(data: Any) -> Any:
    if isinstance(data, str):
        return printable(data)
    if isinstance(data, dict):
        return {printable(k) if isinstance(k, str) else k: _printable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_printable(v) for v in data]
    return data


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write JSON (indented, UTF-8, keys in insertion order). Undecodable bytes of
    file names are written as `\\xNN` (`printable`)."""
    write_text(path, json.dumps(_printable(data), indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file of a run, bounded (`infra.bounded`: size, nesting): a run folder may
    come from someone else. Raises ValueError (malformed or over a limit) or OSError."""
    return bounded.read_json(path)


def read_labels(path: str | Path) -> list[str]:
    """The class names of a run directory or a SavedModel directory (index i is output i)."""
    labels = read_json(Path(path) / LABELS)
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{Path(path) / LABELS} must be a JSON list of class names")
    return labels


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's config.yaml as a plain dict (not validated: an older run may predate a key)."""

    data = bounded.read_yaml(Path(run_dir) / CONFIG)  # bounded: the run may be someone else's
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def glob_safe(path: str | Path) -> Iterator[Path]:
    """`path`, or while the block runs a link to it from a temporary folder if `path` contains
    `[`, `]`, `*` or `?`: TensorFlow's checkpoint reader takes the variables path as a glob
    pattern, so it cannot load a SavedModel from, e.g., `runs/a[1]/saved_model`."""
    path = Path(path)
    if not any(c in str(path.resolve()) for c in "[]*?"):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="imgclf-") as tmp:
        link = Path(tmp) / "model"
        link.symlink_to(path.resolve(), target_is_directory=path.is_dir())
        yield link


def tree_size(path: str | Path) -> int:
    """Bytes in a file, or in all files under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
