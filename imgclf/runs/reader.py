"""`Run`: the one reader of what a run directory holds."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from imgclf.runs.files import read_config, read_json, read_labels
from imgclf.runs.history import HistoryRow, read_history
from imgclf.runs.layout import is_run_dir
from imgclf.runs.names import (
    CONFIG,
    DATA_REPORT,
    DIAGNOSTICS,
    EXPORTS,
    HISTORY,
    METRICS,
    MODEL_CARD,
)


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
