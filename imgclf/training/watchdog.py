"""The watchdog of multi-worker training (`train.collective_timeout`): a thread that ends the
process, with every thread's stack in a file, when no training step completes in time."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

# The watchdog of every fit_multiworker (`configure_watchdog`): its deadline, where the stacks go,
# and how the run is marked failed (the chief's run directory's state).
WATCHDOG: dict[str, Any] = {"seconds": None, "stacks": None, "fail": None}


def configure_watchdog(seconds: float | None, stacks: Path | None, fail: Any = None) -> None:
    """Set the watchdog of the next multi-worker fits: `seconds` without a completed step ends
    the process (None: no watchdog); `stacks`: the file for every thread's stack (None: the
    system's temporary folder); `fail(reason)`: records the run as failed first."""
    WATCHDOG.update(seconds=seconds, stacks=stacks, fail=fail)


class Watchdog:
    """A thread that ends the process when no training step completes for `seconds`: a
    collective (all-reduce) waiting on a worker that hung or died silently blocks inside
    TensorFlow, where no Python exception can reach it. It writes every thread's stack
    (`dump_stacks`), records the run as failed (`fail`), prints one line and exits with 2.
    One thread for the whole fit; TensorFlow's per-collective timeout
    (CommunicationOptions.timeout_seconds) would start a thread per collective, which sleeps
    the whole timeout."""

    def __init__(
        self, seconds: float | None, stacks: Path | None, fail: Any = None, what: str = ""
    ) -> None:
        import threading

        self.seconds, self.stacks, self.fail = seconds, stacks, fail
        # The reason's start (default: a training step that never completed).
        self.what = what or (
            f"CollectiveTimeout: no training step completed in {seconds:g} s "
            "(train.collective_timeout): a worker hung, died silently or is far slower"
            if seconds
            else ""
        )
        self.last = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="imgclf-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self.beat()
        if self.seconds:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()

    def beat(self) -> None:
        """A step completed."""
        import time

        self.last = time.monotonic()

    def _watch(self) -> None:
        import sys
        import time

        while not self.done.wait(min(5.0, self.seconds / 10)):
            if time.monotonic() - self.last > self.seconds:
                path = dump_stacks(self.stacks)
                reason = f"{self.what}; every thread's stack: {path}"
                if self.fail is not None:
                    with contextlib.suppress(Exception):  # the exit below matters more
                        self.fail(reason)
                print(f"error: {reason}", file=sys.stderr, flush=True)
                os._exit(2)  # the main thread is blocked inside TensorFlow: end the process


def dump_stacks(path: Path | None) -> Path:
    """Every thread's Python stack (`faulthandler`) written to `path` (default: a new file in
    the system's temporary folder named by worker and process); returns the path."""
    import faulthandler
    import tempfile

    from imgclf.training.cluster import describe, worker_index

    name = f"imgclf-stacks-worker{worker_index()}-{os.getpid()}.txt"
    path = Path(path) if path is not None else Path(tempfile.gettempdir()) / name
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{describe()} (pid {os.getpid()}), every thread:\n")
        fh.flush()
        faulthandler.dump_traceback(file=fh, all_threads=True)
    return path
