"""Where a SavedModel may be written besides its run: `imgclf-export --out DIR` (new, empty, or
an earlier imgclf SavedModel, never a user's folder) and `--serving-dir DIR` (TF Serving's
numbered versions)."""

from __future__ import annotations

from pathlib import Path

from imgclf import runs
from imgclf.infra.errors import UserError


def next_serving_version(serving_dir: str | Path) -> int:
    """The next version number under a TF Serving model folder: 1 + the largest numeric
    sub-folder (1 for a new folder). TF Serving serves the highest version it finds."""
    folder = Path(serving_dir)
    if not folder.is_dir():
        return 1
    versions = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def check_out(out: Path) -> None:
    """`--out` must be new, empty, or an earlier imgclf SavedModel (replaced atomically): a
    folder holding anything else is the user's, and is never replaced. Raises UserError."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the SavedModel")
    ours = (out / "saved_model.pb").is_file() and (out / runs.LABELS).is_file()
    if any(out.iterdir()) and not ours:
        raise UserError(
            f"--out {out} is not empty and is not an imgclf SavedModel; refusing to replace "
            "it. Give a new (or empty) folder"
        )
