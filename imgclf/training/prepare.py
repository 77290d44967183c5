"""Step 1 of training (`imgclf.train`): everything before the first epoch.

`preflight` checks what it can without TensorFlow (the data folder, the output folder);
`prepare` loads the data, builds the model under its strategy and precision policy, and makes
the run directory: config.yaml, labels.json and data_report.json first, then the state
`running` (so a run killed in between reads as interrupted and resumes from its config). A new
run whose setup is interrupted is removed again; a resumed run is checked to see the same data.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf import runs
from imgclf.config import Config, dump_config
from imgclf.data import load_data, near_duplicates, suspects
from imgclf.data.duplicates import describe
from imgclf.data.folder import check_root
from imgclf.infra import faults
from imgclf.infra.errors import ConfigError
from imgclf.models import build_model
from imgclf.training.backend import check_backend, set_deterministic
from imgclf.training.cluster import cluster_size, is_chief
from imgclf.training.cluster_sync import broadcast_json
from imgclf.training.distribute import lost_peers, make_strategy
from imgclf.training.optim import compile_model, resolve_batch_size, steps_per_epoch
from imgclf.training.resume import Resume
from imgclf.training.tracking import preflight as tracking_preflight

if TYPE_CHECKING:
    import keras

    from imgclf.data import Splits


@dataclass
class Prepared:
    """What `prepare` made: the data, the compiled model (a two-phase run compiles per phase),
    the distribution strategy (or None) and the run directory, with its first files written."""

    config: Config
    splits: Splits
    model: keras.Model
    strategy: Any
    batch_size: int
    run_dir: Path
    chief: bool
    verbose: int | str
    resume: Resume | None = None  # set for `--resume`: what the interrupted run left


def preflight(config: Config, out: str | Path | None = None) -> None:
    """What can be checked before TensorFlow loads (it costs seconds to import): a folder
    source's folder exists, `out` is free, tracking can start. Raises UserError (DataError,
    ConfigError) or FileExistsError."""
    if config.data.source == "folder":
        check_root(config.data.path)
    if out is not None:
        runs.check_new_run_dir(out)
    if is_chief():  # the other workers of a cluster write to a scratch folder
        runs.check_writable(Path(out) if out is not None else runs.DEFAULT_ROOT)
    tracking_preflight(config)  # the [track] extra and the MLflow URI (training.tracking)


def build_for_training(
    config: Config, splits: Splits, strategy: Any, batch_size: int
) -> keras.Model:
    """The model under the strategy and mixed-precision policy; compiled for single-phase runs
    (the phases of a transfer run compile themselves)."""
    import keras

    tcfg = config.train
    previous_policy = keras.config.dtype_policy()
    if tcfg.mixed_precision != "none":
        # Hidden layers compute in 16 bits; the softmax layer is pinned to float32 (blocks.py).
        keras.config.set_dtype_policy(tcfg.mixed_precision)
    try:
        # Variables (model and optimiser) are created under the strategy, so they are mirrored.
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = build_model(config, len(splits.class_names), splits.train.x)
            # A transfer run's phases, and a rate the range test finds, compile in setup_phase.
            if not config.model.pretrained and tcfg.learning_rate != "auto":
                steps = steps_per_epoch(len(splits.train), batch_size)
                compile_model(model, tcfg, steps, None, splits.train.targets)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return model


def _run_dir(config: Config, out: Any, runs_root: Path, chief: bool, resume: bool, splits: Any):
    """The run directory: new (or, resuming, `out` as it is, if its data is still the same);
    a worker other than the chief gets a throw-away folder."""
    if not chief:
        return Path(tempfile.mkdtemp(prefix="imgclf-worker-"))
    if not resume:
        return runs.new_run_dir(config.name, out, runs_root)
    run_dir = Path(out)
    if (run_dir / runs.LABELS).is_file() and runs.read_labels(run_dir) != splits.class_names:
        raise ConfigError(
            f"{run_dir}: the data has changed since the run started (its classes were "
            f"{runs.read_labels(run_dir)}, now {splits.class_names}); it cannot be resumed: "
            "train it again"
        )
    return run_dir


def _cluster_shape(config: Config, strategy: Any) -> list[int]:
    """[workers, replicas] of the run (a multi-worker run resumes only on the same)."""
    if config.train.distribute != "multiworker":
        return [1, 1]
    return [cluster_size(), strategy.num_replicas_in_sync]


def _resumed_or_new(
    config: Config, out: Any, runs_root: Path, chief: bool, resume: bool, splits: Any,
    strategy: Any,
) -> tuple[Path, Resume | None]:  # fmt: skip
    """The run directory and, on the chief, its Resume (only the chief backs a run up: the
    other workers of a multi-worker run take its state from the chief, training.cluster_sync).
    Resuming, the chief checks the data and the cluster's shape; a multi-worker cluster then
    agrees on its verdict, so every worker stops with the chief's one-line refusal instead of
    waiting for a chief that has left."""
    refusal = None
    try:
        run_dir = _run_dir(config, out, runs_root, chief, resume, splits)
        track = Resume(run_dir) if chief else None
        if track is not None and resume:
            track.check_data(splits, True, _cluster_shape(config, strategy))
    except ConfigError as exc:
        if not (resume and config.train.distribute == "multiworker"):
            raise
        refusal = exc
        run_dir, track = None, None
    if resume and config.train.distribute == "multiworker":
        with lost_peers():
            verdict = broadcast_json(strategy, None if refusal is None else str(refusal))
        if refusal is not None or verdict is not None:
            if not chief and run_dir is not None:  # this worker's scratch folder
                shutil.rmtree(run_dir, ignore_errors=True)
            raise refusal or ConfigError(verdict)
    return run_dir, track


def prepare(
    config: Config,
    out: str | Path | None,
    verbose: int | str,
    runs_root: Path,
    splits: Any,
    resume: bool = False,
) -> Prepared:
    """Step 1: backend checks, seeds, data, model; then the run directory with config.yaml,
    labels.json and data_report.json, then its state `running`. Data and config errors stop
    before the directory exists. With `resume`, `out` is an interrupted run to continue."""

    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    chief = is_chief()
    preflight(config, out if chief and not resume else None)  # workers never write to `out`
    check_backend(config)  # e.g. train.distribute under JAX: a one-line error, nothing written
    # First: a multi-worker strategy must exist before the program does other TensorFlow work.
    strategy = make_strategy(config.train.distribute, config.train.collective_timeout)
    # Same seed, same run: seeds Python, NumPy and Keras; deterministic kernels on TensorFlow.
    set_deterministic(config.seed)
    if splits is None:
        splits = load_data(config)
    batch_size = resolve_batch_size(config.train, len(splits.train))
    if strategy is not None and batch_size % strategy.num_replicas_in_sync:
        replicas, mode = strategy.num_replicas_in_sync, config.train.distribute
        raise ConfigError(
            f"train.batch_size ({batch_size}) must be a multiple of the {replicas} replicas of "
            f"train.distribute={mode}"
        )
    model = build_for_training(config, splits, strategy, batch_size)
    made = out is None or not Path(out).exists()  # else an empty folder the user gave
    run_dir, track = _resumed_or_new(config, out, runs_root, chief, resume, splits, strategy)
    try:
        if track is not None and not resume:
            track.check_data(splits, False, _cluster_shape(config, strategy))
        runs.write_text(run_dir / runs.CONFIG, dump_config(config))
        faults.point("setup")
        runs.write_json(run_dir / runs.LABELS, splits.class_names)
        runs.write_json(run_dir / runs.DATA_REPORT, splits.report)
        if chief:  # last: a folder with a config and no state reads as interrupted
            runs.set_state(run_dir, runs.RUNNING)
    except BaseException:
        if not resume:  # a half-made new run holds nothing worth keeping (Ctrl+C, disk full)
            _remove_new_run(run_dir, remove_folder=made or not chief)
        raise
    prepared = Prepared(config, splits, model, strategy, batch_size, run_dir, chief, verbose, track)
    if verbose:
        print(announce(prepared), flush=True)
    return prepared


def announce(p: Prepared) -> str:
    """The lines a run prints before its first epoch: the run directory, the data (and where
    its pixels come from), the model."""
    totals, strategy = p.splits.report["totals"], p.strategy
    lines = [
        f"run: {p.run_dir}",
        f"data: {len(p.splits.class_names)} classes, {totals['train']} train / "
        f"{totals['val']} val / {totals['test']} test images, "
        f"{len(p.splits.report['skipped'])} skipped",
        f"model: {p.config.model.name}, {p.model.count_params():,} parameters"
        + (f", {strategy.num_replicas_in_sync} replicas" if strategy is not None else ""),
    ]
    cache = p.splits.report.get("cache")
    if cache:
        lines.append(cache_line(cache))
    found = describe(p.splits.report.get("duplicates"), "\ndata: ")
    found += near_duplicates.describe(p.splits.report.get("near_duplicates"), "\ndata: ")
    found += suspects.describe(p.splits.report, "\ndata: ")
    if found:
        lines.append(found.lstrip("\n"))
    for group in p.splits.report.get("similar_class_names", []):
        lines.append(
            f"warning: classes {', '.join(map(repr, group))} differ only in upper/lower case: "
            "one class under two names? Rename one folder (or label) to merge them"
        )
    sets = [n for n in p.splits.class_names if "|" in n]
    if p.config.task == "single" and sets:
        lines.append(
            f"warning: {len(sets)} class name(s) hold '|' ({sets[0]!r}): trained as classes of "
            "their own; if an image may have several labels, set task=multilabel"
        )
    return "\n".join(lines)


def cache_line(cache: dict[str, Any]) -> str:
    """One line on the decoded pixels of a folder or CSV source (data_report.json `cache`)."""
    size = f"{cache['bytes'] / 2**20:,.0f} MB"
    if cache["mode"] == "disk":
        where = f"decoded cache: {size} on disk ({cache.get('file', '')})"
        how = (
            f"re-used: nothing decoded, {cache['seconds']:.1f} s"
            if cache["reused"]
            else f"built in {cache['seconds']:.1f} s; the next run on these files re-uses it"
        )
        line = f"{where}, {how}"
    elif cache["mode"] == "memory":
        line = f"decoded into memory: {size} in {cache['seconds']:.1f} s (decoded again next run)"
    else:
        line = "no decoded cache: every file is decoded at every read (data.cache: none)"
    note = cache.get("note")
    return f"data: {line}" + (f"\ndata: note: {note}" if note else "")


def _remove_new_run(run_dir: Path, remove_folder: bool) -> None:
    """Undo a new run directory whose setup did not finish: what prepare wrote, then, if
    `remove_folder` (prepare made it), the folder itself when it is left empty."""
    for name in (runs.STATE, runs.CONFIG, runs.LABELS, runs.DATA_REPORT, runs.RESUME):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    runs.remove_debris(run_dir)
    if remove_folder:
        with contextlib.suppress(OSError):
            run_dir.rmdir()
