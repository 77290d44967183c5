"""Where imgclf may read and write datasets: the dataset builder's folder (`$IMGCLF_DATA`, else
`datasets/`) and, when an operator sets `IMGCLF_DATA_ROOTS` (folders separated by `:`), the only
folders any image may come from.

The app refuses a typed server path outside those roots (`ui.exposure`); here the files a folder
or CSV source then lists are confined too, after resolving every link (`os.path.realpath`): a
CSV row naming `/etc/...` or `../../x.png`, or a symbolic link inside an allowed folder pointing
out of it, is left out with its reason, like any unreadable file. The variable applies to every
process that has it, so the app's training children (which inherit it) and the command line
obey the same roots.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "IMGCLF_DATA"
ROOTS_ENV = "IMGCLF_DATA_ROOTS"
OUTSIDE = f"outside the folders {ROOTS_ENV} allows"


def data_root() -> Path:
    """Where built datasets are saved: `$IMGCLF_DATA`, else `datasets/` (relative to the
    working directory, like `runs/`)."""
    return Path(os.environ.get(DATA_ENV) or "datasets")


def named_roots() -> list[Path] | None:
    """The folders `IMGCLF_DATA_ROOTS` names and the builder's folder, resolved; None when the
    variable is unset or empty (no confinement)."""
    named = [p for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    if not named:
        return None
    return [resolved(p) for p in [*named, str(data_root())]]


def resolved(path: str | Path) -> Path:
    """`path` with `~`, `..` and every symbolic link resolved."""
    return Path(os.path.realpath(Path(path).expanduser()))


def inside(path: str | Path, roots: list[Path]) -> bool:
    """Whether `path`, resolved, is one of `roots` or lies under one."""
    real = resolved(path)
    return any(real == root or real.is_relative_to(root) for root in roots)
