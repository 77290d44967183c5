"""Errors a user can fix. The command-line entry points print them as one line and exit 2."""

import errno
import os
import sys

from imgclf.infra.console import restore_stderr


class UserError(ValueError):
    """Bad input from the user (config, data, paths): the message names the problem and the fix."""


class ConfigError(UserError):
    """The configuration is invalid: an unknown key, a wrong type or an out-of-range value."""


class DataError(UserError):
    """Unusable data: a missing folder, too few classes, a class with no readable image."""


def resource_problem(exc: BaseException) -> str:
    """One line for a fault of the machine rather than of the input: out of memory, a full
    disk, a read-only file system, a permission, any other OSError; with what to do."""
    if isinstance(exc, MemoryError):
        return (
            "out of memory: lower train.batch_size, train.eval_batch_size, data.image_size or "
            "the model's widths, or use data.cache: none (files streamed from disk)"
        )
    if not isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}"
    where = f" ({exc.filename})" if exc.filename else ""
    advice = {
        errno.ENOSPC: "no space left on the device: free some space, or write elsewhere",
        errno.EFBIG: "a file larger than this process may write (ulimit -f) or the file system "
        "allows: raise the limit, or write elsewhere",
        errno.EDQUOT: "disk quota exceeded: free some space, or write elsewhere",
        errno.EROFS: "read-only file system: choose a folder you can write (--out)",
        errno.EACCES: "permission denied: choose a folder you can write (--out)",
        errno.EPERM: "operation not permitted: choose a folder you can write (--out)",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return f"{advice}{where}"


# The address space TensorFlow needs, with a margin: training the digits MLP for one epoch
# peaked at 3.43 GB of virtual memory (VmPeak; most of it reserved, not used) on the 2-core
# machine, 2026-12-06.
MIN_ADDRESS_SPACE_GB = 4.0


def check_address_space() -> None:
    """Raise UserError when this process may not map the memory TensorFlow needs (`ulimit -v`,
    RLIMIT_AS). Under a 2 GB limit TensorFlow's import failed at a different point each time:
    an abort inside its C++ (exit 134, no message), a SystemError traceback from Keras' import,
    or a MemoryError; so the commands check before they load it."""
    try:
        import resource
    except ImportError:  # not a Unix: no such limit
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft < MIN_ADDRESS_SPACE_GB * 2**30:
        raise UserError(
            f"this process may map at most {soft / 2**30:.1f} GB of memory (ulimit -v); "
            f"TensorFlow needs about {MIN_ADDRESS_SPACE_GB:.0f} GB of address space, most of "
            "it reserved rather than used: raise the limit (ulimit -v unlimited)"
        )


def end_after_failed_write(code: int) -> None:
    """End the process now with `code` when a failed write left an HDF5 file open; return
    otherwise. On a full disk Keras' `save_weights` leaves its h5py file open (the close fails
    too); when the exception's frames were freed, h5py printed two "Exception ignored"
    tracebacks, and at exit HDF5 crashed the interpreter (exit 139 instead of 2). The one line
    about the fault is printed first; the run's state is already written. `os._exit` skips
    the interpreter's shutdown (stdout and stderr are flushed here), so only a command-line
    entry point calls this."""
    h5py = sys.modules.get("h5py")
    try:
        left_open = h5py is not None and bool(
            h5py.h5f.get_obj_ids(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)
        )
    except Exception:  # h5py's own errors: nothing to learn, nothing to end
        left_open = False
    if left_open:
        sys.stdout.flush()
        restore_stderr()  # the TensorFlow log filter passes on what it holds
        sys.stderr.flush()
        os._exit(code)


def require_packages(what: str, install: str, *modules: str) -> None:
    """UserError "`what` needs <the missing modules>: run `install`" unless every module is
    installed. Looked up (`importlib.util.find_spec`), not imported: some (mediapipe) load
    TensorFlow, before a command line can quiet its start-up lines. A module set to None in
    sys.modules (hidden, as tests do) counts as missing."""
    import importlib.util

    def found(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ValueError:
            return False

    missing = [m for m in modules if not found(m)]
    if missing:
        raise UserError(f"{what} needs {', '.join(missing)}: run `{install}`")
