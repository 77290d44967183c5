"""The run directory: every file name in it, atomic writes, the manifest, and `Run`, the one
reader of what a run wrote.

The run directory is the only contract between training, export, prediction and the app, and
this module is the only place its file names are spelled. Every file is written under a
temporary name in the same directory and moved into place with `os.replace`, so a crash never
leaves a half-written artifact in place of a good one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from imgclf.cache import sha256_file
from imgclf.errors import UserError

CONFIG = "config.yaml"
LABELS = "labels.json"
DATA_REPORT = "data_report.json"
HISTORY = "history.csv"
MODEL = "model.keras"
METRICS = "metrics.json"
EXPORTS = "exports.json"
SAVED_MODEL = "saved_model"
MODEL_CARD = "model_card.md"
MANIFEST = "manifest.json"
DIAGNOSTICS = "diagnostics.json"
TFLITE = "model.tflite"
TFLITE_INT8 = "model_int8.tflite"
ONNX = "model.onnx"
PLOTS = "plots"
CURVES_PLOT = f"{PLOTS}/curves.png"
CONFUSION_PLOT = f"{PLOTS}/confusion.png"
GRADIENTS_PLOT = f"{PLOTS}/gradients.png"
ACTIVATIONS_PLOT = f"{PLOTS}/activations.png"
SAMPLES = "samples"
WORST = "worst"
DEFAULT_ROOT = Path("runs")
LATEST = "latest"


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


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success move it into place atomically.

    Works for files and directories. The temporary name keeps the suffix (Keras checks it). On
    failure the temporary is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the writer creates it (file or directory)
    try:
        yield tmp
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
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write JSON (indented, UTF-8, keys in insertion order)."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_labels(path: str | Path) -> list[str]:
    """The class names of a run directory or a SavedModel directory (index i is output i)."""
    labels = read_json(Path(path) / LABELS)
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{Path(path) / LABELS} must be a JSON list of class names")
    return labels


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's config.yaml as a plain dict (not validated: an older run may predate a key)."""
    import yaml

    data = yaml.safe_load((Path(run_dir) / CONFIG).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


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


def _artifacts(run_dir: Path) -> list[Path]:
    """Every regular file of the run, hidden (temporary) files and symlinks left out."""
    return sorted(
        p
        for p in run_dir.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and p.relative_to(run_dir).as_posix() != MANIFEST
        and not any(part.startswith(".") for part in p.relative_to(run_dir).parts)
    )


def write_manifest(run_dir: str | Path) -> None:
    """Write manifest.json: the SHA-256 and size of every artifact in the run directory.

    Written last, when every artifact is in place (and again after a re-export), so a model
    loaded later can be checked against what training produced (`verify_manifest`).
    """
    run_dir = Path(run_dir)
    files = {
        p.relative_to(run_dir).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in _artifacts(run_dir)
    }
    write_json(run_dir / MANIFEST, {"algorithm": "sha256", "files": files})


class IntegrityError(UserError):
    """An artifact differs from what manifest.json recorded."""


def verify_manifest(run_dir: str | Path, *names: str) -> bool:
    """Check the artifacts `names` (files, or folders such as `saved_model` for everything under
    them) against the run's manifest.json. Returns False when the run has no manifest (written by
    an older imgclf).

    Raises:
        IntegrityError: naming the first file that is missing, unlisted or modified, or a
            manifest that is not valid JSON.
    """
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        files = read_json(manifest_path)["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{manifest_path} is not a valid manifest ({exc})") from None
    for name in names:
        listed = {k: v for k, v in files.items() if k == name or k.startswith(f"{name}/")}
        if not listed:
            raise IntegrityError(
                f"{run_dir / name} is not listed in {MANIFEST}; it was not written by this run"
            )
        # _artifacts of a plain file is empty, so only folders can have unlisted extras.
        on_disk = {p.relative_to(run_dir).as_posix() for p in _artifacts(run_dir / name)}
        extra = sorted(on_disk - set(listed))
        if extra:
            raise IntegrityError(
                f"{run_dir / extra[0]} is not listed in {MANIFEST}: it was added after training; "
                "refusing to load. Remove it, or re-export the run"
            )
        for rel, entry in listed.items():
            path = run_dir / rel
            if not path.is_file():
                raise IntegrityError(f"{path} is missing (listed in {MANIFEST}); refusing to load")
            if path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
                raise IntegrityError(
                    f"{path} does not match its SHA-256 in {MANIFEST} (modified after "
                    "training); refusing to load it. Restore the file, or re-train or re-export"
                )
    return True


# --------------------------------------------------------------------------------------------
# history.csv: one row per epoch, rewritten after every epoch


@dataclass(frozen=True)
class HistoryRow:
    """One epoch of history.csv. Figures are None where the epoch did not record them (e.g. no
    validation); `learning_rate` is the optimiser's rate at the epoch's end, `seconds` its wall
    time."""

    epoch: int
    phase: str  # "train", or "head" / "fine_tune" for the two-phase transfer schedule
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    learning_rate: float | None = None
    seconds: float | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """The field `key`, like a dict's `get` (`default` for an unknown key or a None)."""
        value = getattr(self, key, None)
        return default if value is None else value


HISTORY_FIELDS = tuple(f.name for f in fields(HistoryRow))
# How each figure is written: 6 significant digits; seconds to 1/100.
_HISTORY_FORMAT = {"learning_rate": "{:.6g}", "seconds": "{:.2f}"}


def phase_starts(phases: Sequence[str]) -> list[tuple[int, str]]:
    """(1-based epoch, phase) where each phase after the first begins, e.g. [(6, "fine_tune")]
    (the dashed line of the curves: the static plot and the app's chart)."""
    return [(i + 1, phase) for i, phase in enumerate(phases) if i > 0 and phase != phases[i - 1]]


def _cell(key: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, int | str):
        return value
    return _HISTORY_FORMAT.get(key, "{:.6g}").format(value)


def write_history(path: str | Path, rows: Sequence[HistoryRow]) -> None:
    """Atomically (re)write history.csv with `rows`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(k, v) for k, v in asdict(row).items()} for row in rows)
    write_text(path, buffer.getvalue())


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_history(path: str | Path) -> list[HistoryRow]:
    """history.csv as typed rows ([] when the file is missing). Unknown columns are ignored;
    an unreadable figure is None; a row without an epoch number gets its position."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        rows = []
        for n, raw in enumerate(csv.DictReader(fh), start=1):
            epoch = _number(raw.get("epoch"))
            figures = {k: _number(raw.get(k)) for k in HISTORY_FIELDS[2:]}
            phase = (raw.get("phase") or "train").strip() or "train"
            rows.append(HistoryRow(int(epoch) if epoch is not None else n, phase, **figures))
    return rows


# --------------------------------------------------------------------------------------------
# Run: the one reader


class Run:
    """A read-only view of a run directory: every file a run can hold, read on first use.

    Missing optional files read as None (metrics, exports, diagnostics, data report); a file
    that exists but is unreadable raises (ValueError/OSError from the JSON or YAML reader).
    Reading here never checks the manifest: loading a *model* does (`verify_manifest`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.resolve().name

    def file(self, name: str) -> Path:
        """The path of a run file, e.g. `run.file(runs.METRICS)`."""
        return self.path / name

    def has(self, name: str) -> bool:
        """True if the run holds the file (or folder) `name`."""
        return (self.path / name).exists()

    def optional_json(self, name: str) -> Any:
        """A JSON file of the run, or None when the run has none."""
        return read_json(self.path / name) if (self.path / name).is_file() else None

    @property
    def is_trained(self) -> bool:
        """True if the run holds a trained model and its labels (`is_run_dir`)."""
        return is_run_dir(self.path)

    @cached_property
    def config(self) -> dict[str, Any]:
        """config.yaml as a plain dict ({} when missing)."""
        return read_config(self.path) if self.has(CONFIG) else {}

    @cached_property
    def labels(self) -> list[str]:
        """labels.json: class names, index i is output i."""
        return read_labels(self.path)

    @cached_property
    def history(self) -> list[HistoryRow]:
        """history.csv as typed rows ([] when missing)."""
        return read_history(self.path / HISTORY)

    @cached_property
    def metrics(self) -> dict[str, Any] | None:
        """metrics.json (held-out test set), or None for a run stopped before evaluation."""
        return self.optional_json(METRICS)

    @cached_property
    def exports(self) -> dict[str, Any]:
        """exports.json ({} when nothing was exported)."""
        return self.optional_json(EXPORTS) or {}

    @cached_property
    def diagnostics(self) -> dict[str, Any] | None:
        """diagnostics.json, or None when the run recorded none."""
        return self.optional_json(DIAGNOSTICS)

    @cached_property
    def data_report(self) -> dict[str, Any] | None:
        """data_report.json, or None."""
        return self.optional_json(DATA_REPORT)

    @cached_property
    def model_card(self) -> str | None:
        """model_card.md, or None."""
        card = self.path / MODEL_CARD
        return card.read_text(encoding="utf-8") if card.is_file() else None
