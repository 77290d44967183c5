"""`imgclf-train --find-lr`: the learning-rate range test alone, before a run is trained.

It loads the recipe's data, builds its model (for a transfer recipe: with the backbone frozen,
as in the head phase), runs `lr_finder.range_test` and writes lr_finder.json and
plots/lr_finder.png into `--out` or `runs/<name>-lr-finder-<time>/` (a folder that holds no
model, so the app and `imgclf-compare` do not list it as a run). The fine-tune phase's rate
depends on the trained head, so it is found at the start of that phase with
`train.learning_rate: auto`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf import runs
from imgclf.config import dump_config

if TYPE_CHECKING:
    from imgclf.schema import Config
    from imgclf.training.lr_finder import Sweep


def find_learning_rate(
    config: Config, out: str | Path | None = None, runs_root: str | Path = runs.DEFAULT_ROOT
) -> tuple[Path, Sweep]:
    """Run the range test for the first phase of `config`; returns (the folder written, the
    sweep with its suggested rate). Raises ConfigError/DataError like training, UserError when
    the curve cannot be read."""
    from imgclf.data import load_data
    from imgclf.plots import plot_lr_finder
    from imgclf.training import lr_finder
    from imgclf.training.backend import make_training_data, set_deterministic
    from imgclf.training.optim import (
        compile_model,
        make_optimizer,
        resolve_batch_size,
        steps_per_epoch,
    )
    from imgclf.training.prepare import build_for_training
    from imgclf.training.transfer import (
        freeze_backbone,
        layerwise_rates,
        plan_phases,
        unfreeze_top,
        with_layer_rates,
    )

    set_deterministic(config.seed)
    splits = load_data(config)
    batch_size = resolve_batch_size(config.train, len(splits.train))
    steps = steps_per_epoch(len(splits.train), batch_size)
    model = build_for_training(config, splits, None, batch_size)  # as a run builds it
    phase = plan_phases(config)[0]
    if phase.name == "head":
        freeze_backbone(model)
    elif phase.name == "fine_tune":  # transfer.head_epochs: 0
        unfreeze_top(model, config.transfer.unfreeze)
    constant = {"schedule": "constant", "warmup_epochs": 0, "learning_rate": 1e-3}
    tcfg = phase.train.model_copy(update=constant)
    decay = config.transfer.layer_lr_decay if phase.name == "fine_tune" else None

    def optimizer(rate: float) -> Any:
        made = make_optimizer(tcfg, steps)
        return with_layer_rates(made, model, layerwise_rates(model, decay)) if decay else made

    sweep = lr_finder.range_test(
        model,
        make_training_data(splits, config, batch_size)[0],
        optimizer,
        lambda made: compile_model(model, tcfg, steps, made, splits.train.targets),
        phase.name,
    )
    folder = runs.new_run_dir(f"{config.name}-lr-finder", out, runs_root)
    record = {"phases": [sweep.as_json()], "config": dump_config(config)}
    runs.write_json(folder / runs.LR_FINDER, record)
    plot_lr_finder(record["phases"], folder / runs.LR_FINDER_PLOT)
    return folder, sweep
