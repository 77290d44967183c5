"""Creating run directories and finding them: a new run's folder, the `latest` link, and whether
a folder holds a trained model."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from imgclf.infra.errors import UserError
from imgclf.runs.names import DEFAULT_ROOT, LABELS, LATEST, MODEL


def check_new_run_dir(out: str | Path) -> Path:
    """`out` as a Path, if a new run may be written there (absent or an empty folder).

    Raises FileExistsError when it exists and is not empty (or is a file)."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"--out {path} exists and is not empty; choose a new folder")
    return path


def new_run_dir(name: str, out: str | Path | None = None, root: str | Path = DEFAULT_ROOT) -> Path:
    """Create and return `out`, or `root/<name>-<YYYYmmdd-HHMMSS>` (suffixed if it exists).

    Raises FileExistsError when `out` exists and is not empty."""
    if out is not None:
        path = check_new_run_dir(out)
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-{stamp}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def point_latest(run_dir: Path) -> None:
    """Make `<parent>/latest` a relative symlink to `run_dir` (best effort; atomic swap)."""
    link = run_dir.parent / LATEST
    if link.exists() and not link.is_symlink():
        return  # a real folder named 'latest': leave the user's data alone
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def is_run_dir(path: str | Path) -> bool:
    """True if `path` holds a trained model written by `imgclf.train`."""
    return (Path(path) / MODEL).is_file() and (Path(path) / LABELS).is_file()


def check_writable(target: Path) -> None:
    """Whether a folder can be made in `target`'s nearest existing ancestor (a real probe: a
    read-only file system, a missing permission or a file in the way answer now, in one line,
    not after the data has loaded). Raises UserError."""
    ancestor = target.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".imgclf-probe-", dir=ancestor))
    except OSError as exc:
        raise UserError(
            f"cannot write under {ancestor} ({exc.strerror}): choose a folder you can write"
        ) from None
