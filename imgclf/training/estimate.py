"""How long a run has left: a Keras callback that estimates the whole job (every phase, then
the end of the run) from what it has measured, prints it and writes `progress.json`.

What it measures: seconds per training batch after the first few batches of each phase (the
first batch also traces the step function, so it is left out), seconds per validation image
(a forward pass in inference mode) and each finished epoch's seconds. What it assumes:

    an epoch of a phase started       its measured epochs (or, before the first has ended,
                                      batches × seconds per batch + validation)
    an epoch of a phase to come       per training image one forward pass through a frozen
                                      backbone, FINE_TUNE_COST of them when the backbone
                                      trains (forward + backward); plus validation
    the end of the run                one forward pass per image of the splits it reads
                                      (train up to ood.MAX_FIT_IMAGES, val, test), the parity
                                      images twice, plus EXPORT_S for the SavedModel

Every phase is counted at its maximum epochs: early stopping can only end it sooner, so the
estimate is an upper bound that falls as epochs pass. It is printed after the first batches of
each phase and after every epoch, and written to the run's `progress.json` (read by the app's
Train page; `finish_run` removes it before the manifest).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgclf import runs
from imgclf.confidence.ood import MAX_FIT_IMAGES
from imgclf.export.parity import PARITY_MAX_IMAGES
from imgclf.training.progress import duration
from imgclf.training.transfer import can_cache_features, plan_phases

FINE_TUNE_COST = 3.0
EXPORT_S = 20.0  # writing, tracing, reloading and checking the SavedModel (Lite0 224 px: ~20 s)
WARM_BATCHES = 4  # training batches timed (after the first) before a phase's first estimate


@dataclass
class PhaseShape:
    """One phase as the estimate sees it: its name, maximum epochs, and the cost of a training
    image in forward passes (1: a frozen backbone; FINE_TUNE_COST: the backbone trains; 0: the
    head trains on cached features, which cost one forward pass per image once)."""

    name: str
    max_epochs: int
    cost: float
    once: int = 0  # forward passes over the training images before the epochs (cached views)
    done: int = 0
    epoch_s: list[float] = field(default_factory=list)


@dataclass
class JobShape:
    """The sizes the estimate needs: images per split, batches per epoch, the phases."""

    phases: list[PhaseShape]
    n_train: int
    n_val: int
    n_test: int
    steps: int  # training batches per epoch
    n_fit: int  # training images the confidence fit reads (the OOD detector)
    n_parity: int  # test images the export checks, twice (SavedModel, serve_bytes + corpus)


def job_shape(config: Any, splits: Any, batch_size: int) -> JobShape:
    """The JobShape of a run of `config` on `splits`."""

    phases = []
    for phase in plan_phases(config):
        once = 0
        if phase.name == "head":
            cached = can_cache_features(config, phase)
            cost = 0.0 if cached else 1.0
            if cached:  # the views actually computed: at most one per epoch
                views = min(config.transfer.augmented_views, phase.train.epochs)
                once = views if config.augment.enabled and views else 1
        else:
            cost = FINE_TUNE_COST
        phases.append(PhaseShape(phase.name, phase.train.epochs, cost, once))
    n_train, n_test = len(splits.train), len(splits.test)
    return JobShape(
        phases,
        n_train,
        len(splits.val),
        n_test,
        -(-n_train // batch_size),
        min(n_train, MAX_FIT_IMAGES) if config.train.ood else 0,
        (min(n_test, PARITY_MAX_IMAGES) if config.train.export else 0),
    )


class Estimate:
    """The estimate of one run; `callback()` is the Keras callback that feeds it. Set `phase`
    (a name of `shape.phases`) before each fit, as for the history callback."""

    def __init__(self, run_dir: Path, shape: JobShape, started: float, verbose: int | str) -> None:
        self.run_dir, self.shape, self.started, self.verbose = run_dir, shape, started, verbose
        self.phase = shape.phases[0].name if shape.phases else "train"
        self.forward_s: float | None = None  # seconds per image, inference mode
        self.batch_s: float | None = None  # seconds per training batch, this phase
        self._announced: set[str] = set()

    # -- measurements -----------------------------------------------------------------------

    def observe_forward(self, images: int, seconds: float) -> None:
        """A forward pass over `images` took `seconds` (validation, or cached features)."""
        if images > 0 and seconds > 0:
            self.forward_s = seconds / images

    def _current(self) -> PhaseShape:
        for shape in self.shape.phases:
            if shape.name == self.phase:
                return shape
        shape = PhaseShape(self.phase, 1, FINE_TUNE_COST)
        self.shape.phases.append(shape)
        return shape

    def _forward_s(self) -> float | None:
        """Seconds per image of a forward pass: measured, or guessed from the training step."""
        if self.forward_s is not None:
            return self.forward_s
        current = self._current()
        if self.batch_s is None or current.cost == 0:
            return None
        per_image = self.batch_s / max(1, -(-self.shape.n_train // self.shape.steps))
        return per_image / current.cost

    # -- the estimate -------------------------------------------------------------------------

    def remaining(self) -> float | None:
        """Seconds the whole run has left at most (None until something was measured)."""
        fwd = self._forward_s()
        if fwd is None:
            return None
        s, left, started = self.shape, 0.0, False
        for phase in s.phases:
            if phase.name == self.phase:
                started = True
                epochs_left = phase.max_epochs - phase.done
                if phase.epoch_s:
                    epoch = sum(phase.epoch_s[-2:]) / len(phase.epoch_s[-2:])
                elif self.batch_s is not None:  # validation: cached features cost ~nothing
                    epoch = self.batch_s * s.steps + (fwd * s.n_val if phase.cost else 0.0)
                else:
                    epoch = self._epoch_guess(phase, fwd)
                left += max(0, epochs_left) * epoch
            elif started:
                left += self._phase_guess(phase, fwd)
        return left + self.finish_guess(fwd)

    def _epoch_guess(self, phase: PhaseShape, fwd: float) -> float:
        return fwd * (max(phase.cost, 0.05) * self.shape.n_train + self.shape.n_val)

    def _phase_guess(self, phase: PhaseShape, fwd: float) -> float:
        if phase.cost == 0:  # features once (per cached view), then epochs of a tiny head
            return fwd * (max(1, phase.once) * self.shape.n_train + self.shape.n_val)
        return phase.max_epochs * self._epoch_guess(phase, fwd)

    def finish_guess(self, fwd: float | None = None) -> float:
        """Seconds the end of the run (confidence, evaluation, export) should take."""
        fwd = self._forward_s() if fwd is None else fwd
        s = self.shape
        images = s.n_fit + s.n_val + s.n_test + 2 * s.n_parity
        return (fwd or 0.0) * images + (EXPORT_S if s.n_parity else 0.0)

    def report(self, stage: str, left: float | None) -> None:
        """Write progress.json and, when verbose, print the estimate."""
        elapsed = time.perf_counter() - self.started
        record = {
            "stage": stage,
            "phase": self.phase,
            "epochs_done": {p.name: p.done for p in self.shape.phases},
            "max_epochs": {p.name: p.max_epochs for p in self.shape.phases},
            "elapsed_s": round(elapsed, 1),
            "remaining_s": None if left is None else round(left, 1),
            "ends_at": None if left is None else time.time() + left,
            "updated": time.time(),
        }
        runs.write_json(self.run_dir / runs.PROGRESS, record)
        if self.verbose and left is not None:
            ends = time.strftime("%H:%M", time.localtime(time.time() + left))
            lead = "\n" if self.verbose == 1 and stage == "training" else ""
            print(
                f"{lead}estimate: at most about {duration(left)} left ({duration(elapsed)} so far; "
                f"ends around {ends})",
                flush=True,
            )

    def finishing(self) -> None:
        """The end of the run has begun: record its estimate."""
        self.report("evaluating and exporting", self.finish_guess())

    def callback(self) -> Any:
        """The Keras callback that measures training for this estimate (put it last)."""
        import keras

        estimate = self

        class EstimateCallback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
                self._epoch_start = self._batch_start = time.perf_counter()
                self._batches = 0

            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                now = time.perf_counter()
                self._batches += 1
                if self._batches == 1:  # the first batch traces the step: not timed
                    self._batch_start = now
                    return
                timed = self._batches - 1
                phase = estimate._current()
                last = min(WARM_BATCHES, estimate.shape.steps - 1)
                if timed == last and phase.name not in estimate._announced and not phase.done:
                    estimate.batch_s = (now - self._batch_start) / timed
                    estimate._announced.add(phase.name)
                    estimate.report("training", estimate.remaining())

            def on_test_begin(self, logs: dict | None = None) -> None:
                self._test_start = time.perf_counter()

            def on_test_end(self, logs: dict | None = None) -> None:
                if estimate._current().cost == 0:  # the head alone, on cached features
                    return
                seconds = time.perf_counter() - self._test_start
                estimate.observe_forward(estimate.shape.n_val, seconds)

            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                phase = estimate._current()
                phase.done += 1
                phase.epoch_s.append(time.perf_counter() - self._epoch_start)
                estimate.report("training", estimate.remaining())

        return EstimateCallback()
