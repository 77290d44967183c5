"""Pixels of file datasets, decoded on demand, with a decoded cache (`data.cache`).

A folder or CSV dataset is held as a list of files; `FileStore.read(indices)` gives their pixels,
decoded by imgclf's one decoder (`images.load_image`) at the configured size and channels, from:

    memory  every file decoded once, up front, into RAM (right for small sets)
    disk    every file decoded once into a flat file of uint8 images under the cache folder
            (`cache.cache_dir()/decoded/`), re-used by every later run on the same files; read
            back with `os.pread`, so the pages live in the OS page cache, not in this process
    none    decoded again at every read (no cache)
    auto    disk when its disk has room for the set (DISK_HEADROOM to spare), so a second run
            on the same files skips decoding; else memory under AUTO_MEMORY_BYTES, else none

A disk cache entry is keyed by the folder, every file's path, size and modification time, the
image size, the channel count and the decoder's version: any changed, added or removed file
gives a new key; the three most recently used entries of a folder are kept. Entries are
written under a temporary name, flushed to disk and renamed into place, so a crash never leaves
a half-written cache that a later run would trust; a cache that cannot be written (disk full)
is a DataError naming the fixes. `ImageView` is a split's images as a lazy array.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from imgclf.data.cache_files import (
    DECODER_VERSION,
    cache_key,
    entry_exists,
    evict,
    read_meta,
    temporary,
    write_json_durably,
)
from imgclf.images import ImageError, load_image
from imgclf.infra.cache import cache_dir
from imgclf.infra.errors import DataError

AUTO_MEMORY_BYTES = 1 << 30  # auto without room on disk: sets under 1 GiB stay in memory
DISK_HEADROOM = 2 << 30  # auto: the disk cache only when this much stays free besides it
CHUNK = 256  # files decoded per batch of the thread pool while building
CACHE_FOLDER = "decoded"


def workers() -> int:
    """Decoding threads: Pillow releases the GIL while decoding, so threads use every core."""
    return min(8, (os.cpu_count() or 1) * 2)


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent); 0 when it
    cannot be told."""
    for candidate in (folder, *folder.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:  # not there yet (or not a folder): ask its parent
            continue
    return 0


def resolve_mode(
    mode: str, n: int, size: tuple[int, int], channels: int, cached: Any = None
) -> str:
    """`auto` -> disk when the cache folder's disk has room for the decoded set with
    DISK_HEADROOM to spare (a later run on the same files then skips decoding), or when
    `cached()` says the entry is there already; else memory under AUTO_MEMORY_BYTES, else none.
    Other modes unchanged."""
    if mode != "auto":
        return mode
    nbytes = n * size[0] * size[1] * channels
    if free_bytes(cache_dir() / CACHE_FOLDER) >= nbytes + DISK_HEADROOM:
        return "disk"
    if cached is not None and cached():  # built before: re-using it writes nothing
        return "disk"
    return "memory" if nbytes < AUTO_MEMORY_BYTES else "none"


def _decode(path: Path, size: tuple[int, int], channels: int) -> np.ndarray | str:
    try:
        return load_image(path, size, channels)
    except ImageError as exc:
        return exc.reason
    except OSError as exc:  # vanished, unreadable
        return f"unreadable ({exc.strerror or exc})"


def decode_all(
    paths: Sequence[Path], size: tuple[int, int], channels: int
) -> Iterator[np.ndarray | str]:
    """Decode `paths` in order with a thread pool, CHUNK at a time (memory stays bounded):
    yields pixels [H, W, C] uint8, or the reason a file failed."""
    with ThreadPoolExecutor(max_workers=workers()) as pool:
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start : start + CHUNK]
            yield from pool.map(lambda p: _decode(p, size, channels), chunk)


