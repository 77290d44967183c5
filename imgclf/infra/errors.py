"""Errors a user can fix. The command-line entry points print them as one line and exit 2."""

import errno


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
        errno.EDQUOT: "disk quota exceeded: free some space, or write elsewhere",
        errno.EROFS: "read-only file system: choose a folder you can write (--out)",
        errno.EACCES: "permission denied: choose a folder you can write (--out)",
        errno.EPERM: "operation not permitted: choose a folder you can write (--out)",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return f"{advice}{where}"
