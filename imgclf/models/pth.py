"""Read the tensors of a legacy PyTorch `.pth` state dict without torch and without ever running
pickled code.

A `.pth` file is a pickle, and `pickle.load` of one can call any Python function the file names
(the well-known attack on shared checkpoints). `read_state_dict` uses a restricted unpickler that
resolves only the names a plain state dict needs, the tensor-rebuild function, the storage types
and `collections.OrderedDict`, and refuses any other global with a `PthError` *before* anything
is called. This is what `torch.load(weights_only=True)` does; torch is not a dependency here.

The legacy (pre-zip, torch < 1.6) layout, in order: a pickled magic number, a pickled protocol
version, a pickled system-info dict, the pickled state dict whose tensors refer to storages by
persistent id `('storage', StorageType, key, location, numel[, view])`, a pickled list of storage
keys, then for each key an 8-byte little-endian element count and the raw little-endian data.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization's MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
MAX_FILE_BYTES = 2 * 1024**3  # a state dict bigger than this is not one imgclf expects

# torch storage type name -> numpy dtype of its little-endian raw data
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class PthError(ValueError):
    """A `.pth` file that is not a plain legacy state dict, or that names a forbidden global."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None  # filled after the state dict pickle is read


@dataclass
class _TensorRef:
    """What `_rebuild_tensor_v2` was asked to build; materialised once the storages are read."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise PthError(f"tensor refers to storage {self.storage.key!r}, which is not stored")
        if not self.shape:
            return data[self.offset : self.offset + 1].reshape(()).copy()
        # The last element the view touches must lie inside the storage.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if self.offset < 0 or any(s < 0 for s in self.stride) or last >= len(data):
            raise PthError(f"tensor view {self.shape} runs outside its storage of {len(data)}")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.shape,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, hooks=None, *_):
    """Stand-in for torch._utils._rebuild_tensor_v2: records the view, builds nothing yet."""
    if not isinstance(storage, _Storage):
        raise PthError("a tensor's storage is not a storage reference")
    return _TensorRef(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of a plain state dict; everything else is refused."""

    def __init__(self, fh: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(fh)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise PthError(
            f"refused to load: it names the Python global {module}.{name}, which a plain "
            "state dict never needs (a pickle can run code through it); only tensors, storages "
            "and OrderedDict are allowed"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise PthError(f"unexpected persistent id {str(pid)[:80]!r} (not a tensor storage)")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise PthError(f"storage {key!r} has no known storage type")
        if len(pid) > 5 and pid[5] is not None:
            raise PthError(f"storage {key!r} is a view of another storage (not supported)")
        if key not in self._storages:
            self._storages[key] = _Storage(key, storage_type.dtype, int(numel))
        return self._storages[key]


def _load(fh: BinaryIO, storages: dict[str, _Storage]) -> Any:
    try:
        return _RestrictedUnpickler(fh, storages).load()
    except PthError:
        raise
    except Exception as exc:  # truncated data, bad opcodes, wrong arguments to a class
        raise PthError(f"not a readable pickle ({type(exc).__name__}: {exc})") from None


def read_state_dict(source: str | Path | bytes) -> dict[str, np.ndarray]:
    """The tensors of a legacy `.pth` state dict as NumPy arrays, by key, in file order.

    Args:
        source: a path to the file, or its bytes.

    Returns:
        {key: C-contiguous array} with the file's shapes and dtypes (float32 for weights, int64
        for BatchNorm's `num_batches_tracked`).

    Raises:
        PthError: the file is not a legacy torch state dict (e.g. torch >= 1.6's zip format), is
            truncated, or names any Python global besides the tensor-rebuild function, the
            storage types and OrderedDict. Nothing the file names is ever called.
        OSError: the file cannot be read.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise PthError(f"{len(data):,} bytes is larger than a state dict imgclf reads")
    if data[:2] == b"PK":
        raise PthError(
            "this is a zip-format checkpoint (torch >= 1.6); only the legacy format is read"
        )
    fh = io.BytesIO(data)
    storages: dict[str, _Storage] = {}
    if _load(fh, storages) != LEGACY_MAGIC:
        raise PthError("not a legacy PyTorch checkpoint (wrong magic number)")
    if _load(fh, storages) != LEGACY_PROTOCOL:
        raise PthError(f"unsupported checkpoint protocol (expected {LEGACY_PROTOCOL})")
    info = _load(fh, storages)
    if not isinstance(info, dict) or not info.get("little_endian", False):
        raise PthError("the checkpoint was written on a big-endian machine (not supported)")
    state = _load(fh, storages)
    if not isinstance(state, dict):
        raise PthError(f"the checkpoint holds a {type(state).__name__}, not a state dict")
    keys = _load(fh, storages)
    if not isinstance(keys, list):
        raise PthError("the storage key list is missing")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise PthError(f"storage {key!r} is stored but no tensor uses it")
        count = int.from_bytes(fh.read(8), "little")
        nbytes = count * storage.dtype.itemsize
        raw = fh.read(nbytes)
        if count != storage.numel or len(raw) != nbytes:
            raise PthError(f"storage {key!r} is truncated or does not match its declared size")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    tensors: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise PthError(f"entry {name!r} is a {type(value).__name__}, not a tensor")
        tensors[str(name)] = value.materialise()
    return tensors
