"""Who wrote a file that says "process N is working on this" (a run's state.json, the app's
job.json), and whether that process still lives.

A process id alone is not enough: ids are reused, after a reboot at once and on a busy machine
within minutes, so a dead trainer's id may belong to some other program by the time anyone
looks. The record therefore also holds the boot (Linux `/proc/sys/kernel/random/boot_id`) and
the process's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot); a live
process with the same id but another boot or start time is not the one that wrote the record.
Where /proc is missing (macOS) only the id is compared.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def identity(pid: int | None = None) -> dict[str, Any]:
    """{"pid", "host", "boot", "start"} of process `pid` (default: this one), to store in a
    record; "boot" and "start" are None where /proc cannot tell."""
    pid = os.getpid() if pid is None else pid
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "start": _start_ticks(pid),
    }


def alive(record: dict[str, Any], local: bool = False) -> bool:
    """Whether the process a record names (see `identity`) is still running: False when its id
    is gone, is a zombie, or now belongs to another process. A process of another host cannot
    be checked from here: True (it may still run), or False with `local` (for records that only
    ever name this machine's processes, such as the app's training child)."""
    pid = record.get("pid")
    # 0 and negative ids name process groups (kill(0, 0) succeeds); past 2^31 os.kill overflows.
    if not isinstance(pid, int) or not 0 < pid < 2**31:
        return False
    host = record.get("host")
    if host is not None and host != socket.gethostname():
        return not local
    boot = _boot_id()
    if record.get("boot") and boot and record["boot"] != boot:
        return False  # written before the last reboot
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else: the checks below tell whether it is ours
    with contextlib.suppress(OSError):
        if "zombie" in Path(f"/proc/{pid}/status").read_text().lower():
            return False
    start, recorded = _start_ticks(pid), record.get("start")
    # Another start time: the id was reused by a process started later.
    return recorded is None or start is None or recorded == start
