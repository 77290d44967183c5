"""The run directory: every file name in it (`names`), atomic writes (`files`), creating and
finding runs (`layout`), history.csv (`history`), the manifest (`manifest`), the run's state
(`state`), and `Run`, the one reader of what a run wrote (`reader`).

The run directory is the only contract between training, export, prediction and the app, and
this package is the only place its file names are spelled. Import it as `from imgclf import runs`
and use `runs.<name>`.
"""

from imgclf.runs.files import (
    atomic_path,
    fsync_folder,
    glob_safe,
    printable,
    read_config,
    read_json,
    read_labels,
    remove_debris,
    tree_size,
    write_bytes,
    write_json,
    write_text,
)
from imgclf.runs.history import (
    HISTORY_FIELDS,
    HistoryRow,
    phase_starts,
    read_history,
    write_history,
)
from imgclf.runs.layout import (
    check_new_run_dir,
    check_writable,
    is_run_dir,
    new_run_dir,
    point_latest,
)
from imgclf.runs.manifest import IntegrityError, verify_all, verify_manifest, write_manifest
from imgclf.runs.names import *  # noqa: F403  (the file names: runs.MODEL, runs.METRICS, ...)
from imgclf.runs.names import __all__ as _NAMES
from imgclf.runs.reader import Run
from imgclf.runs.state import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    RUNNING,
    RunNotComplete,
    RunState,
    check_run,
    in_run,
    read_state,
    require_complete,
    resume_command,
    set_state,
    tidy_completed,
)

__all__ = [
    *_NAMES,
    "COMPLETE",
    "FAILED",
    "HISTORY_FIELDS",
    "INTERRUPTED",
    "RUNNING",
    "HistoryRow",
    "IntegrityError",
    "Run",
    "RunNotComplete",
    "RunState",
    "atomic_path",
    "check_new_run_dir",
    "check_writable",
    "check_run",
    "in_run",
    "fsync_folder",
    "glob_safe",
    "is_run_dir",
    "new_run_dir",
    "phase_starts",
    "point_latest",
    "printable",
    "read_config",
    "read_history",
    "read_json",
    "read_labels",
    "read_state",
    "remove_debris",
    "require_complete",
    "resume_command",
    "set_state",
    "tidy_completed",
    "tree_size",
    "verify_all",
    "verify_manifest",
    "write_bytes",
    "write_history",
    "write_json",
    "write_manifest",
    "write_text",
]
