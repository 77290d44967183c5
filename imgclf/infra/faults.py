"""Failpoints for fault-injection tests: with IMGCLF_FAULT=<name> (or <name>:<n> for its n-th
time), the process kills itself with SIGKILL at that point, as a power cut or `kill -9` would,
at a moment a test can name exactly. Unset (always, outside tests), a failpoint does nothing.

    setup        after a new run's config.yaml, before its other first files and its state
    epoch        after history.csv has the epoch's row (epoch:2 = after the second epoch)
    step         after a multi-worker training step (step:5 = after this process's fifth)
    backup       after a resume backup is complete (backup:2 = the second backup of the run)
    model        after model.keras is in place
    saved_model  while the SavedModel is written (its temporary folder exists)
    manifest     after everything but the manifest is written
    export       after an export's artifact is in place, before the manifest lists it
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "IMGCLF_FAULT"
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Die here (SIGKILL) if IMGCLF_FAULT names this point (and this is its n-th time)."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