class FileStore:
    """The pixels of `files` (relative to `root`) at `size` and `channels`, by index.

    `read(indices)` returns the readable images and a mask of which indices they are; a file
    that fails to decode (found at build time for memory/disk, or at any read for none) is
    recorded in `failures` and left out, never replaced by a blank image.
    """

    def __init__(
        self, root: Path, files: list[str], size: tuple[int, int], channels: int, mode: str
    ) -> None:
        self.root, self.files = root, list(files)
        self.size, self.channels = tuple(size), int(channels)
        self.requested = mode
        self.mode = resolve_mode(mode, len(files), self.size, self.channels, self._cached)
        self.failures: dict[int, str] = {}
        self.record = self.size[0] * self.size[1] * self.channels  # bytes per image
        self._array: np.ndarray | None = None
        self._path: Path | None = None  # the disk cache file
        self._fd: int | None = None
        self.built = False  # True when this object decoded the set (not read a cache)
        self.seconds = 0.0  # how long opening took (decoding everything, when built)
        self.note: str | None = None  # why `auto` did not end up with the disk cache

    # -- building -------------------------------------------------------------------------------

    def _cached(self) -> bool:
        """Whether the disk cache already holds these files (stat only, no pixel read)."""
        key, _ = cache_key(self.root, self.files, self.size, self.channels)
        return entry_exists(cache_dir() / CACHE_FOLDER, key)

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded set (what the disk cache file, or the memory, holds)."""
        return len(self.files) * self.record

    @property
    def path(self) -> Path | None:
        """The disk cache file, once open."""
        return self._path

    def open(self) -> FileStore:
        """Decode into memory, or open (building if needed) the disk cache; returns self.

        `auto` that chose the disk but cannot write there (a read-only or full disk) falls
        back to memory (or none, for a set of AUTO_MEMORY_BYTES and more) and says why in
        `note`; an explicit `disk` raises DataError instead."""
        start = time.perf_counter()
        if self.mode == "disk":
            try:
                self._open_disk()
            except DataError as exc:
                if self.requested != "auto":
                    raise
                self.mode = "memory" if self.nbytes < AUTO_MEMORY_BYTES else "none"
                self.note = f"{exc} (this run: data.cache={self.mode})"
        if self.mode == "memory":
            self._array = np.zeros((len(self.files), *self.size, self.channels), np.uint8)
            self._fill(lambda i, pixels: self._array.__setitem__(i, pixels))
            self.built = True
        elif self.mode not in ("disk", "none"):
            raise ValueError(f"unknown cache mode {self.mode!r}")
        self.seconds = time.perf_counter() - start
        return self

    def _fill(self, put: Any) -> None:
        paths = [self.root / rel for rel in self.files]
        for i, result in enumerate(decode_all(paths, self.size, self.channels)):
            if isinstance(result, str):
                self.failures[i] = result
            else:
                put(i, result)

    def _open_disk(self) -> None:
        key, stats = cache_key(self.root, self.files, self.size, self.channels)
        folder = cache_dir() / CACHE_FOLDER
        data, meta_path = folder / f"{key}.u8", folder / f"{key}.json"
        for attempt in range(2):
            try:
                meta = read_meta(meta_path)
                if meta is not None and self._readable_again(meta):
                    meta = None  # a file that could not be read before can be now: rebuild
                if meta is None or not data.is_file() or data.stat().st_size != meta["bytes"]:
                    meta = self._build_disk(folder, key, stats)
                    self.built = True
                self._fd = os.open(data, os.O_RDONLY)
                break
            except FileNotFoundError:  # another run evicted it just now: build it again
                if attempt:
                    raise DataError(
                        f"the decoded-image cache {data} keeps disappearing (another run "
                        "removing it?); set data.cache=memory (or none) for this run"
                    ) from None
            except PermissionError as exc:
                raise DataError(
                    f"cannot read the decoded-image cache {data} ({exc.strerror}); point "
                    "IMGCLF_CACHE at a folder of yours, or set data.cache=memory (or none)"
                ) from None
        with contextlib.suppress(OSError):
            os.utime(meta_path)  # recently used: eviction keeps it
        self.failures = {int(i): reason for i, reason in meta["failures"].items()}
        self._path = data

    def _readable_again(self, meta: dict[str, Any]) -> bool:
        """Whether a file the entry records as unreadable (an OS error such as permission
        denied, not a corrupt image) can be opened now: its size and time need not change."""
        for i, reason in meta["failures"].items():
            transient = reason == "permission denied" or reason.startswith("unreadable")
            if transient and os.access(self.root / self.files[int(i)], os.R_OK):
                return True
        return False

    def _build_disk(self, folder: Path, key: str, stats: list[list[Any]]) -> dict[str, Any]:
        tmp = temporary(folder, key)
        data, meta_path = folder / f"{key}.u8", folder / f"{key}.json"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._write_records(tmp)
            root = str(self.root.resolve())
            meta = {
                "root": root,
                "image_size": list(self.size),
                "channels": self.channels,
                "decoder": DECODER_VERSION,
                "files": stats,
                "failures": {str(i): r for i, r in self.failures.items()},
                "bytes": len(self.files) * self.record,
            }
            # The description first, then the pixels: a kill between the two leaves a
            # description without data (read as "not built"), never data nothing describes.
            write_json_durably(meta_path, meta)
            os.replace(tmp, data)
        except OSError as exc:  # disk full, read-only, no permission
            for leftover in (tmp, meta_path, temporary(folder, meta_path.name)):
                with contextlib.suppress(OSError):
                    leftover.unlink()
            raise DataError(
                f"cannot write the decoded-image cache in {folder} ({exc.strerror or exc}): "
                "free space there, point IMGCLF_CACHE at another disk, or set "
                "data.cache=memory (or none)"
            ) from None
        evict(folder, root, keep=key)
        return meta

    def _write_records(self, tmp: Path) -> None:
        blank = bytes(self.record)
        with open(tmp, "wb") as fh:

            def put(i: int, pixels: np.ndarray) -> None:
                fh.seek(i * self.record)
                fh.write(pixels.tobytes())

            self._fill(put)
            # Failed files keep a blank record, so every image sits at index × record bytes.
            for i in self.failures:
                fh.seek(i * self.record)
                fh.write(blank)
            fh.truncate(len(self.files) * self.record)
            fh.flush()
            os.fsync(fh.fileno())

    # -- reading --------------------------------------------------------------------------------

    def read(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images [k, H, W, C] of the readable indices, bool mask [len(indices)])."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        ok = np.array([int(i) not in self.failures for i in indices], dtype=bool)
        wanted = indices[ok]
        if self._array is not None:
            return self._array[wanted], ok
        if self.mode == "disk" and self._fd is None:
            raise ValueError(f"the decoded-image cache of {self.root} is closed")
        if self._fd is not None:
            out = np.empty((len(wanted), *self.size, self.channels), np.uint8)
            for n, i in enumerate(wanted):
                raw = os.pread(self._fd, self.record, int(i) * self.record)
                out[n] = np.frombuffer(raw, np.uint8).reshape(out.shape[1:])
            return out, ok
        images, keep = [], ok.copy()
        for n, i in enumerate(indices):
            if not ok[n]:
                continue
            result = _decode(self.root / self.files[i], self.size, self.channels)
            if isinstance(result, str):
                self.failures[int(i)] = result
                keep[n] = False
            else:
                images.append(result)
        stacked = np.stack(images) if images else np.zeros((0, *self.size, self.channels), np.uint8)
        return stacked, keep

    def close(self) -> None:
        """Close the disk cache file (reads then fail)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


class ImageView:
    """A split's images as a lazy uint8 array [N, H, W, C]: `len`, `shape`, and indexing by an
    int, a slice or an index array decode (or read from the cache) only what is asked for.

    Indexing raises DataError for an image that cannot be decoded; the training pipeline and
    evaluation read through `read` instead, which leaves such images out.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, store: FileStore, indices: np.ndarray) -> None:
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.indices), *self.store.size, self.store.channels)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, positions: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(readable images, bool mask) for positions within this view."""
        return self.store.read(self.indices[np.asarray(positions, dtype=np.int64)])

    def __getitem__(self, key: Any) -> np.ndarray:
        single = isinstance(key, int | np.integer)
        positions = np.arange(len(self))[key] if not single else np.array([key])
        images, ok = self.read(np.atleast_1d(positions))
        if not ok.all():
            bad = int(self.indices[np.atleast_1d(positions)[~ok][0]])
            raise DataError(f"{self.store.files[bad]}: {self.store.failures[bad]}")
        return images[0] if single else images

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        images = self[:]
        return images if dtype is None else images.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        """Every image decoded, as an array of `dtype` (memory: the whole split)."""
        return self[:].astype(dtype)
