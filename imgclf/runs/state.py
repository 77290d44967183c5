"""The state of a run: `running`, `complete`, `interrupted` or `failed` (with a one-line reason),
in state.json, written atomically at every transition. `complete` is written only after the
manifest, so a run is complete only when everything it made is in place and listed.

A run killed outright (SIGKILL, a power cut) cannot write its state: it stays `running` with the
process id (and boot and start time) of its trainer, and is read as `interrupted` once that
process is gone (`imgclf.infra.processes`). A run written
by an older imgclf (no state.json) is `complete` when it has a manifest, else `interrupted`.
Everything that reads runs (predict, export, compare, the app) uses `require_complete` or shows
the state; `imgclf-train --resume RUN` continues an interrupted (or failed) run.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from imgclf.infra.bounded import clip
from imgclf.infra.errors import UserError
from imgclf.infra.processes import alive, identity
from imgclf.runs.files import read_json, write_json
from imgclf.runs.layout import point_latest
from imgclf.runs.manifest import verify_manifest
from imgclf.runs.names import CONFIG, LATEST, MANIFEST, RESUME, STATE
from imgclf.runs.records import StateRecord, check

RUNNING, COMPLETE, INTERRUPTED, FAILED = "running", "complete", "interrupted", "failed"
STATES = (RUNNING, COMPLETE, INTERRUPTED, FAILED)


class RunNotComplete(UserError):
    """A run that is running, was interrupted or failed: nothing of it may be used yet."""


@dataclass(frozen=True)
class RunState:
    """What state.json says, with a dead trainer's `running` read as `interrupted`."""

    state: str
    reason: str | None = None
    pid: int | None = None
    updated: float | None = None
    host: str | None = None

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE


def set_state(run_dir: str | Path, state: str, reason: str | None = None) -> None:
    """Record `state` (one of STATES) and its one-line `reason` for `run_dir`, atomically."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    record = {
        "state": state,
        "reason": reason.splitlines()[0][:500] if reason else None,
        **identity(),  # pid, host, boot, process start: whether the writer lives (processes.py)
        "updated": time.time(),
    }
    write_json(Path(run_dir) / STATE, record)


def read_state(run_dir: str | Path) -> RunState:
    """The run's state. Never raises: an unreadable state.json reads as `failed`."""
    run_dir = Path(run_dir)
    path = run_dir / STATE
    if not path.exists():  # an older imgclf
        if (run_dir / MANIFEST).is_file():
            return RunState(COMPLETE)
        return RunState(INTERRUPTED, "no state.json and no manifest.json")
    try:
        data = check(StateRecord, read_json(path), path)  # bounded, then its shape
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc).removeprefix(f"{path}: ")
        return RunState(FAILED, clip(f"{STATE} is unreadable: {why}", 200))
    state, pid, updated = data["state"], data.get("pid"), data.get("updated")
    if state == RUNNING and not alive(data):
        return RunState(INTERRUPTED, "the training process stopped (killed?)", pid, updated)
    reason = data.get("reason")
    return RunState(state, clip(reason) if reason else None, pid, updated, data.get("host"))


def in_run(folder: str | Path) -> bool:
    """True if `folder` is (or was being made into) a run directory."""
    folder = Path(folder)
    return any((folder / name).exists() for name in (STATE, MANIFEST, CONFIG))


def check_run(run_dir: str | Path, *names: str) -> None:
    """Before loading anything of a run: it must be complete, and the files (or folders)
    `names` must match its manifest. Raises RunNotComplete or IntegrityError, one line each."""

    require_complete(run_dir)
    verify_manifest(run_dir, *names)


def resume_command(run_dir: str | Path) -> str:
    """The command that continues `run_dir`."""
    return f"imgclf-train --resume {run_dir}"


def require_complete(run_dir: str | Path) -> None:
    """Raise RunNotComplete, one line naming the run, its state and what to do, unless the run
    is complete; then its manifest must exist (IntegrityError from verify_manifest otherwise)."""
    state = read_state(run_dir)
    if state.complete:
        return
    why = f" ({state.reason})" if state.reason else ""
    if state.state == RUNNING:
        raise RunNotComplete(f"{run_dir} is still training{why}; wait until it is complete")
    fix = f"resume it with `{resume_command(run_dir)}`"
    raise RunNotComplete(f"{run_dir} is {state.state}{why}, not complete; {fix}")


def tidy_completed(root: str | Path) -> list[Path]:
    """Finish what a kill between a run's `complete` and its tidy step left undone, for the
    runs directly under `root`: remove their `.resume/` folders (the full weights and
    optimizer state), and point `latest` at the newest complete run when it was left on an
    older one. Returns the runs tidied. Called by `imgclf-train` before anything else."""
    root = Path(root)
    if not root.is_dir():
        return []
    tidied = []
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []  # a runs folder that cannot be listed: nothing to tidy, nothing to say
    for run in folders:
        if (run / RESUME).is_dir() and read_state(run).complete:
            shutil.rmtree(run / RESUME, ignore_errors=True)
            tidied.append(run)
    latest = root / LATEST
    newest = max(tidied, key=_stamp, default=None)
    if newest is not None and (latest.is_symlink() or not latest.exists()):
        current = latest.resolve() if latest.exists() else None
        if current is None or _stamp(newest) > _stamp(current):
            point_latest(newest)
    return tidied


def _stamp(run: Path) -> float:
    """When `run` last changed state (0 when it has no state.json)."""
    try:
        return (run / STATE).stat().st_mtime
    except OSError:
        return 0.0
