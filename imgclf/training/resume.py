"""What `imgclf-train --resume RUN` needs, kept in the run's hidden `.resume/` folder (never an
artifact, removed when the run completes):

    data.json            the run's data fingerprint (a resumed run must see the same split)
    <phase>/snap-E-S-ID/ one backup of the phase at epoch E, step S: weights and optimizer state,
                         early stopping's state and best weights, the random state of dropout
                         and augmentation, and whether early stopping had stopped the phase
    <phase>/current.json which snapshot is the latest (replaced atomically after the snapshot is
                         complete, so a kill at any moment leaves one whole snapshot named)
    <phase>.done.json    a finished phase's report; its end weights and random state beside it

The backup callback is Keras' `BackupAndRestore` (its epoch and step bookkeeping, its way of
telling `fit` where to start) with its files replaced by these snapshots, so that everything
belonging to one epoch is saved, and restored, together.

A resumed run rebuilds the data (same config and seed: the same split, checked by fingerprint)
and the model, loads the end weights of every finished phase, and continues the interrupted one
from its latest snapshot; history.csv and diagnostics.json keep their rows up to that epoch, and
the next epoch's shuffled order follows from (seed, epoch). Not carried over: ReduceLROnPlateau's
plateau counter, and augmentations tf.data drew ahead of time before a kill, so runs with
augmentation or a plateau schedule continue faithfully but not bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf import runs
from imgclf.config import load_config
from imgclf.infra import bounded, faults
from imgclf.infra.errors import ConfigError, UserError
from imgclf.training.cluster import is_chief

if TYPE_CHECKING:
    import keras

    from imgclf.data import Splits
    from imgclf.schema import Config

CURRENT = "current.json"


def fingerprint(splits: Splits) -> str:
    """A hash of the class names and of every split's labels and files: equal only for the
    same data split the same way."""
    digest = hashlib.sha256(json.dumps(splits.class_names).encode())
    for split in (splits.train, splits.val, splits.test):
        digest.update(np.asarray(split.y, dtype=np.int64).tobytes())
        digest.update("\n".join(split.files or []).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


class Resume:
    """The resume folder of one run."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = Path(run_dir) / runs.RESUME

    def backup_dir(self, phase: str) -> Path:
        return self.folder / phase

    def check_data(self, splits: Splits, resuming: bool, shape: list[int] | None = None) -> None:
        """Record the data's fingerprint and the cluster's shape, [workers, replicas] (a new
        run), or check both are unchanged (resuming).

        Raises ConfigError when a resumed run's data differs (it would train and test on
        another split than the one it started with) or when a multi-worker run is resumed on
        another number of workers or replicas."""
        shape = shape or [1, 1]

        path = self.folder / "data.json"
        now = fingerprint(splits)
        if resuming and path.is_file():
            recorded = runs.read_json(path)
            if recorded.get("fingerprint") != now:
                raise ConfigError(
                    f"{self.folder.parent}: its data has changed since it started (files added, "
                    "removed or renamed, or another split), so it cannot be resumed without "
                    "mixing test and training images; train it again"
                )
            before = [int(v) for v in recorded.get("cluster", [1, 1])]
            if before != shape:
                raise ConfigError(
                    f"{self.folder.parent}: it started on {before[0]} worker(s) with "
                    f"{before[1]} replica(s) and now has {shape[0]} with {shape[1]}; resume it "
                    f"on {before[0]} worker(s) with {before[1]} replica(s) (each replica's share "
                    "of every global batch and the batch-norm statistics depend on the count, "
                    "so another count would not continue the same training)"
                )
            return
        runs.write_json(path, {"fingerprint": now, "cluster": shape})

    def done(self, phase: str) -> dict[str, Any] | None:
        """The report of `phase` when it finished before (None otherwise)."""
        path = self.folder / f"{phase}.done.json"
        if not (path.is_file() and (self.folder / f"{phase}.weights.h5").is_file()):
            return None
        return bounded.read_json(path)

    def load_done(self, phase: str, model: keras.Model, augmenter: Any = None) -> None:
        """Put `phase`'s end weights and random state into `model` (and the augmentation)."""
        model.load_weights(str(self.folder / f"{phase}.weights.h5"))
        load_random(self.folder / f"{phase}.random.npz", seed_states(model, augmenter))

    def mark_done(
        self, phase: str, report: dict[str, Any], model: keras.Model, augmenter: Any = None
    ) -> None:
        """Record a finished phase: its end weights and random state first, then its report
        (the marker), then drop its snapshots."""
        with runs.atomic_path(self.folder / f"{phase}.weights.h5") as tmp:
            model.save_weights(str(tmp))
        save_random(self.folder / f"{phase}.random.npz", seed_states(model, augmenter))
        runs.write_json(self.folder / f"{phase}.done.json", report)
        shutil.rmtree(self.backup_dir(phase), ignore_errors=True)

    def snapshot(self, phase: str) -> tuple[Path, dict[str, Any]] | None:
        """(folder, state) of `phase`'s latest snapshot, or None."""
        current = self.backup_dir(phase) / CURRENT
        try:
            name = bounded.read_json(current)["snapshot"]
            folder = self.backup_dir(phase) / name
            state = bounded.read_json(folder / "state.json")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return folder, state

    def backup_epoch(self, phase: str) -> int:
        """The epochs of `phase` its latest snapshot holds (0 without one)."""
        found = self.snapshot(phase)
        return int(found[1]["epoch"]) if found else 0

    def clear(self) -> None:
        """Remove the folder (the run is complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def seed_states(model: keras.Model, augmenter: Any = None) -> list[Any]:
    """The SeedGenerator state variables of the model's random layers (dropout) and of the
    augmentation, in a fixed order: Keras keeps random state there, and weight files leave it
    out."""
    parts = [getattr(augmenter, "images", None), getattr(augmenter, "mix", None)]
    extra = [v for part in parts if part is not None for v in part.variables]
    return [v for v in [*model.variables, *extra] if "seed_generator_state" in v.path]


def save_random(path: Path, states: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with runs.atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **{f"s{i}": np.asarray(v) for i, v in enumerate(states)})


def load_random(path: Path, states: list[Any]) -> None:
    if not path.is_file():
        return
    with np.load(path, allow_pickle=False) as data:
        for i, variable in enumerate(states):
            if f"s{i}" in data.files:
                variable.assign(data[f"s{i}"])


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    with path.open("wb") as fh:
        np.savez(fh, **{f"w{i}": w for i, w in enumerate(arrays)})


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[f"w{i}"] for i in range(len(data.files))]


def backup_callback(
    resume: Resume, phase: str, every: str | int, early: Any, augmenter: Any = None
) -> keras.callbacks.Callback:
    """The phase's backup: Keras' BackupAndRestore, every epoch ("epoch") or every `every`
    steps, saving and restoring one consistent snapshot (see the module docstring). `early` is
    the phase's EarlyStopping, whose state is part of the snapshot. Put it after every other
    callback: the snapshot then holds what they all did in the epoch."""
    import keras

    folder = resume.backup_dir(phase)

    class RunBackup(keras.callbacks.BackupAndRestore):
        def _save_model(self) -> None:
            # Never a name in use: a resumed epoch redoes the same steps, and replacing the
            # current snapshot in place would open a moment with none.
            tag = uuid.uuid4().hex[:8]
            name = f"snap-{self._current_epoch:05d}-{self._last_batch_seen:06d}-{tag}"
            old = resume.snapshot(phase)
            with runs.atomic_path(folder / name) as tmp:
                tmp.mkdir(parents=True)
                self.model.save_weights(str(tmp / "latest.weights.h5"))  # + optimizer state
                save_random(tmp / "random.npz", seed_states(self.model, augmenter))
                _save_best(tmp, old, early)
                state = {
                    "epoch": self._current_epoch,
                    "batch": self._last_batch_seen,
                    "stopped": bool(getattr(self.model, "stop_training", False)),
                    "early": _early_state(early),
                }
                (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
            runs.write_json(folder / CURRENT, {"snapshot": name})  # now it is the latest
            for stale in folder.glob("snap-*"):
                if stale.name != name:
                    shutil.rmtree(stale, ignore_errors=True)
            faults.point("backup")

        def on_train_begin(self, logs: dict | None = None) -> None:
            # Keras keeps `_initial_epoch` on the model after fit: the phase before this one
            # (same model) must not decide where this one starts.
            self.model._initial_epoch = None
            found = resume.snapshot(phase)
            if found is None:
                return
            snap, state = found
            self._current_epoch, self._last_batch_seen = state["epoch"], 0
            _build_optimizer(self.model)  # its slots must exist to be loaded
            self.model.load_weights(str(snap / "latest.weights.h5"))
            load_random(snap / "random.npz", seed_states(self.model, augmenter))
            _restore_early(early, state["early"], snap)
            # Where `fit` starts: after the snapshot's epoch; past the end if early stopping
            # had already stopped the phase (fit then only restores its best weights).
            epochs = (self.params or {}).get("epochs", state["epoch"])
            self.model._initial_epoch = epochs if state["stopped"] else state["epoch"]

        def on_train_end(self, logs: dict | None = None) -> None:
            self.model._initial_epoch = None

    return RunBackup(str(folder), save_freq=every, delete_checkpoint=False)


def _build_optimizer(model: keras.Model) -> None:
    """Create the optimiser's variables, under the model's strategy (mirrored, multi-worker)
    when it has one."""
    if model.optimizer is None or model.optimizer.built:
        return
    strategy = getattr(model, "distribute_strategy", None)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model.optimizer.build(model.trainable_variables)


def _early_state(early: Any) -> dict[str, Any]:
    best = None if early.best is None else float(early.best)
    return {"wait": early.wait, "best": best, "best_epoch": early.best_epoch}


def _save_best(tmp: Path, old: tuple[Path, dict[str, Any]] | None, early: Any) -> None:
    """Early stopping's best weights into the snapshot: linked from the previous snapshot when
    the best epoch has not changed (no rewrite of a large file every epoch)."""
    if early.best_weights is None:
        return
    target = tmp / "best.npz"
    same = ("best_epoch", "best")
    if old is not None and all(old[1]["early"].get(k) == _early_state(early)[k] for k in same):
        previous = old[0] / "best.npz"
        if previous.is_file():
            try:
                os.link(previous, target)
                return
            except OSError:
                pass
    _save_arrays(target, early.best_weights)


def _restore_early(early: Any, saved: dict[str, Any], snap: Path) -> None:
    early.wait, early.best_epoch = saved["wait"], saved["best_epoch"]
    if saved["best"] is not None:
        early.best = saved["best"]
    if (snap / "best.npz").is_file():
        early.best_weights = _load_arrays(snap / "best.npz")


def check_resumable(run_dir: Path) -> Config:
    """The config an interrupted or failed run started with; UserError (one line) when the run
    cannot be resumed: not a run, complete or still training. A worker of a multi-worker
    cluster other than the chief only reads the config (the chief checks the run, and may
    already have marked it `running` again)."""
    if not (run_dir / runs.CONFIG).is_file():
        if not is_chief():
            raise UserError(
                f"--resume {run_dir}: this worker cannot read the run's {runs.CONFIG}; every "
                "worker of a multi-worker run reads it: put the run directory on a disk every "
                f"worker mounts at the same path, or copy {runs.CONFIG} there"
            )
        raise UserError(f"--resume {run_dir}: not a run directory (no {runs.CONFIG})")
    if not is_chief():  # the chief may already have marked it running: not that state
        if runs.read_state(run_dir).state == runs.COMPLETE:
            raise UserError(f"--resume {run_dir}: the run is already complete; nothing to resume")
        return load_config(run_dir / runs.CONFIG)
    state = runs.read_state(run_dir)
    if state.state == runs.COMPLETE:
        raise UserError(f"--resume {run_dir}: the run is already complete; nothing to resume")
    if state.state == runs.RUNNING:
        raise UserError(
            f"--resume {run_dir}: the run is still training (process {state.pid} on "
            f"{state.host}); wait for it or stop it first. If that process is gone (e.g. its "
            f"container was replaced), delete {run_dir / runs.STATE} and resume"
        )
    return load_config(run_dir / runs.CONFIG)
