"""What `imgclf-train --resume RUN` needs, kept in the run's hidden `.resume/` folder (never an
artifact, removed when the run completes):

    <phase>/              Keras' BackupAndRestore backup of that phase (weights, optimizer state,
                          epoch), written every epoch (or every `train.backup_every` steps)
    <phase>/early.json    early stopping's state (best, wait, best epoch) and its best weights
    <phase>.done.json     a finished phase's report, with its end weights in <phase>.weights.h5

A resumed run rebuilds the data (same config and seed: the same split) and the model, loads the
weights of every finished phase, and continues the interrupted phase from its last backup: its
weights, optimizer state and epoch counter (BackupAndRestore), early stopping's patience and best
weights, history.csv and diagnostics.json up to that epoch, and the shuffled order of the next
epoch. What cannot be carried over: the random state of augmentation and of ReduceLROnPlateau's
plateau counter; a run with either is continued faithfully but not bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf import runs

if TYPE_CHECKING:
    import keras

    from imgclf.schema import Config


class Resume:
    """The resume folder of one run."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = Path(run_dir) / runs.RESUME

    def backup_dir(self, phase: str) -> Path:
        return self.folder / phase

    def done(self, phase: str) -> dict[str, Any] | None:
        """The report of `phase` when it finished before (None otherwise)."""
        path = self.folder / f"{phase}.done.json"
        weights = self.folder / f"{phase}.weights.h5"
        if not (path.is_file() and weights.is_file()):
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def load_done(self, phase: str, model: keras.Model, augmenter: Any = None) -> None:
        """Put `phase`'s end weights and random state into `model` (and the augmentation)."""
        model.load_weights(str(self.folder / f"{phase}.weights.h5"))
        load_random(self.folder / f"{phase}.random.npz", seed_states(model, augmenter))

    def mark_done(
        self, phase: str, report: dict[str, Any], model: keras.Model, augmenter: Any = None
    ) -> None:
        """Record a finished phase: its end weights and random state first, then its report
        (the marker)."""
        with runs.atomic_path(self.folder / f"{phase}.weights.h5") as tmp:
            model.save_weights(str(tmp))
        save_random(self.folder / f"{phase}.random.npz", seed_states(model, augmenter))
        runs.write_json(self.folder / f"{phase}.done.json", report)
        shutil.rmtree(self.backup_dir(phase), ignore_errors=True)

    def backup_epoch(self, phase: str) -> int:
        """The epochs of `phase` its backup holds (0 without one)."""
        meta = self.backup_dir(phase) / "training_metadata.json"
        try:
            return int(json.loads(meta.read_text(encoding="utf-8"))["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def clear(self) -> None:
        """Remove the folder (the run is complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def backup_callback(resume: Resume, phase: str, every: str | int) -> keras.callbacks.Callback:
    """Keras' BackupAndRestore for `phase`: every epoch ("epoch") or every `every` steps, with
    the previous backup kept too (a kill while writing falls back to it)."""
    import keras

    return keras.callbacks.BackupAndRestore(
        str(resume.backup_dir(phase)),
        save_freq=every,
        double_checkpoint=True,
        delete_checkpoint=False,  # removed when the phase is marked done
    )


def early_stopping(resume: Resume, phase: str, **kwargs: Any) -> keras.callbacks.Callback:
    """EarlyStopping whose state (patience so far, best value and weights) is saved with the
    phase's backup and restored when the phase resumes."""
    import keras

    folder = resume.backup_dir(phase)

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs: dict | None = None) -> None:
            super().on_train_begin(logs)
            state = folder / "early.json"
            if not state.is_file():
                return
            saved = json.loads(state.read_text(encoding="utf-8"))
            self.wait, self.best_epoch = saved["wait"], saved["best_epoch"]
            self.best = saved["best"] if saved["best"] is not None else self.best
            weights = folder / "early.weights.npz"
            if weights.is_file():
                with np.load(weights, allow_pickle=False) as data:
                    self.best_weights = [data[f"w{i}"] for i in range(len(data.files))]

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            super().on_epoch_end(epoch, logs)
            folder.mkdir(parents=True, exist_ok=True)
            if self.best_weights is not None:
                with runs.atomic_path(folder / "early.weights.npz") as tmp, tmp.open("wb") as fh:
                    np.savez(fh, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
            best = None if self.best is None else float(self.best)
            state = {"wait": self.wait, "best": best, "best_epoch": self.best_epoch}
            runs.write_json(folder / "early.json", state)

    return ResumableEarlyStopping(**kwargs)


def check_resumable(run_dir: Path) -> Config:
    """The config an interrupted or failed run started with; UserError (one line) when the run
    cannot be resumed: not a run, complete, still training, or multi-worker."""
    from imgclf.config import load_config
    from imgclf.errors import UserError

    if not (run_dir / runs.CONFIG).is_file():
        raise UserError(f"--resume {run_dir}: not a run directory (no {runs.CONFIG})")
    state = runs.read_state(run_dir)
    if state.state == runs.COMPLETE:
        raise UserError(f"--resume {run_dir}: the run is already complete; nothing to resume")
    if state.state == runs.RUNNING:
        raise UserError(
            f"--resume {run_dir}: the run is still training (process {state.pid}); wait for it "
            "or stop it first"
        )
    config = load_config(run_dir / runs.CONFIG)
    if config.train.distribute == "multiworker":
        raise UserError(
            f"--resume {run_dir}: resuming a multi-worker run is not supported; train it again"
        )
    return config


def seed_states(model: keras.Model, augmenter: Any = None) -> list[Any]:
    """The SeedGenerator state variables of the model's random layers (dropout) and of the
    augmentation, in a fixed order: Keras keeps random state there, and weight files leave it
    out."""
    parts = [getattr(augmenter, "images", None), getattr(augmenter, "mix", None)]
    variables = [
        *model.variables,
        *(v for part in parts if part is not None for v in part.variables),
    ]
    return [v for v in variables if "seed_generator_state" in v.path]


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


def random_state(resume: Resume, phase: str, augmenter: Any = None) -> keras.callbacks.Callback:
    """Saves the random state (`seed_states`) with the phase's backup at every epoch's end and
    restores it when the phase resumes."""
    import keras

    path = resume.backup_dir(phase) / "random.npz"

    class RandomState(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            load_random(path, seed_states(self.model, augmenter))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            save_random(path, seed_states(self.model, augmenter))

    return RandomState()
