"""One training job at a time per app server, run in a background thread so the pages stay
responsive; the page polls `TrainingJob.snapshot()` for live progress.

The job calls the same `train()` as `imgclf-train`. A config or data error ends it with that
error's one line (no traceback); any other exception ends it with its type and message.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imgclf.errors import UserError


class JobBusy(RuntimeError):
    """A training job is already running on this server."""


@dataclass
class JobState:
    """What the page shows about the current (or last) job; a copy, safe to read."""

    status: str = "idle"  # idle | running | done | failed
    name: str = ""
    stage: str = ""  # loading data | training | evaluate | export
    run_dir: str | None = None
    max_epochs: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    started: float = 0.0
    finished: float = 0.0

    @property
    def fraction(self) -> float:
        """Progress 0..1 by epochs (early stopping may end sooner: done is 1)."""
        if self.status == "done":
            return 1.0
        return min(1.0, len(self.rows) / self.max_epochs) if self.max_epochs else 0.0


class TrainingJob:
    """Runs `train(config)` in a thread; at most one at a time (`start` raises JobBusy)."""

    def __init__(self, trainer: Callable[..., Path] | None = None) -> None:
        self._lock = threading.Lock()
        self._state = JobState()
        self._thread: threading.Thread | None = None
        self._trainer = trainer

    def snapshot(self) -> JobState:
        """A copy of the current state."""
        with self._lock:
            return replace(self._state, rows=[dict(r) for r in self._state.rows])

    @property
    def running(self) -> bool:
        """Whether a job is running now."""
        with self._lock:
            return self._state.status == "running"

    def start(self, config: Any, runs_root: str | Path) -> None:
        """Start training `config` (a validated imgclf Config) into `runs_root`."""
        with self._lock:
            if self._state.status == "running":
                raise JobBusy(
                    f"a training job ({self._state.name}) is already running on this server; "
                    "wait for it to finish"
                )
            self._state = JobState(
                status="running", name=config.name, stage="loading data", started=time.time()
            )
        self._thread = threading.Thread(
            target=self._run, args=(config, Path(runs_root)), name="imgclf-train", daemon=True
        )
        self._thread.start()

    def wait(self, timeout: float | None = None) -> JobState:
        """Block until the job ends (tests and scripts); returns the final state."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.snapshot()

    def _progress(self, event: str, info: dict[str, Any]) -> None:
        with self._lock:
            if event == "start":
                self._state.run_dir = info["run_dir"]
                self._state.max_epochs = int(info["max_epochs"])
                self._state.stage = "training"
            elif event == "epoch":
                self._state.rows.append(info)
            elif event == "stage":
                self._state.stage = info["stage"]

    def _run(self, config: Any, runs_root: Path) -> None:
        trainer = self._trainer
        if trainer is None:
            from imgclf.train import train as trainer
        error = None
        run_dir = None
        try:
            run_dir = trainer(config, verbose=0, runs_root=runs_root, progress=self._progress)
        except UserError as exc:
            error = str(exc)
        except Exception as exc:  # the page shows one line; the traceback goes to the log
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._state.status = "failed" if error else "done"
            self._state.error = error
            if run_dir is not None:
                self._state.run_dir = str(run_dir)
            self._state.finished = time.time()
