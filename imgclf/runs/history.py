"""history.csv: one row per epoch, rewritten after every epoch."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from imgclf.runs.files import write_text


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
