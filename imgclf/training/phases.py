"""Running the phases of a run on one model: the history.csv callback, what each phase trains
(freeze, unfreeze, compile: `setup_phase`), and the fit itself with fresh early stopping
(`fit_phase`). The schedule (which phases, their recipes) is `imgclf.training.transfer.plan_phases`.

After fine-tuning, when best-weight restore is on and fine-tuning never beat the end of the
head phase on the monitored validation figure, the head-phase weights are put back (and the
phase report says so): fine-tuning is only kept when it helped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf import runs
from imgclf.data.pipeline import epoch_order_callback
from imgclf.infra import faults
from imgclf.infra.errors import UserError
from imgclf.training import tracking  # train.tensorboard / train.mlflow
from imgclf.training.backend import make_training_data
from imgclf.training.cluster_sync import agree_done, broadcast_variables
from imgclf.training.distribute import fit_multiworker, lost_peers
from imgclf.training.optim import (
    class_weights,
    compile_model,
    make_optimizer,
    schedule_callbacks,
    steps_per_epoch,
)
from imgclf.training.resume import backup_callback
from imgclf.training.transfer import (
    can_cache_features,
    fit_head_on_features,
    freeze_backbone,
    layerwise_rates,
    trainable_summary,
    unfreeze_top,
    with_layer_rates,
)
from imgclf.training.watchdog import configure_watchdog

if TYPE_CHECKING:
    import keras

    from imgclf.training.prepare import Prepared
    from imgclf.training.transfer import Phase


def history_callback(path: Path) -> keras.callbacks.Callback:
    """A callback that rewrites history.csv (atomically) after every epoch, so an interrupted
    run still shows what it learned (and the app follows a training process through it). Set
    its `phase` before each `fit`; epochs count on across fits. Its `rows` are the HistoryRows."""
    import keras

    class HistoryCSV(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[runs.HistoryRow] = []
            self._start = 0.0
            self.phase = "train"

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            figures = {k: float(logs[k]) for k in runs.HISTORY_FIELDS[2:6] if k in logs}
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            seconds = time.perf_counter() - self._start
            row = runs.HistoryRow(
                len(self.rows) + 1, self.phase, **figures, learning_rate=lr, seconds=seconds
            )
            self.rows.append(row)
            runs.write_history(path, self.rows)
            faults.point("epoch")

    return HistoryCSV()


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite: the weights are lost, more epochs cannot help."""


