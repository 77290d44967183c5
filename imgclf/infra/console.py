"""Keep TensorFlow's C++ start-up lines off the user's terminal.

Importing TensorFlow prints 8–10 lines from C++ straight to file descriptor 2, before Python's
logging exists: absl's `WARNING: All log messages before absl::InitializeLog() is called are
written to STDERR`, `I0000 … port.cc:153] oneDNN custom operations are on …`,
`I0000 … cudart_stub.cc … Could not find cuda drivers`, and on a machine without a GPU two
error-level ones (`E0000 … failed call to cuInit`, a `NodeDef mentions attribute …` line).
`TF_CPP_MIN_LOG_LEVEL` silences TensorFlow's own logger but not absl's early lines (measured:
the same lines appear with TF_CPP_MIN_LOG_LEVEL=3, ABSL_MIN_LOG_LEVEL=3 and GLOG_minloglevel=3).

So `quiet_tensorflow()`, called by the command-line entry points before TensorFlow loads, sets
TF_CPP_MIN_LOG_LEVEL=3 and routes descriptor 2 through a thread that drops exactly those lines
(absl's format `[IWE]mmdd hh:mm:<seconds> thread file:line] …` and the absl warning) and passes
everything else through unchanged, in order: imgclf's messages, Python warnings and tracebacks.
Fatal (`F…`) lines are always kept. `--verbose` or `IMGCLF_TF_LOGS=1` leaves stderr alone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import threading

TF_LOGS_ENV = "IMGCLF_TF_LOGS"
_NOISE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    # The TFLite runtime's own line when an interpreter starts (MediaPipe's included).
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)"
)
# The one multi-line start-up message: cpu_feature_guard's second line has no log prefix.
_CONTINUATION = b"To enable the following instructions:"
_state: dict[str, object] = {}


def is_noise(line: bytes) -> bool:
    """True for one of TensorFlow's/absl's C++ log lines (info, warning, error; not fatal)."""
    return bool(_NOISE.match(line))


def filter_lines(lines: list[bytes], after_noise: bool = False) -> tuple[list[bytes], bool]:
    """(the lines to keep, whether the last line was noise): drops noise lines and the known
    prefix-less continuation of one (TensorFlow's CPU-instructions note)."""
    kept = []
    for line in lines:
        noise = is_noise(line) or (after_noise and line.startswith(_CONTINUATION))
        if not noise:
            kept.append(line)
        after_noise = noise
    return kept, after_noise


def _pump(read_fd: int, write_fd: int) -> None:
    """Copy lines from `read_fd` to `write_fd`, dropping noise, until end of file."""
    pending, after_noise = b"", False
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        while chunk := source.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept, after_noise = filter_lines(lines, after_noise)
            if kept:
                os.write(write_fd, b"".join(line + b"\n" for line in kept))
    kept, _ = filter_lines([pending] if pending else [], after_noise)
    if kept:
        os.write(write_fd, kept[0])


def quiet_tensorflow(verbose: bool = False) -> bool:
    """Hide TensorFlow's C++ start-up lines from stderr for the rest of this process; returns
    True when the filter is on. Does nothing with `verbose`, with IMGCLF_TF_LOGS=1, when called
    twice, or after TensorFlow was already imported (its lines are printed by then)."""
    if verbose or os.environ.get(TF_LOGS_ENV, "") not in ("", "0") or _state:
        return bool(_state)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return False
    sys.stderr.flush()
    terminal = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_pump, args=(read_fd, terminal), daemon=True)
    thread.start()
    _state.update(terminal=terminal, thread=thread)
    atexit.register(restore_stderr)
    return True


def terminal_fd() -> int:
    """The real stderr's file descriptor: the filter's target when it is on (a line written
    there needs no Python thread: the filter's does), else 2."""
    terminal = _state.get("terminal")
    return terminal if isinstance(terminal, int) else 2


def restore_stderr() -> None:
    """Put the real stderr back and let the filter drain what is left (at exit, and before a
    command ends at once: `errors.end_after_failed_write`)."""
    terminal = _state.get("terminal")
    if not isinstance(terminal, int):
        return
    with contextlib.suppress(OSError, ValueError):  # stderr may already be closed
        sys.stderr.flush()
    os.dup2(terminal, 2)  # closes the pipe's last write end: the pump reaches end of file
    thread = _state.get("thread")
    if isinstance(thread, threading.Thread):
        thread.join(timeout=5)
    _state.clear()
