"""One training job at a time per runs folder, run as a child process: `python -m imgclf.train
--config JOB.yaml --out RUN -q`, exactly what a user would type.

Training never runs inside the app's own process: it changes process-wide TensorFlow state that
the served models share (the dtype policy, seeds, op determinism, which cannot be switched back),
a native crash in training would take the whole app down, and its memory would never be given
back. The page follows the child through the run directory (history.csv is rewritten after every
epoch) and through a small job file, `<runs root>/.jobs/job.json`, so the job survives page
switches, browser reloads and a restart of the app. **Cancel** terminates the child's process
group; the run directory is left as it was, without a manifest (an interrupted run).

Jobs can also be queued (`enqueue`: the Lessons page trains a pair or triple this way): the
configs wait in `<runs root>/.jobs/queue.json` and start one at a time, in order, each as soon as
the one before has ended (done, failed or cancelled); a thread of the app server starts them, and
`advance` (called by every page that shows the job) picks the queue up after a restart. Cancel
stops the running job and empties the queue.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imgclf import runs
from imgclf.config import dump_config
from imgclf.infra import bounded
from imgclf.infra.processes import alive, identity
from imgclf.training.progress import duration
from imgclf.training.transfer import plan_phases
from imgclf.ui.job_queue import JobQueue

JOBS = ".jobs"  # hidden: the run list skips it
JOB_FILE = "job.json"
CANCEL_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long


class JobBusy(RuntimeError):
    """A training job is already running in this runs folder."""


@dataclass
class JobState:
    """What the page shows about the current (or last) job; a snapshot, safe to keep."""

    status: str = "idle"  # idle | running | done | failed | cancelled
    name: str = ""
    run_dir: str | None = None
    max_epochs: int = 0
    pid: int | None = None
    process: dict[str, Any] = field(default_factory=dict)  # processes.identity of the child
    log: str | None = None
    error: str | None = None
    started: float = 0.0
    finished: float = 0.0
    rows: list[runs.HistoryRow] = field(default_factory=list)
    # The run's time-left estimate (progress.json, training.estimate) while it trains, else None.
    progress: dict[str, Any] | None = None

    @property
    def stage(self) -> str:
        """loading data | training | evaluating and exporting (from the run directory)."""
        if self.run_dir and (Path(self.run_dir) / runs.METRICS).is_file():
            return "evaluating and exporting"
        return "training" if self.rows else "loading data"

    @property
    def alive(self) -> bool:
        """Whether the job's process still runs (not merely: some process has its id)."""
        # Local: the child is always this machine's (a changed host name means it is gone).
        return self.pid is not None and alive(self.process or {"pid": self.pid}, local=True)

    @property
    def fraction(self) -> float:
        """Progress 0..1 by epochs (early stopping may end sooner: done is 1)."""
        if self.status == "done":
            return 1.0
        return min(1.0, len(self.rows) / self.max_epochs) if self.max_epochs else 0.0


def _read_progress(path: Path) -> dict[str, Any] | None:
    """progress.json as written by the training process, or None (not yet, gone, unreadable)."""
    try:
        data = runs.read_json(path)
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def estimate_text(progress: dict[str, Any] | None) -> str:
    """'about 4 min 10 s left (ends around 14:32)' from progress.json, or ''."""

    if not progress:
        return ""
    left, ends = progress.get("remaining_s"), progress.get("ends_at")
    if not isinstance(left, int | float) or not isinstance(ends, int | float):
        return ""
    at = time.strftime("%H:%M", time.localtime(ends))
    return f"at most about {duration(left)} left (ends around {at})"


def _last_error(log: str | None) -> str | None:
    """The child's one-line `error: ...`, else its last line."""
    if not log or not Path(log).is_file():
        return None
    lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    return errors[-1] if errors else (lines[-1] if lines else None)


def train_command(config_file: Path, run_dir: Path) -> list[str]:
    """The child a job runs: `python -m imgclf.train --config FILE --out RUN -q`."""
    return [
        sys.executable,
        "-m",
        "imgclf.train",
        "--config",
        str(config_file),
        "--out",
        str(run_dir),
        "-q",
    ]


