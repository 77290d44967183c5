"""Commands run in a fresh process forked from one that has already imported TensorFlow.

A fault test needs its own process (a failpoint kills it with SIGKILL, a signal ends it), but
not a fresh interpreter: `python -m imgclf.train` pays TensorFlow's import (about 5 s of CPU)
before the first line of imgclf runs, ten times in test_faults.py. `multiprocessing`'s
forkserver (Python's standard library) imports TensorFlow, Keras and imgclf's training modules
once per pytest worker, before any TensorFlow thread exists, and forks a child for each
command; the child runs the console script's `main(argv)` exactly as its entry point does.
A test whose point is a new interpreter (the console scripts' smoke tests, "never imports
imgclf", the JAX backend) still spawns one.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Imported once in the forkserver (the modules `train()` and the exporters import lazily).
PRELOAD = [
    "tensorflow",
    "keras",
    "imgclf.train",
    "imgclf.training.phases",
    "imgclf.training.finish",
    "imgclf.export.cli",
    "imgclf.export.saved_model",
]
COMMANDS = {"imgclf-train": "imgclf.train", "imgclf-export": "imgclf.export.cli"}

_context: multiprocessing.context.ForkServerContext | None = None


def _forkserver() -> multiprocessing.context.ForkServerContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(command: str, argv: list[str], env: dict[str, str], log: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(out, 2)
    if command in COMMANDS:
        sys.exit(importlib.import_module(COMMANDS[command]).main(argv))
    sys.argv = ["-c", *argv]  # as `python -c command *argv` sees them
    exec(compile(command, "<forked>", "exec"), {"__name__": "__main__"})


def start(command: str, *args: str | Path, env: dict[str, str] | None = None):
    """Start `command` (a console script's name from COMMANDS, or Python source run as
    `python -c` would) with `args` in a forked child; returns (the `multiprocessing.Process`,
    the path of its combined stdout and stderr, a temporary file the caller removes)."""
    handle, log = tempfile.mkstemp(prefix="forked-", suffix=".log")
    os.close(handle)
    environment = dict(os.environ if env is None else env)
    process = _forkserver().Process(
        target=_child, args=(command, [str(a) for a in args], environment, log)
    )
    process.start()
    return process, Path(log)


def run(
    command: str, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `command` with `args` in a forked child to its end (killed after `timeout` s).
    The returncode is the child's exit status, negative for a signal, as `subprocess` gives
    it; stdout and stderr both hold the child's combined output."""
    process, log = start(command, *args, env=env)
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
    output = log.read_text(errors="replace")
    log.unlink()
    return subprocess.CompletedProcess([command, *map(str, args)], process.exitcode, output, output)
