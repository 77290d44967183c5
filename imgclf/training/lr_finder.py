"""The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural Networks",
WACV 2017, section 3.3; popularised as fastai's `lr_find`): train for a few hundred steps while
the learning rate grows exponentially from START_LR to END_LR, record the loss of every step,
and read a good rate off the curve.

    rate of step i     lr_i = start × (end / start) ^ (i / (steps − 1))
    smoothed loss      s_i = m_i / (1 − β^(i+1)),  m_i = β m_(i−1) + (1 − β) loss_i  (β = 0.9,
                       an exponential moving average with bias correction; fastai uses 0.98,
                       a window of about 50 steps: half of a 100-step sweep, 4 of its 8 decades)
    stopping rule      stop when s_i > DIVERGE × min(s_0..s_i) or the loss is not finite
    suggestion         the rate of the smallest smoothed loss divided by 10 (RULE): the loss
                       still falls fast there, an order of magnitude below where it turns

The sweep trains the run's real model, with its real optimiser kind, loss and batch size, on
un-augmented training batches, and then puts everything back: every variable of the model (the
weights, batch-norm statistics, dropout's random state) is restored, and the model is compiled
again with the optimiser it had, whose state the sweep never touched (it trains with its own
optimiser of the same kind). So nothing of the trial steps reaches the real run.

`train.learning_rate: auto` runs it at the start of every phase (for a two-phase transfer:
the head phase with the backbone frozen, then the fine-tune phase on the trained head, instead
of `transfer.fine_tune_lr_factor`); `imgclf-train --find-lr` runs it alone and prints the
suggestion. Results: lr_finder.json and plots/lr_finder.png in the run folder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.infra.errors import UserError

if TYPE_CHECKING:
    import keras

START_LR = 1e-7
END_LR = 10.0
STEPS = 100
BETA = 0.9  # smoothing: a window of about 10 steps (0.8 of a decade in the default sweep)
DIVERGE = 4.0  # stop once the smoothed loss is this many times its minimum
RULE = "minimum/10"


@dataclass
class Sweep:
    """One range test: the rate and loss of every step (float lists of equal length), the
    smoothed losses, and the suggested rate with the rule that picked it."""

    phase: str
    rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float = float("nan")
    rule: str = RULE
    steepest: float = float("nan")  # the alternative rule: the steepest fall of the curve
    stopped_early: bool = False  # the stopping rule ended it before END_LR
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def flat(self) -> bool:
        """True when the loss never fell: its smallest smoothed value came in the first tenth
        of the sweep, or is within 2% of the first (no rate was seen to help)."""
        best = int(np.argmin(self.smoothed))
        return best <= max(len(self.smoothed) // 10, 1) or (
            min(self.smoothed) > 0.98 * self.smoothed[0]
        )


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """The bias-corrected exponential moving average of `losses` (see the module docstring)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest(rates: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(minimum/10, steepest): the rate of the smallest smoothed loss over 10, and the rate where
    the smoothed loss falls fastest per decade of rate before that minimum.

    Raises UserError when the curve is too short to read (fewer than 10 steps before it
    diverged): the start rate already diverges."""
    if len(smoothed) < 10:
        where = f"at rate {rates[-1]:.2g}" if rates else "at its first step"
        raise UserError(
            f"the learning-rate range test diverged after {len(smoothed)} steps, {where}: the "
            "loss is not finite even at tiny rates; check the data and the model (e.g. switch "
            "on model.batch_norm, or model.weights from a run that diverged), or set "
            "train.learning_rate yourself"
        )
    best = int(np.argmin(smoothed))
    minimum = rates[best] / 10
    skip = max(len(smoothed) // 10, 1)  # the first steps' average rests on a few losses
    if best <= skip + 1:
        return minimum, minimum
    slope = np.gradient(np.asarray(smoothed[skip : best + 1]), np.log10(rates[skip : best + 1]))
    return minimum, float(rates[skip + int(np.argmin(slope))])


def _batches(dataset: Any):
    """Batches of `dataset` (a tf.data pipeline or a Keras PyDataset) for ever: a sweep may be
    longer than an epoch."""
    while True:
        if hasattr(dataset, "num_batches"):  # a PyDataset: indexed, not iterated
            epoch = (dataset[i] for i in range(dataset.num_batches or 0))
        else:
            epoch = iter(dataset)
        empty = True
        for batch in epoch:
            empty = False
            yield batch[0], batch[1]
        if empty:
            raise UserError("the learning-rate range test got no training batches")


def range_test(
    model: keras.Model,
    dataset: Any,
    make_optimizer: Any,
    compile_with: Any,
    phase: str = "train",
    steps: int = STEPS,
    start: float = START_LR,
    end: float = END_LR,
) -> Sweep:
    """Run the range test on `model` and restore it; returns the Sweep.

    `dataset` yields (images, one-hot labels) batches; `make_optimizer(rate)` makes a fresh
    optimiser of the run's kind at a constant rate; `compile_with(optimizer)` compiles `model`
    the way the phase does. The model's weights and its compiled optimiser (with its state) are
    the same afterwards as before. Raises UserError when the curve cannot be read."""
    import time

    began = time.perf_counter()
    # Every variable: the weights, batch-norm statistics and dropout's random state.
    variables = [(v, np.array(v)) for v in model.variables]
    previous = getattr(model, "optimizer", None)
    sweep = Sweep(phase)
    try:
        optimizer = make_optimizer(start)
        compile_with(optimizer)
        factor, batches = (end / start) ** (1 / max(steps - 1, 1)), _batches(dataset)
        best = math.inf
        for i in range(steps):
            rate = start * factor**i
            optimizer.learning_rate.assign(rate)
            x, y = next(batches)
            loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
            if not math.isfinite(loss):
                sweep.stopped_early = True
                break
            sweep.rates.append(rate)
            sweep.losses.append(loss)
            sweep.smoothed = smooth(sweep.losses)
            best = min(best, sweep.smoothed[-1])
            if sweep.smoothed[-1] > DIVERGE * best:
                sweep.stopped_early = True
                break
    finally:
        for variable, value in variables:
            variable.assign(value)
        if previous is not None:
            compile_with(previous)
    sweep.suggestion, sweep.steepest = suggest(sweep.rates, sweep.smoothed)
    sweep.seconds = round(time.perf_counter() - began, 2)
    return sweep


def describe(sweep: Sweep) -> str:
    """One line for the console: the suggestion, the rule, and where the sweep ended."""
    end = "diverged" if sweep.stopped_early else "reached"
    lowest = sweep.rates[int(np.argmin(sweep.smoothed))]
    warning = "; warning: the loss never fell, no rate was seen to help" if sweep.flat else ""
    return (
        f"lr finder ({sweep.phase} phase): suggested learning rate {sweep.suggestion:.2g} "
        f"(rule {sweep.rule}; the smallest smoothed loss was at {lowest:.2g}, the steepest "
        f"fall at {sweep.steepest:.2g}); {len(sweep.rates)} steps, {end} at "
        f"{sweep.rates[-1]:.2g}, {sweep.seconds:.1f} s{warning}"
    )
