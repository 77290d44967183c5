"""Training: `train(config)` runs three steps and returns the run directory:

    prepare      data, model, strategy, the run directory with config.yaml, labels, data report
    run_phases   the phases of `transfer.plan_phases` (one `train` phase, or `head` then
                 `fine_tune`), history.csv rewritten after every epoch (imgclf.phases)
    finish_run   model.keras, test metrics, plots, samples, SavedModel, model card, manifest
                 (imgclf.finish)

`python -m imgclf.train` parses arguments, checks what it can without TensorFlow (the config,
the data folder, the output folder: `preflight`), and calls `train`. Keras is imported inside
the steps, so `--help`, `--print-config` and every preflight error answer at once. Training runs
on any Keras backend (`KERAS_BACKEND`, default tensorflow; see imgclf/backend.py): only the
SavedModel export at the end needs TensorFlow, and is skipped under other backends.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf import runs
from imgclf.config import Config, dump_config, load_config
from imgclf.errors import ConfigError, UserError

if TYPE_CHECKING:
    import keras

    from imgclf.data import Splits

EXAMPLES = (
    "examples:\n"
    "  imgclf-train\n"
    "  imgclf-train --config configs/digits_mlp.yaml train.epochs=3 model.hidden=[64,32]\n"
    "  imgclf-train --config configs/fashion_cnn.yaml --print-config"
)


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


def preflight(config: Config, out: str | Path | None = None) -> None:
    """What can be checked before TensorFlow loads (it costs seconds to import): a folder
    source's folder exists, and `out` is free. Raises DataError or FileExistsError."""
    if config.data.source == "folder":
        from imgclf.data.folder import check_root

        check_root(config.data.path)
    if out is not None:
        runs.check_new_run_dir(out)


def _build(config: Config, splits: Splits, strategy: Any, batch_size: int) -> keras.Model:
    """The model under the strategy and mixed-precision policy; compiled for single-phase runs
    (the phases of a transfer run compile themselves)."""
    import keras

    from imgclf.models import build_model
    from imgclf.optim import compile_model, steps_per_epoch

    tcfg = config.train
    previous_policy = keras.config.dtype_policy()
    if tcfg.mixed_precision != "none":
        # Hidden layers compute in 16 bits; the softmax layer is pinned to float32 (blocks.py).
        keras.config.set_dtype_policy(tcfg.mixed_precision)
    try:
        # Variables (model and optimiser) are created under the strategy, so they are mirrored.
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = build_model(config, len(splits.class_names), splits.train.x)
            if not config.model.pretrained:
                compile_model(model, tcfg, steps_per_epoch(len(splits.train), batch_size))
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return model


def prepare(
    config: Config, out: str | Path | None, verbose: int | str, runs_root: Path, splits: Any
) -> Prepared:
    """Step 1: backend checks, seeds, data, model; then the run directory with config.yaml,
    labels.json and data_report.json. Data and config errors stop before the directory exists."""
    from imgclf.backend import check_backend, set_deterministic
    from imgclf.data import load_data
    from imgclf.distribute import is_chief, make_strategy
    from imgclf.optim import resolve_batch_size

    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    chief = is_chief()
    preflight(config, out if chief else None)  # other workers never write to `out`
    check_backend(config)  # e.g. train.distribute under JAX: a one-line error, nothing written
    # First: a multi-worker strategy must exist before the program does other TensorFlow work.
    strategy = make_strategy(config.train.distribute)
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
    model = _build(config, splits, strategy, batch_size)
    # The other workers run the same program; their copy is thrown away at the end.
    run_dir = (
        runs.new_run_dir(config.name, out, runs_root)
        if chief
        else Path(tempfile.mkdtemp(prefix="imgclf-worker-"))
    )
    runs.write_text(run_dir / runs.CONFIG, dump_config(config))
    runs.write_json(run_dir / runs.LABELS, splits.class_names)
    runs.write_json(run_dir / runs.DATA_REPORT, splits.report)
    if verbose:
        totals = splits.report["totals"]
        print(
            f"run: {run_dir}\ndata: {len(splits.class_names)} classes, {totals['train']} train / "
            f"{totals['val']} val / {totals['test']} test images, "
            f"{len(splits.report['skipped'])} skipped\nmodel: {config.model.name}, "
            f"{model.count_params():,} parameters"
            + (f", {strategy.num_replicas_in_sync} replicas" if strategy is not None else ""),
            flush=True,
        )
    return Prepared(config, splits, model, strategy, batch_size, run_dir, chief, verbose)


