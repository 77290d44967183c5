"""Training: `train(config)` runs config -> data -> model -> fit -> evaluate -> export and returns
the run directory. `python -m imgclf.train` parses arguments and calls it.

Keras is imported inside `train`, so `--help`, `--print-config` and config errors are instant.
Training runs on any Keras backend (`KERAS_BACKEND`, default tensorflow; see imgclf/backend.py):
only the SavedModel export at the end needs TensorFlow, and is skipped under other backends.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf import runs
from imgclf.config import Config, dump_config, load_config
from imgclf.errors import ConfigError, UserError

if TYPE_CHECKING:
    import keras

    from imgclf.data import Splits
    from imgclf.transfer import Phase

# progress(event, info): see `train`.
Progress = Callable[[str, dict[str, Any]], None]

HISTORY_FIELDS = (
    "epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds",
)  # fmt: skip
MAX_SAMPLES = 10


def _history_callback(path: Path, progress: Progress | None = None) -> keras.callbacks.Callback:
    """A callback that rewrites history.csv (atomically) after every epoch, so an interrupted run
    still shows what it learned, and passes each row to `progress`. Set its `phase` before each
    `fit`; epochs count on across fits."""
    import keras

    class HistoryCSV(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict[str, Any]] = []
            self._start = 0.0
            self.phase = "train"

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            lr = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            row = {"epoch": len(self.rows) + 1, "phase": self.phase}
            row.update({k: f"{float(logs[k]):.6g}" for k in HISTORY_FIELDS[2:6] if k in logs})
            row["learning_rate"] = f"{float(lr):.6g}"
            row["seconds"] = f"{time.perf_counter() - self._start:.2f}"
            self.rows.append(row)
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
            runs.write_text(path, buffer.getvalue())
            if progress is not None:
                progress("epoch", dict(row))

    return HistoryCSV()


class _PhaseFitter:
    """Runs the phases of `transfer.plan_phases` on one model: for each, sets what trains,
    compiles, fits with fresh early stopping, and reports what it did (metrics.json `phases`).

    After fine-tuning, when best-weight restore is on and fine-tuning never beat the end of the
    head phase on the monitored validation figure, the head-phase weights are put back (and the
    report says so): fine-tuning is only kept when it helped.
    """

    def __init__(
        self,
        model: keras.Model,
        config: Config,
        splits: Splits,
        data: tuple[Any, Any],
        batch_size: int,
        history: Any,
        diagnostics: Any,
        strategy: Any,
        verbose: int | str,
    ) -> None:
        self.model, self.config, self.splits, self.data = model, config, splits, data
        self.batch_size, self.history, self.diagnostics = batch_size, history, diagnostics
        self.strategy, self.verbose = strategy, verbose
        self._head_end: tuple[float, list[Any]] | None = None  # (best monitored, weights)

    def __call__(self, phase: Phase) -> dict[str, Any]:
        import keras

        from imgclf.distribute import fit_multiworker
        from imgclf.optim import (
            class_weights,
            compile_model,
            make_optimizer,
            schedule_callbacks,
            steps_per_epoch,
        )
        from imgclf.transfer import (
            can_cache_features,
            fit_head_on_features,
            freeze_backbone,
            layerwise_rates,
            trainable_summary,
            unfreeze_top,
            with_layer_rates,
        )

        model, config, tcfg = self.model, self.config, phase.train
        report: dict[str, Any] = {
            "phase": phase.name,
            "max_epochs": tcfg.epochs,
            "learning_rate": tcfg.learning_rate,
        }
        if phase.name == "head":
            freeze_backbone(model)
        elif phase.name == "fine_tune":
            report["unfrozen_layers"] = unfreeze_top(model, config.transfer.unfreeze)
        steps = steps_per_epoch(len(self.splits.train), self.batch_size)
        if phase.name != "train":  # what trains changed: compile again
            optimizer = make_optimizer(tcfg, steps)
            decay = config.transfer.layer_lr_decay
            if phase.name == "fine_tune" and decay:
                optimizer = with_layer_rates(optimizer, model, layerwise_rates(model, decay))
                report["layer_lr_decay"] = decay
            compile_model(model, tcfg, steps, optimizer)
        report.update(trainable_summary(model))
        es = tcfg.early_stopping
        early = keras.callbacks.EarlyStopping(
            monitor=es.monitor,
            mode="min" if es.monitor == "val_loss" else "max",
            # patience 0 means "never stop early"; best weights are still restored.
            patience=es.patience if es.patience > 0 else tcfg.epochs + 1,
            min_delta=es.min_delta,
            restore_best_weights=es.restore_best,
            verbose=1 if self.verbose else 0,
        )
        self.history.phase = phase.name
        callbacks = [*schedule_callbacks(tcfg), self.history, early]
        cached = phase.name != "train" and can_cache_features(config, phase)
        if self.diagnostics is not None and not cached:
            self.diagnostics.phase = phase.name
            callbacks.append(self.diagnostics)
        if self.verbose and phase.name != "train":
            print(
                f"phase {phase.name}: {report['trainable_params']:,} trainable / "
                f"{report['frozen_params']:,} frozen parameters, up to {tcfg.epochs} epochs at "
                f"learning rate {tcfg.learning_rate:g}"
                + (", on cached backbone features" if cached else ""),
                flush=True,
            )
        weights = class_weights(
            self.splits.train.y, len(self.splits.class_names), tcfg.class_weight
        )
        rows_before = len(self.history.rows)
        start = time.perf_counter()
        if cached:
            fit_head_on_features(
                model, self.splits, config, phase, self.batch_size, callbacks, weights,
                self.verbose,
            )  # fmt: skip
        elif tcfg.distribute == "multiworker":
            fit_multiworker(
                model, self.strategy, *self.data, tcfg.epochs, callbacks, weights, self.verbose
            )
        else:
            # shuffle=False: the pipeline already reshuffles every epoch, with the seed.
            model.fit(
                self.data[0],
                validation_data=self.data[1],
                epochs=tcfg.epochs,
                callbacks=callbacks,
                verbose=self.verbose,
                shuffle=False,
                class_weight=weights,
            )
        report["seconds"] = round(time.perf_counter() - start, 2)
        report["epochs_run"] = len(self.history.rows) - rows_before
        report["cached_features"] = cached
        best = early.best
        report[f"best_{es.monitor}"] = float(best) if best is not None else None
        self._keep_if_better(phase, report, best, es)
        return report

    def _keep_if_better(self, phase: Phase, report: dict[str, Any], best: Any, es: Any) -> None:
        if not es.restore_best or best is None:
            return
        if phase.name == "head":
            self._head_end = (float(best), self.model.get_weights())
        elif phase.name == "fine_tune" and self._head_end is not None:
            head_best, head_weights = self._head_end
            worse = best > head_best if es.monitor == "val_loss" else best < head_best
            report["kept"] = not worse
            if worse:
                self.model.set_weights(head_weights)
                if self.verbose:
                    print(
                        f"fine-tuning never beat the head phase on {es.monitor} "
                        f"({float(best):.4f} vs {head_best:.4f}): keeping the head-phase weights",
                        flush=True,
                    )


def _save_samples(run_dir: Path, splits: Splits) -> None:
    """A few test images (one per class first) as PNGs, so a user can try predict at once."""
    import numpy as np
    from PIL import Image

    test = splits.test
    firsts = [int(np.flatnonzero(test.y == c)[0]) for c in np.unique(test.y)][:MAX_SAMPLES]
    folder = run_dir / runs.SAMPLES
    folder.mkdir(exist_ok=True)
    for n, i in enumerate(firsts):
        label = re.sub(r"[^A-Za-z0-9._-]+", "_", splits.class_names[test.y[i]])
        pixels = test.x[i][..., 0] if test.x.shape[-1] == 1 else test.x[i]
        with runs.atomic_path(folder / f"test{n:02d}_true-{label}.png") as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")


def _save_worst(run_dir: Path, splits: Splits, metrics: dict[str, Any]) -> None:
    """The highest-loss test images as PNGs under worst/, named in metrics' worst_predictions
    (`image`), so the app can show them without the dataset."""
    from PIL import Image

    folder = run_dir / runs.WORST
    folder.mkdir(exist_ok=True)
    for n, entry in enumerate(metrics["worst_predictions"]):
        x = splits.test.x[entry["index"]]
        true, pred = (re.sub(r"[^A-Za-z0-9._-]+", "_", entry[k]) for k in ("true", "predicted"))
        name = f"{n:02d}_true-{true}_pred-{pred}.png"
        with runs.atomic_path(folder / name) as tmp:
            Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(tmp, format="PNG")
        entry["image"] = f"{runs.WORST}/{name}"


def train(
    config: Config,
    out: str | Path | None = None,
    verbose: int | str = "auto",
    runs_root: str | Path = runs.DEFAULT_ROOT,
    progress: Progress | None = None,
    splits: Splits | None = None,
) -> Path:
    """Train `config` end to end and return the run directory holding every artifact.

    `splits` (optional) is data already loaded and divided (e.g. by `data.splits_from_arrays`
    for a benchmark's folds); by default `load_data(config)` loads `config.data`.

    Writes config.yaml, labels.json, data_report.json, history.csv, model.keras (best weights),
    metrics.json (held-out test set), plots/, samples/, worst/, saved_model/ (parity-checked),
    exports.json and model_card.md, each atomically.

    `progress(event, info)`, if given, is called as the run goes (the app's live view):
    `("start", {"run_dir", "max_epochs"})` once the run directory exists, `("epoch", row)` with
    each history.csv row (values as text), and `("stage", {"stage": "evaluate" | "export"})`.
    """
    import keras
    import numpy as np

    from imgclf.augment import build_augmenter
    from imgclf.backend import (
        backend_name,
        can_export_saved_model,
        check_backend,
        export_skipped_message,
        make_training_data,
        set_deterministic,
    )
    from imgclf.data import load_data
    from imgclf.diagnostics import fixed_batch, make_diagnostics, should_enable
    from imgclf.distribute import is_chief, make_strategy
    from imgclf.evaluate import evaluate
    from imgclf.export import export_saved_model, saved_model_record
    from imgclf.model_card import model_card
    from imgclf.models import build_model
    from imgclf.optim import compile_model, resolve_batch_size, steps_per_epoch
    from imgclf.plots import plot_confusion, plot_curves
    from imgclf.transfer import plan_phases

    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2

    tcfg = config.train
    check_backend(config)  # e.g. train.distribute under JAX: a one-line error, nothing written
    # First: a multi-worker strategy must exist before the program does other TensorFlow work.
    strategy = make_strategy(tcfg.distribute)
    # Same seed, same run: seeds Python, NumPy and Keras; deterministic kernels on TensorFlow.
    set_deterministic(config.seed)
    if splits is None:
        splits = load_data(config)  # data errors stop here, before a run directory exists
    num_classes = len(splits.class_names)
    batch_size = resolve_batch_size(tcfg, len(splits.train))
    if strategy is not None and batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(
            f"train.batch_size ({batch_size}) must be a multiple of the "
            f"{strategy.num_replicas_in_sync} replicas of train.distribute={tcfg.distribute}"
        )
    previous_policy = keras.config.dtype_policy()
    if tcfg.mixed_precision != "none":
        # Hidden layers compute in 16 bits; the softmax layer is pinned to float32 (blocks.py).
        keras.config.set_dtype_policy(tcfg.mixed_precision)
    try:
        # Variables (model and optimiser) are created under the strategy, so they are mirrored.
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = build_model(config, num_classes, splits.train.x)
            if not config.model.pretrained:
                compile_model(model, tcfg, steps_per_epoch(len(splits.train), batch_size))
    finally:
        keras.config.set_dtype_policy(previous_policy)

    chief = is_chief()
    if chief:
        run_dir = runs.new_run_dir(config.name, out, runs_root)
    else:  # the other workers run the same program; their copy is thrown away at the end
        run_dir = Path(tempfile.mkdtemp(prefix="imgclf-worker-"))
    runs.write_text(run_dir / runs.CONFIG, dump_config(config))
    runs.write_json(run_dir / runs.LABELS, splits.class_names)
    runs.write_json(run_dir / runs.DATA_REPORT, splits.report)
    if verbose:
        totals = splits.report["totals"]
        print(
            f"run: {run_dir}\ndata: {num_classes} classes, {totals['train']} train / "
            f"{totals['val']} val / {totals['test']} test images, "
            f"{len(splits.report['skipped'])} skipped\nmodel: {config.model.name}, "
            f"{model.count_params():,} parameters"
            + (f", {strategy.num_replicas_in_sync} replicas" if strategy is not None else ""),
            flush=True,
        )

    augmenter = build_augmenter(config.augment, config.data.image_size, config.seed)
    # tf.data pipelines on the TensorFlow backend, NumPy PyDatasets (no TensorFlow) on others.
    data = make_training_data(splits, config, batch_size, augmenter)
    if progress is not None:
        max_epochs = sum(phase.train.epochs for phase in plan_phases(config))
        progress("start", {"run_dir": str(run_dir), "max_epochs": max_epochs})
    history_cb = _history_callback(run_dir / runs.HISTORY, progress)
    diagnostics = None
    # Diagnostics read gradients outside the strategy's replica context: single device only.
    if strategy is None and should_enable(model, tcfg.diagnostics):
        # Gradient/activation statistics on a fixed batch of training images, every epoch.
        diag_x, diag_y = fixed_batch(splits.train.x, splits.train.y, n=64, seed=config.seed)
        diagnostics = make_diagnostics(run_dir, diag_x, diag_y)
    fit = _PhaseFitter(
        model, config, splits, data, batch_size, history_cb, diagnostics, strategy, verbose
    )
    phase_reports = [fit(phase) for phase in plan_phases(config)]
    if strategy is not None:
        # Evaluate, save and export a single-device copy: the trained weights without the
        # strategy, so model.keras and the SavedModel do not depend on how training ran.
        trained = model
        model = build_model(config, num_classes, splits.train.x)
        model.set_weights(trained.get_weights())

    with runs.atomic_path(run_dir / runs.MODEL) as tmp:
        model.save(tmp)
    if progress is not None:
        progress("stage", {"stage": "evaluate"})

    metrics, _ = evaluate(
        model,
        splits.test.x,
        splits.test.y,
        splits.class_names,
        k=tcfg.top_k,
        files=splits.test.files,
    )
    metrics["counts"] = splits.report["totals"]
    metrics["epochs_run"] = len(history_cb.rows)
    metrics["phases"] = phase_reports
    _save_worst(run_dir, splits, metrics)
    runs.write_json(run_dir / runs.METRICS, metrics)

    history, phases = _read_history(run_dir / runs.HISTORY)
    plot_curves(history, run_dir / runs.PLOTS / "curves.png", phases)
    plot_confusion(
        np.asarray(metrics["confusion_matrix"]),
        splits.class_names,
        run_dir / runs.PLOTS / "confusion.png",
    )
    _save_samples(run_dir, splits)
    if progress is not None:
        progress("stage", {"stage": "export"})

    parity, exports = None, None
    if can_export_saved_model():
        parity = export_saved_model(
            model, splits.class_names, run_dir / runs.SAVED_MODEL, splits.test.x, splits.test.y
        )
        size = runs.tree_size(run_dir / runs.SAVED_MODEL)
        record = saved_model_record(runs.SAVED_MODEL, model, splits.class_names, parity, size)
        exports = {"saved_model": record}
        runs.write_json(run_dir / runs.EXPORTS, exports)
    else:
        print(export_skipped_message(run_dir), file=sys.stderr, flush=True)
    runs.write_text(
        run_dir / runs.MODEL_CARD,
        model_card(config, splits, metrics, model, exports, backend_name()),
    )
    runs.write_manifest(run_dir)  # last: the SHA-256 of every artifact, checked when loading
    if chief and Path(runs_root) in run_dir.parents:
        runs.point_latest(run_dir)
    if verbose:
        t = metrics["test"]
        print(
            f"test: accuracy {t['accuracy']:.4f}, top-{t['k']} {t['top_k_accuracy']:.4f}, "
            f"loss {t['loss']:.4f} ({t['n']} images)"
            + (f"; SavedModel parity max |Δp| {parity['max_abs_diff']:.1e}" if parity else ""),
            flush=True,
        )
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir


def _read_history(path: Path) -> tuple[dict[str, list[float]], list[str]]:
    """(curves by metric, phase of every epoch) from history.csv."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    curves = {
        key: [float(r[key]) for r in rows if r.get(key)]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy")
    }
    return curves, [r.get("phase") or "train" for r in rows]


def build_parser() -> argparse.ArgumentParser:
    """The `imgclf-train` argument parser (importing it costs no TensorFlow)."""
    parser = argparse.ArgumentParser(
        prog="imgclf-train",
        description="Train an image classifier. With no --config, trains the embedded default "
        "(configs/default.yaml: a CNN on 5,000 MNIST digits).",
        epilog="examples:\n  imgclf-train\n  imgclf-train --config configs/digits_mlp.yaml "
        "train.epochs=3 model.hidden=[64,32]\n  imgclf-train --config configs/mnist_cnn.yaml "
        "--print-config",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m imgclf.train` and `imgclf-train`; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            sys.stdout.write(dump_config(config))
            return 0
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
