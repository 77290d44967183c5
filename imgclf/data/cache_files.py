"""The disk cache's files (`data.cache: disk`): the key of a dataset's entry, the temporary
names builders write under, durable writes, and eviction of old entries. `store.FileStore`
builds and reads the entries; this module only names and tidies them.

An entry is `<key>.u8` (the pixels, one record of height × width × channels bytes per file)
and `<key>.json` (what they are: the folder, every file's path, size and modification time,
the image size, channels, decoder version and failures). The key is the SHA-256 of that
description, so any changed, added or removed file gives a new entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DECODER_VERSION = 3  # bump when load_image's pixels (or the key) change: old entries miss
KEEP_PER_FOLDER = 3  # cache entries kept per dataset folder (e.g. three image sizes)
TOTAL_LIMIT_BYTES = 20 << 30  # all entries together: the least recently used go beyond it


def cache_key(
    root: Path, files: Sequence[str], size: tuple[int, int], channels: int
) -> tuple[str, list[list[Any]]]:
    """(hex key, [[file, bytes, mtime_ns, inode, ctime_ns], ...]) of a file list: stat only,
    no pixels read. Size and modification time alone miss a file replaced by another of the
    same size and time (what `cp -p`, `rsync -t`, `tar` and `unzip` leave): the inode changes
    when a file is replaced by a new one, and the change time (ctime, which no tool can set)
    on any rewrite in place, so either makes the entry miss."""
    stats = []
    for rel in files:
        try:
            st = (root / rel).stat()
            stats.append([rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns])
        except OSError:  # gone since it was listed: decoding it fails and reports it
            stats.append([rel, -1, -1, -1, -1])
    meta = [str(root.resolve()), list(size), channels, DECODER_VERSION, pillow_versions(), stats]
    return hashlib.sha256(json.dumps(meta).encode("utf-8", "surrogateescape")).hexdigest(), stats


def pillow_versions() -> list[str | None]:
    """Pillow's and libjpeg's versions: another version may decode or resize a little
    differently, so an upgrade must not re-use pixels the old one made."""
    import PIL
    from PIL import features

    return [PIL.__version__, features.version("libjpeg_turbo")]


def temporary(folder: Path, name: str) -> Path:
    """A temporary name for `name` in `folder`, owned by this host and process (the sweep in
    `evict` removes only this host's temporaries whose process is gone)."""
    host = socket.gethostname().replace(".", "_")
    return folder / f".{name}.{host}.{os.getpid()}.tmp"


def read_meta(path: Path) -> dict[str, Any] | None:
    """An entry's description, or None when it is missing, unreadable or not one."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) and "bytes" in meta and "failures" in meta else None
    except (OSError, ValueError):
        return None


def write_json_durably(path: Path, data: Any) -> None:
    """Write JSON under a temporary name, flush it to disk, then rename it into place."""
    tmp = temporary(path.parent, path.name)
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _cap_total(folder: Path, keep: str) -> None:
    """Remove the least recently used entries (of any dataset folder, never `keep`) until all
    of them together take at most TOTAL_LIMIT_BYTES: `data.cache: auto` caches every folder
    trained on, and the cache must not grow without end."""
    entries = []
    for meta_path in folder.glob("*.json"):
        data = meta_path.with_suffix(".u8")
        with contextlib.suppress(OSError):
            entries.append((meta_path.stat().st_mtime, data.stat().st_size, meta_path))
    total = sum(size for _, size, _ in entries)
    for _, size, meta_path in sorted(entries):  # oldest use first
        if total <= TOTAL_LIMIT_BYTES:
            return
        if meta_path.stem == keep:
            continue
        for stale in (meta_path.with_suffix(".u8"), meta_path):
            with contextlib.suppress(OSError):
                stale.unlink()
        total -= size


def entry_exists(folder: Path, key: str) -> bool:
    """Whether a complete entry `key` is in `folder` (its description and pixels of the size
    it records)."""
    meta = read_meta(folder / f"{key}.json")
    data = folder / f"{key}.u8"
    return meta is not None and data.is_file() and data.stat().st_size == meta["bytes"]


def evict(folder: Path, root: str, keep: str) -> None:
    """Keep the KEEP_PER_FOLDER most recently used entries of a dataset folder (other image
    sizes, or its files before they changed) and remove older ones; keep all entries together
    under TOTAL_LIMIT_BYTES (least recently used first); remove the temporaries of builders
    that died. A run still reading a removed entry keeps its open file (POSIX)."""
    entries = []
    for meta_path in folder.glob("*.json"):
        meta = read_meta(meta_path)
        if meta is not None and meta.get("root") == root and meta_path.stem != keep:
            with contextlib.suppress(OSError):
                entries.append((meta_path.stat().st_mtime, meta_path))
    entries.sort(reverse=True)
    for _, meta_path in entries[KEEP_PER_FOLDER - 1 :]:
        for stale in (meta_path.with_suffix(".u8"), meta_path):
            with contextlib.suppress(OSError):
                stale.unlink()
    for orphan in folder.glob("*.u8"):  # pixels without a description (an older imgclf)
        if not orphan.with_suffix(".json").exists():
            with contextlib.suppress(OSError):
                orphan.unlink()
    _cap_total(folder, keep)
    host = socket.gethostname().replace(".", "_")
    for tmp in folder.glob(".*.tmp"):
        *_, owner, pid, _ = tmp.name.split(".")
        if owner == host and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                tmp.unlink()