def run_phases(p: Prepared) -> dict[str, Any]:
    """Step 2: every phase of the schedule on `p.model`; returns what metrics.json records
    about training (`phases`, `epochs_run`)."""
    from imgclf.augment import build_augmenter
    from imgclf.backend import make_training_data
    from imgclf.diagnostics import fixed_batch, make_diagnostics, should_enable
    from imgclf.phases import PhaseRunner, history_callback
    from imgclf.transfer import plan_phases

    config = p.config
    augmenter = build_augmenter(config.augment, config.data.image_size, config.seed)
    # tf.data pipelines on the TensorFlow backend, NumPy PyDatasets (no TensorFlow) on others.
    data = make_training_data(p.splits, config, p.batch_size, augmenter)
    history = history_callback(p.run_dir / runs.HISTORY)
    diagnostics = None
    # Diagnostics read gradients outside the strategy's replica context: single device only.
    if p.strategy is None and should_enable(p.model, config.train.diagnostics):
        # Gradient/activation statistics on a fixed batch of training images, every epoch.
        diag_x, diag_y = fixed_batch(p.splits.train.x, p.splits.train.y, n=64, seed=config.seed)
        diagnostics = make_diagnostics(p.run_dir, diag_x, diag_y)
    runner = PhaseRunner(
        p.model, config, p.splits, data, p.batch_size, history, diagnostics, p.strategy, p.verbose
    )
    reports = [runner.run(phase) for phase in plan_phases(config)]
    return {"epochs_run": len(history.rows), "phases": reports}


def _single_device(p: Prepared) -> keras.Model:
    """The trained weights in a model built without the strategy, so model.keras and the
    SavedModel do not depend on how training ran."""
    from imgclf.models import build_model

    if p.strategy is None:
        return p.model
    model = build_model(p.config, len(p.splits.class_names), p.splits.train.x)
    model.set_weights(p.model.get_weights())
    return model


def train(
    config: Config,
    out: str | Path | None = None,
    verbose: int | str = "auto",
    runs_root: str | Path = runs.DEFAULT_ROOT,
    splits: Splits | None = None,
) -> Path:
    """Train `config` end to end and return the run directory holding every artifact.

    Writes config.yaml, labels.json, data_report.json, history.csv, model.keras (best weights),
    metrics.json (held-out test set), plots/, samples/, worst/, saved_model/ (parity-checked),
    exports.json, model_card.md and manifest.json, each atomically. `splits` (optional) is data
    already loaded and divided (e.g. by `data.splits_from_arrays` for a benchmark's folds); by
    default `load_data(config)` loads `config.data`. `out` is the run directory to create
    (default `runs_root/<name>-<time>`).

    Raises:
        ConfigError, DataError: the config cannot run or the data is unusable (nothing is
            written: the run directory is created after the data has loaded).
        FileExistsError: `out` exists and is not empty.
        ExportError: the SavedModel disagrees with the trained model (the run has no manifest).
    """
    from imgclf.finish import finish_run

    p = prepare(config, out, verbose, Path(runs_root), splits)
    training = run_phases(p)
    finish_run(p.run_dir, _single_device(p), p.splits, config, training, p.verbose)
    if p.chief and Path(runs_root) in p.run_dir.parents:
        runs.point_latest(p.run_dir)
    if not p.chief:
        shutil.rmtree(p.run_dir, ignore_errors=True)
    return p.run_dir


def build_parser() -> argparse.ArgumentParser:
    """The `imgclf-train` argument parser (importing it costs no TensorFlow)."""
    parser = argparse.ArgumentParser(
        prog="imgclf-train",
        description="Train an image classifier. With no --config, trains the embedded default "
        "(configs/default.yaml: a CNN on 5,000 MNIST digits).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config file (default: the embedded default)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, values parsed as YAML (e.g. train.epochs=3)",
    )
    parser.add_argument("--out", help="run directory to create (default runs/<name>-<time>)")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config and exit (nothing is trained)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress output; print only the run directory",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's own start-up log lines (hidden by default; or set "
        "IMGCLF_TF_LOGS=1)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m imgclf.train` and `imgclf-train`; returns the exit code."""
    from imgclf.console import quiet_tensorflow

    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            sys.stdout.write(dump_config(config))
            return 0
        preflight(config, args.out)  # before TensorFlow loads: these answer at once
        quiet_tensorflow(args.verbose)
        run_dir = train(config, out=args.out, verbose=0 if args.quiet else "auto")
    except (UserError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no model.keras was written for this run", file=sys.stderr)
        return 130
    print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