class TrainingJob:
    """Starts, follows and cancels the training child process of one runs folder."""

    def __init__(
        self, runs_root: str | Path, command: Callable[[Path, Path], list[str]] | None = None
    ) -> None:
        self.root = Path(runs_root)
        # argv of the child for (config file, run directory); the job tests pass a stub trainer
        self.command = command or train_command
        self.queue = JobQueue(self.root / JOBS)
        self._lock = threading.RLock()
        self._held = False  # this object holds the file lock (under self._lock)
        self._procs: dict[int, subprocess.Popen] = {}  # children this server started
        self._drainer: threading.Thread | None = None  # starts the queued jobs one by one

    @property
    def _file(self) -> Path:
        return self.root / JOBS / JOB_FILE

    @contextlib.contextmanager
    def _exclusive(self):
        """Hold this server's lock and a file lock on `.jobs/` (other app servers on the same
        runs folder), so checking for a running job and starting one is a single step."""
        with self._lock:
            if self._held:  # re-entered by this thread (start -> running -> snapshot)
                yield
                return
            folder = self.root / JOBS
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / ".lock").open("a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                self._held = True
                try:
                    yield
                finally:
                    self._held = False
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self) -> JobState:
        try:
            data = bounded.read_json(self._file)
            data.pop("rows", None)
            data.pop("progress", None)
            return JobState(**data)
        except (OSError, ValueError, TypeError):
            return JobState()

    def _write(self, state: JobState) -> None:
        data = asdict(state)
        data.pop("rows")
        data.pop("progress")
        runs.write_json(self._file, data)

    def _finish(self, state: JobState) -> JobState:
        """Record how a job whose process is gone ended."""
        proc = self._procs.pop(state.pid or -1, None)
        code = proc.wait() if proc is not None else None
        complete = state.run_dir is not None and runs.read_state(state.run_dir).complete
        if code == 0 or (code is None and complete):
            state.status = "done"
        else:
            state.status = "failed"
            state.error = _last_error(state.log) or f"the training process ended (exit {code})"
        state.finished = time.time()
        self._write(state)
        return state

    def snapshot(self) -> JobState:
        """The current job, its history so far, and how it ended once it has."""
        state = self._read()
        if state.status == "running" and not state.alive:
            with self._exclusive():  # another server may have finished it and started another
                state = self._read()
                if state.status == "running" and not state.alive:
                    state = self._finish(state)
        if state.run_dir:
            state.rows = runs.read_history(Path(state.run_dir) / runs.HISTORY)
            if state.status == "running":
                state.progress = _read_progress(Path(state.run_dir) / runs.PROGRESS)
        return state

    @property
    def running(self) -> bool:
        """Whether a job is running now."""
        return self.snapshot().status == "running"

    def start(self, config: Any) -> JobState:
        """Start training `config` (a validated Config) in a child process; JobBusy if one runs.

        The run directory is chosen here (`<runs root>/<name>-<time>`), so the page can follow
        it from the first epoch. Returns the new job's state.
        """
        with self._exclusive():
            if self.running:
                raise JobBusy(
                    f"a training job ({self._read().name}) is already running in {self.root}; "
                    "wait for it to finish or cancel it"
                )
            state = self._spawn(config)
            self._write(state)
        return state

    def _spawn(self, config: Any) -> JobState:
        max_epochs = sum(phase.train.epochs for phase in plan_phases(config))  # before a child
        stamp = time.strftime("%Y%m%d-%H%M%S")
        jobs = self.root / JOBS
        run_dir = self.root / f"{config.name}-{stamp}"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = self.root / f"{config.name}-{stamp}-{n}"
        config_file = jobs / f"{run_dir.name}.yaml"
        log = jobs / f"{run_dir.name}.log"
        runs.write_text(config_file, dump_config(config))
        command = self.command(config_file, run_dir)
        with log.open("wb") as out:
            # A session of its own: Cancel stops the child and anything it started.
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._procs[proc.pid] = proc
        return JobState(
            status="running",
            name=config.name,
            run_dir=str(run_dir),
            max_epochs=max_epochs,
            pid=proc.pid,
            process=identity(proc.pid),
            log=str(log),
            started=time.time(),
        )

    def enqueue(self, configs: list[Any]) -> list[str]:
        """Queue validated Configs to train one after the other (after any running job);
        returns the queue's names. Each config is saved under `.jobs/` at once."""
        with self._exclusive():
            self.queue.add(configs)
        self.advance()
        with self._lock:
            if self._drainer is None or not self._drainer.is_alive():
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
        return self.queue.names()

    def queued(self) -> list[str]:
        """The names of the configs waiting to be trained, in order."""
        return self.queue.names()

    def advance(self) -> JobState | None:
        """Start the next queued config if no job runs; its state, or None. A queued config
        that no longer loads is dropped, recorded as a failed job."""
        with self._exclusive():
            if self.running:
                return None
            while (item := self.queue.pop()) is not None:
                name, config = item
                if isinstance(config, Exception):  # a queued config that no longer loads
                    failed = JobState(status="failed", name=name, error=str(config))
                    failed.started = failed.finished = time.time()
                    self._write(failed)
                    continue
                state = self._spawn(config)
                self._write(state)
                return state
        return None

    def _drain(self) -> None:
        """The server's queue thread: wait for each job to end, then start the next."""
        while True:
            self.wait()
            if not self.queue.names():
                return
            self.advance()  # None when another server of this folder started it first

    def cancel(self) -> JobState:
        """Stop the running job (SIGTERM to its process group, SIGKILL after CANCEL_GRACE_S) and
        empty the queue; the run directory stays as it is, an interrupted run. Returns the final
        state."""
        with self._exclusive():
            self.queue.clear()
            state = self._read()
            if state.status != "running" or state.pid is None:
                return state
            if not state.alive:  # gone already (and its id may now be another process's)
                return self._finish(state)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(state.pid, signal.SIGTERM)
            deadline = time.monotonic() + CANCEL_GRACE_S
            while state.alive and time.monotonic() < deadline:
                proc = self._procs.get(state.pid)
                if proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=0.2)
                else:
                    time.sleep(0.2)
            if state.alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(state.pid, signal.SIGKILL)
            proc = self._procs.pop(state.pid, None)
            if proc is not None:
                proc.wait()
            state.status, state.error, state.finished = "cancelled", None, time.time()
            self._write(state)
        return state

    def wait(self, poll_s: float = 0.5, timeout: float | None = None) -> JobState:
        """Block until the job ends (tests and scripts); returns the final state. With a
        `timeout` (seconds) the state is returned even if still running."""
        start = time.monotonic()
        while True:
            state = self.snapshot()
            if state.status != "running":
                return state
            if timeout is not None and time.monotonic() - start > timeout:
                return state
            proc = self._procs.get(state.pid or -1)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=poll_s)
            else:
                time.sleep(poll_s)
