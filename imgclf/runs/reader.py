"""`Run`: the one reader of what a run directory holds."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from imgclf.runs.files import read_config, read_json, read_labels
from imgclf.runs.history import HistoryRow, read_history
from imgclf.runs.layout import is_run_dir
from imgclf.runs.manifest import IntegrityError, verify_manifest
from imgclf.runs.names import (
    CONFIG,
    DATA_REPORT,
    DIAGNOSTICS,
    EXPORTS,
    HISTORY,
    LR_FINDER,
    MANIFEST,
    METRICS,
    MODEL_CARD,
    OOD,
)
from imgclf.runs.records import ExportRecord, MetricsRecord, check


class Run:
    """A read-only view of a run directory: every file a run can hold, read on first use.

    Missing optional files read as None (metrics, exports, diagnostics, data report); a file
    that exists but is unreadable raises (ValueError/OSError from the JSON or YAML reader).
    Reading here never checks the manifest, except `detector_file` (the OOD detector, which
    switches a warning on): loading a *model* does (`verify_manifest`).
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
        """metrics.json (held-out test set), or None for a run stopped before evaluation.
        Raises ValueError when it is malformed or has the wrong shape (`records`)."""
        metrics = self.optional_json(METRICS)
        return None if metrics is None else check(MetricsRecord, metrics, self.file(METRICS))

    def thresholds(self, labels: list[str]) -> Any:
        """A multi-label run's per-label thresholds (metrics.json `multilabel.per_label`),
        float64 [K] in the order of `labels`, or None for a single-label run."""
        import numpy as np

        metrics = self.metrics or {}
        per_label = (metrics.get("multilabel") or {}).get("per_label")
        if metrics.get("task") != "multilabel" or not isinstance(per_label, dict):
            return None
        return np.array([float(per_label[name]["threshold"]) for name in labels])

    @cached_property
    def exports(self) -> dict[str, Any]:
        """exports.json ({} when nothing was exported). Raises ValueError when it is malformed
        or has the wrong shape (`records`)."""
        exports = self.optional_json(EXPORTS)
        return {} if exports is None else check(ExportRecord, exports, self.file(EXPORTS))

    @cached_property
    def diagnostics(self) -> dict[str, Any] | None:
        """diagnostics.json, or None when the run recorded none."""
        return self.optional_json(DIAGNOSTICS)

    @cached_property
    def lr_finder(self) -> list[dict[str, Any]]:
        """lr_finder.json's range tests, one per phase (empty without `learning_rate: auto`)."""
        record = self.optional_json(LR_FINDER)
        return list(record.get("phases") or []) if isinstance(record, dict) else []

    @cached_property
    def data_report(self) -> dict[str, Any] | None:
        """data_report.json, or None."""
        return self.optional_json(DATA_REPORT)

    @cached_property
    def model_card(self) -> str | None:
        """model_card.md, or None."""
        card = self.path / MODEL_CARD
        return card.read_text(encoding="utf-8") if card.is_file() else None

    def detector_file(self) -> Path | None:
        """ood.npz (the out-of-distribution detector), verified against the manifest, or None
        when the run has none (trained with train.ood false, or before imgclf had it). The
        manifest and metrics.json say which, so deleting ood.npz cannot switch the warning off
        silently.

        Raises IntegrityError when ood.npz differs from the manifest, or is missing while the
        manifest lists it or the verified metrics.json records a fitted detector."""
        path = self.path / OOD
        listed = self._manifest_files()
        if not path.is_file() and OOD not in listed:
            if METRICS in listed and self._metrics_say_detector():
                raise IntegrityError(
                    f"{path} is missing, but the run's {METRICS} records an OOD detector; "
                    "refusing to load without it. Restore it, or re-train the run"
                )
            return None
        verify_manifest(self.path, OOD)  # names a missing or changed file in one line
        return path

    def _manifest_files(self) -> dict[str, Any]:
        """The manifest's file table ({} when it cannot be read: verify_manifest says why)."""
        try:
            files = read_json(self.path / MANIFEST).get("files", {})
        except (OSError, ValueError, AttributeError):
            return {}
        return files if isinstance(files, dict) else {}

    def _metrics_say_detector(self) -> bool:
        """True when the run's verified metrics.json records a fitted detector (a threshold)."""
        verify_manifest(self.path, METRICS)
        section = read_json(self.path / METRICS).get("ood") or {}
        return isinstance(section, dict) and "threshold" in section