def divergence_guard(history: Any, phase: Phase) -> keras.callbacks.Callback:
    """A callback that ends the run at the first epoch whose training loss is NaN or infinite,
    after history.csv has recorded that epoch: TrainingDiverged, naming the epoch, the phase
    and its learning rate, so the run is `failed` with that reason. (Keras' TerminateOnNaN
    stops quietly: the run would end `complete` on NaN weights.) The epoch's mean loss is
    checked, not every batch's: a NaN in any batch makes it NaN, without a sync per step."""
    import math

    import keras

    class DivergenceGuard(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is None or math.isfinite(float(loss)):
                return
            lr = phase.train.learning_rate
            raise TrainingDiverged(
                f"training diverged: the loss became {float(loss)} in epoch {len(history.rows)} "
                f"({phase.name} phase, learning rate {lr:g}); lower train.learning_rate "
                f"(e.g. {lr / 10:g}) or switch on model.batch_norm"
            )

    return DivergenceGuard()


@dataclass
class PhaseRunner:
    """Everything the phases of one run share: what `prepare` made (the model, config, data,
    strategy, run directory, resume state) and what step 2 adds (input pipelines, callbacks)."""

    prepared: Prepared
    data: tuple[Any, Any]  # (training batches, validation batches)
    history: Any  # the history_callback
    diagnostics: Any = None  # a diagnostics callback or None
    augmenter: Any = None  # the training augmentation (its random state is backed up too)
    estimate: Any = None  # the run's time-left estimate (training.estimate.Estimate) or None
    head_end: tuple[float, list[Any]] | None = field(default=None)  # (best monitored, weights)
    tracker: Any = None  # TensorBoard / MLflow (training.tracking.Tracker), from the 1st phase

    # What the phases read of `prepared`, by the names they use.
    model = property(lambda self: self.prepared.model)
    config = property(lambda self: self.prepared.config)
    splits = property(lambda self: self.prepared.splits)
    batch_size = property(lambda self: self.prepared.batch_size)
    strategy = property(lambda self: self.prepared.strategy)
    verbose = property(lambda self: self.prepared.verbose)
    resume = property(lambda self: self.prepared.resume)

    def run(self, phase: Phase) -> dict[str, Any]:
        """Set up and fit one phase; returns its report (metrics.json `phases`). A phase that
        finished before an interruption is not run again: its end weights are loaded."""
        done = self.resume.done(phase.name) if self.resume is not None else None
        multiworker = self.config.train.distribute == "multiworker"
        if multiworker:  # only the chief has the backups: its answer, on every worker
            with lost_peers():
                done = agree_done(self.strategy, done)
        if done is not None:
            if self.resume is not None:
                self.resume.load_done(phase.name, self.model, self.augmenter)
            if multiworker:
                with lost_peers():
                    broadcast_variables(self.strategy, list(self.model.variables))
            monitor = phase.train.early_stopping.monitor
            if phase.name == "head" and done.get(f"best_{monitor}") is not None:
                self.head_end = (done[f"best_{monitor}"], self.model.get_weights())
            return done
        phase, report = setup_phase(self, phase)
        report = fit_phase(self, phase, report)
        if self.resume is not None:
            self.resume.mark_done(phase.name, report, self.model, self.augmenter)
        return report


def setup_phase(runner: PhaseRunner, phase: Phase) -> tuple[Phase, dict[str, Any]]:
    """What trains in `phase` (backbone frozen for `head`, its top unfrozen for `fine_tune`),
    its learning rate when `auto` (the range test, `lr_finder`), and a fresh compile when any
    of that changed; returns the phase (its rate resolved) and the start of its report."""

    model, config = runner.model, runner.config
    report: dict[str, Any] = {"phase": phase.name, "max_epochs": phase.train.epochs}
    if phase.name == "head":
        freeze_backbone(model)
    elif phase.name == "fine_tune":
        report["unfrozen_layers"] = unfreeze_top(model, config.transfer.unfreeze)
    auto = phase.train.learning_rate == "auto"
    if auto:
        phase = find_rate(runner, phase)
        report["learning_rate_from"] = "lr_finder"
    report["learning_rate"] = phase.train.learning_rate
    if phase.name != "train" or auto:  # what trains, or its rate, changed: compile again
        # Under a strategy the optimiser's variables are made in its scope (mirrored).
        with runner.strategy.scope() if runner.strategy else contextlib.nullcontext():
            optimizer = _optimizer(runner, phase, phase.train)
            compile_model(model, phase.train, _steps(runner), optimizer, _targets(runner))
        if phase.name == "fine_tune" and config.transfer.layer_lr_decay:
            report["layer_lr_decay"] = config.transfer.layer_lr_decay
    report.update(trainable_summary(model))
    return phase, report


def _steps(runner: PhaseRunner) -> int:
    return steps_per_epoch(len(runner.splits.train), runner.batch_size)


def _targets(runner: PhaseRunner) -> Any:
    """The training split's multi-hot rows (task: multilabel; the positive weights), or None."""
    return runner.splits.train.targets


def _optimizer(runner: PhaseRunner, phase: Phase, tcfg: Any) -> Any:
    """The phase's optimiser for recipe `tcfg` (layer-wise rates when fine-tuning with
    `transfer.layer_lr_decay`)."""
    optimizer = make_optimizer(tcfg, _steps(runner))
    decay = runner.config.transfer.layer_lr_decay
    if phase.name == "fine_tune" and decay:
        optimizer = with_layer_rates(optimizer, runner.model, layerwise_rates(runner.model, decay))
    return optimizer


def find_rate(runner: PhaseRunner, phase: Phase) -> Phase:
    """`phase` with `train.learning_rate: auto` replaced by the range test's suggestion: the
    one recorded in lr_finder.json when resuming a run that had found it, else a new sweep on
    un-augmented training batches (the model and its optimiser restored afterwards), written
    to lr_finder.json and plots/lr_finder.png."""
    from imgclf.plots import plot_lr_finder
    from imgclf.training import lr_finder

    path = runner.prepared.run_dir / runs.LR_FINDER
    found = runs.read_json(path).get("phases", []) if path.is_file() else []
    earlier = [s for s in found if s.get("phase") == phase.name]
    if runner.resume is not None and earlier:
        rate = float(earlier[-1]["suggestion"])
    else:
        constant = {"schedule": "constant", "warmup_epochs": 0, "learning_rate": 1e-3}
        sweep = lr_finder.range_test(
            runner.model,
            make_training_data(runner.splits, runner.config, runner.batch_size)[0],
            lambda rate: _optimizer(runner, phase, phase.train.model_copy(update=constant)),
            lambda opt: compile_model(
                runner.model, phase.train, _steps(runner), opt, _targets(runner)
            ),
            phase.name,
        )
        rate = _usable_rate(runner, sweep, found)
        if runner.verbose:
            print(lr_finder.describe(sweep), flush=True)
        found = [s for s in found if s.get("phase") != phase.name] + [sweep.as_json()]
        if runner.prepared.chief:
            runs.write_json(path, {"phases": found})
            plot_lr_finder(found, runner.prepared.run_dir / runs.LR_FINDER_PLOT)
    return dataclasses.replace(phase, train=phase.train.model_copy(update={"learning_rate": rate}))


def _usable_rate(runner: PhaseRunner, sweep: Any, found: list[dict[str, Any]]) -> float:
    """The sweep's suggestion, unless its loss never fell (`Sweep.flat`: no rate helped, and
    the minimum/10 rule would pick a rate near the start of the sweep): then, fine-tuning, the
    head phase's found rate × transfer.fine_tune_lr_factor (sweep.rule says so); else a
    UserError asking for a rate."""
    if not sweep.flat:
        return sweep.suggestion
    head = [s for s in found if s.get("phase") == "head"]
    if sweep.phase == "fine_tune" and head:
        factor = runner.config.transfer.fine_tune_lr_factor
        sweep.suggestion = float(head[-1]["suggestion"]) * factor
        sweep.rule = f"the loss never fell: head rate × fine_tune_lr_factor {factor:g}"
        return sweep.suggestion
    raise UserError(
        f"the learning-rate range test ({sweep.phase} phase) saw the loss fall at no rate from "
        f"{sweep.rates[0]:.0e} to {sweep.rates[-1]:.0e}; set train.learning_rate yourself"
    )


def _early_stopping(runner: PhaseRunner, phase: Phase) -> keras.callbacks.EarlyStopping:
    import keras

    es = phase.train.early_stopping
    return keras.callbacks.EarlyStopping(
        monitor=es.monitor,
        mode="min" if es.monitor == "val_loss" else "max",
        # patience 0 means "never stop early"; best weights are still restored.
        patience=es.patience if es.patience > 0 else phase.train.epochs + 1,
        min_delta=es.min_delta,
        restore_best_weights=es.restore_best,
        verbose=1 if runner.verbose else 0,
    )


def _callbacks(runner: PhaseRunner, phase: Phase, early: Any, cached: bool) -> list[Any]:
    """The callbacks of a phase's fit, in order (the resume backup is added last by
    `fit_phase`): each epoch's shuffled order (the cached head phase adds its own), the
    schedule, history, tracking (TensorBoard, MLflow: they read history's row), the divergence
    guard, early stopping, diagnostics, then the time-left estimate (after the diagnostics: an
    epoch's time includes them)."""

    runner.history.phase = phase.name
    guard = divergence_guard(runner.history, phase)
    tracked = tracking.phase_callbacks(runner)  # [] unless train.tensorboard / train.mlflow
    callbacks = [*schedule_callbacks(phase.train), runner.history, *tracked, guard, early]
    if not cached:
        callbacks.insert(0, epoch_order_callback(runner.data[0]))
    if runner.diagnostics is not None and not cached:
        runner.diagnostics.phase = phase.name
        callbacks.append(runner.diagnostics)
    if runner.estimate is not None:
        runner.estimate.phase = phase.name
        callbacks.append(runner.estimate.callback())
    return callbacks


def fit_phase(runner: PhaseRunner, phase: Phase, report: dict[str, Any]) -> dict[str, Any]:
    """Fit `phase` (through the model, on cached backbone features, or multi-worker), with
    early stopping and the phase's schedule; completes and returns `report`."""

    config, tcfg = runner.config, phase.train
    early = _early_stopping(runner, phase)
    cached = phase.name != "train" and can_cache_features(config, phase)
    callbacks = _callbacks(runner, phase, early, cached)
    resumed = 0  # epochs of this phase done before an interruption
    if runner.resume is not None:
        # Last: the epoch's state is saved after every other callback has taken it in (the
        # diagnostics' forward pass draws dropout masks too).
        every = tcfg.backup_every
        callbacks.append(backup_callback(runner.resume, phase.name, every, early, runner.augmenter))
        resumed = runner.resume.backup_epoch(phase.name)
    if runner.verbose and phase.name != "train":
        print(
            f"phase {phase.name}: {report['trainable_params']:,} trainable / "
            f"{report['frozen_params']:,} frozen parameters, up to {tcfg.epochs} epochs at "
            f"learning rate {tcfg.learning_rate:g}"
            + (", on cached backbone features" if cached else ""),
            flush=True,
        )
    # Multi-label: class_weight weighs each label's positives inside the loss (compile_model).
    multilabel = runner.splits.train.targets is not None
    mode = "none" if multilabel else tcfg.class_weight
    weights = class_weights(runner.splits.train.y, len(runner.splits.class_names), mode)
    rows_before, start = len(runner.history.rows) - resumed, time.perf_counter()
    if resumed and runner.verbose:
        print(f"phase {phase.name}: resuming after epoch {resumed}", flush=True)
    if tcfg.distribute == "multiworker":
        watch_multiworker(runner, tcfg.collective_timeout)
    if cached:
        fit_head_on_features(
            runner.model, runner.splits, config, phase, runner.batch_size, callbacks, weights,
            runner.verbose, runner.estimate, runner.augmenter, runner.strategy,
        )  # fmt: skip
    elif tcfg.distribute == "multiworker":
        fit_multiworker(
            runner.model, runner.strategy, *runner.data, tcfg.epochs, callbacks, weights,
            runner.verbose,
        )  # fmt: skip
    else:
        # shuffle=False: the pipeline already reshuffles every epoch, with the seed.
        runner.model.fit(
            runner.data[0], validation_data=runner.data[1], epochs=tcfg.epochs,
            callbacks=callbacks, verbose=runner.verbose, shuffle=False, class_weight=weights,
        )  # fmt: skip
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["epochs_run"] = len(runner.history.rows) - rows_before
    report["cached_features"] = cached
    best = early.best
    report[f"best_{tcfg.early_stopping.monitor}"] = float(best) if best is not None else None
    _keep_if_better(runner, phase, report, best)
    return report


def _keep_if_better(runner: PhaseRunner, phase: Phase, report: dict[str, Any], best: Any) -> None:
    es = phase.train.early_stopping
    if not es.restore_best or best is None:
        return
    if phase.name == "head":
        runner.head_end = (float(best), runner.model.get_weights())
    elif phase.name == "fine_tune" and runner.head_end is not None:
        head_best, head_weights = runner.head_end
        worse = best > head_best if es.monitor == "val_loss" else best < head_best
        report["kept"] = not worse
        if worse:
            runner.model.set_weights(head_weights)
            if runner.verbose:
                print(
                    f"fine-tuning never beat the head phase on {es.monitor} "
                    f"({float(best):.4f} vs {head_best:.4f}): keeping the head-phase weights",
                    flush=True,
                )


def watch_multiworker(runner: PhaseRunner, seconds: float) -> None:
    """The watchdog of this phase's multi-worker fits (`distribute.configure_watchdog`): the
    chief's stacks go to the run's stacks.txt and its run is marked failed; another worker's
    stacks go to the system's temporary folder."""
    run_dir, chief = runner.prepared.run_dir, runner.prepared.chief
    fail = (lambda reason: runs.set_state(run_dir, runs.FAILED, reason)) if chief else None
    configure_watchdog(seconds, run_dir / runs.STACKS if chief else None, fail)
