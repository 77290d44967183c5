"""imgclf's cache folder: derived files that can always be rebuilt from their source (converted
pretrained weights today). Nothing here is ever the only copy of anything.

Location: `$IMGCLF_CACHE`, else `$XDG_CACHE_HOME/imgclf`, else `~/.cache/imgclf`. Deleting the
folder is always safe; the next use rebuilds what it needs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV = "IMGCLF_CACHE"


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "imgclf"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
