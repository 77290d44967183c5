"""Training: `train(config)` runs three steps and returns the run directory:

    prepare      data, model, strategy, the run directory with config.yaml, labels, data report
                 (imgclf.training.prepare)
    run_phases   the phases of `transfer.plan_phases` (one `train` phase, or `head` then
                 `fine_tune`), history.csv rewritten after every epoch (imgclf.training.phases)
    finish_run   model.keras, test metrics, plots, samples, SavedModel, model card, manifest
                 (imgclf.training.finish)

`python -m imgclf.train` parses arguments, checks what it can without TensorFlow (the config,
the data folder, the output folder: `preflight`), and calls `train`. Keras is imported inside
the steps, so `--help`, `--print-config` and every preflight error answer at once. Training runs
on any Keras backend (`KERAS_BACKEND`, default tensorflow; see imgclf/training/backend.py): only the
SavedModel export at the end needs TensorFlow, and is skipped under other backends.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf import runs
from imgclf.config import Config, dump_config, load_config
from imgclf.infra.arguments import ArgumentParser
from imgclf.infra.bounded import clip
from imgclf.infra.console import quiet_tensorflow
from imgclf.infra.errors import (
    UserError,
    check_address_space,
    end_after_failed_write,
    resource_problem,
)
from imgclf.models import build_model
from imgclf.training.augment import build_augmenter
from imgclf.training.backend import make_training_data
from imgclf.training.cluster import is_chief
from imgclf.training.diagnostics_cost import plan as plan_diagnostics
from imgclf.training.distribute import WorkerLost
from imgclf.training.estimate import Estimate, job_shape
from imgclf.training.phases import PhaseRunner, history_callback
from imgclf.training.prepare import Prepared, preflight, prepare
from imgclf.training.progress import Meter
from imgclf.training.resume import check_resumable
from imgclf.training.tracking import end_run as end_tracking
from imgclf.training.transfer import plan_phases

if TYPE_CHECKING:
    import keras

    from imgclf.data import Splits

EXAMPLES = (
    "examples:\n"
    "  imgclf-train\n"
    "  imgclf-train --config configs/digits_mlp.yaml train.epochs=3 model.hidden=[64,32]\n"
    "  imgclf-train --config configs/fashion_cnn.yaml --print-config"
)


def run_phases(p: Prepared, meter: Meter | None = None, estimate: Any = None) -> dict[str, Any]:
    """Step 2: every phase of the schedule on `p.model` (each a stage of `meter`, timed by
    `estimate`, an `training.estimate.Estimate`, when given); returns what metrics.json records
    about training (`phases`, `epochs_run`)."""
    from imgclf.training.diagnostics import fixed_batch, make_diagnostics

    config = p.config
    augmenter = build_augmenter(config.augment, config.data.image_size, config.seed)
    # tf.data pipelines on the TensorFlow backend, NumPy PyDatasets (no TensorFlow) on others.
    data = make_training_data(p.splits, config, p.batch_size, augmenter)
    history = history_callback(p.run_dir / runs.HISTORY)
    diagnostics = None
    # Diagnostics read gradients outside the strategy's replica context: single device only.
    plan = plan_diagnostics(p.model, config.train.diagnostics) if p.strategy is None else None
    if plan is not None and p.verbose and config.train.diagnostics is not False:
        print(plan.line(), flush=True)
    if plan is not None and plan.enabled:
        # Gradient/activation statistics on a fixed batch of training images, every epoch.
        diag_x, diag_y = fixed_batch(
            p.splits.train.x, p.splits.train.y, n=plan.probe_images, seed=config.seed
        )
        diagnostics = make_diagnostics(p.run_dir, diag_x, diag_y, plan=plan)
    if p.resume is not None:
        _carry_over(p, history, diagnostics, plan_phases(config))
    runner = PhaseRunner(p, data, history, diagnostics, augmenter, estimate)
    reports = []
    for phase in plan_phases(config):
        with meter.stage(phase.name) if meter is not None else contextlib.nullcontext():
            reports.append(runner.run(phase))
    return {"epochs_run": len(history.rows), "phases": reports}


def _carry_over(p: Prepared, history: Any, diagnostics: Any, phases: list[Any]) -> None:
    """Resuming: keep history.csv's rows and diagnostics.json's entries of the epochs that are
    done (finished phases, and the backed-up epochs of the interrupted one); drop the rest."""
    done = 0
    for phase in phases:
        report = p.resume.done(phase.name)
        if report is None:
            done += p.resume.backup_epoch(phase.name)
            break
        done += int(report["epochs_run"])
    history.rows = runs.read_history(p.run_dir / runs.HISTORY)[:done]
    if diagnostics is not None and (p.run_dir / runs.DIAGNOSTICS).is_file():
        entries = runs.read_json(p.run_dir / runs.DIAGNOSTICS).get("epochs", [])
        diagnostics.entries = [e for e in entries if e["epoch"] <= done] if done else []


def _single_device(p: Prepared) -> keras.Model:
    """The trained weights in a model built without the strategy, so model.keras and the
    SavedModel do not depend on how training ran."""

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
    resume: bool = False,
) -> Path:
    """Train `config` end to end and return the run directory holding every artifact.

    Writes config.yaml, labels.json, data_report.json, history.csv, model.keras (best weights),
    metrics.json (held-out test set), plots/, samples/, worst/, saved_model/ (parity-checked),
    exports.json, model_card.md and manifest.json, each atomically. `splits` (optional) is data
    already loaded and divided (e.g. by `data.splits_from_arrays` for a benchmark's folds); by
    default `load_data(config)` loads `config.data`. `out` is the run directory to create
    (default `runs_root/<name>-<time>`); with `resume`, an interrupted run to continue (see
    `resume_run`).

    The run's state (state.json) is `running` from the moment its folder exists, `complete`
    after the manifest, `interrupted` after Ctrl+C or SIGTERM (RunInterrupted is raised, naming
    the run) and `failed`, with the error's first line, after any other exception.

    Raises:
        ConfigError, DataError: the config cannot run or the data is unusable (nothing is
            written: the run directory is created after the data has loaded).
        FileExistsError: `out` exists and is not empty.
        ExportError: the SavedModel disagrees with the trained model (the run has no manifest).
    """
    from imgclf.training.finish import finish_run
    from imgclf.training.multilabel import finish_multilabel

    meter = Meter()  # the run's cost, stage by stage, from here (metrics.json `resources`)
    try:
        with meter.stage("prepare"):
            p = prepare(config, out, verbose, Path(runs_root), splits, resume)
            shape = job_shape(config, p.splits, p.batch_size)
    except BaseException:
        meter.close()
        raise
    estimate = Estimate(p.run_dir, shape, meter.start_wall, p.verbose) if p.chief else None
    try:
        training = run_phases(p, meter, estimate)
        finish = finish_multilabel if config.task == "multilabel" else finish_run
        finish(p.run_dir, _single_device(p), p.splits, config, training, p.verbose, meter, estimate)
    except KeyboardInterrupt as exc:
        # A Ctrl+C after the state became `complete` changes nothing: the run is whole.
        if not (p.chief and runs.read_state(p.run_dir).complete):
            _mark_ended(p, runs.INTERRUPTED, "stopped by Ctrl+C or SIGTERM")
            raise RunInterrupted(p.run_dir) from exc
    except WorkerLost as exc:
        raise _left_interrupted(p, exc) from None
    except BaseException as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _mark_ended(p, runs.FAILED, f"{type(exc).__name__}: {reason}")
        raise
    finally:
        meter.close()
    _tidy(p, Path(runs_root))
    return p.run_dir


def _mark_ended(p: Prepared, state: str, reason: str) -> None:
    """The chief records an interrupted or failed run: state.json, and its MLflow run; another
    worker of a cluster removes its scratch folder."""
    if p.chief:
        runs.set_state(p.run_dir, state, reason)
        end_tracking(p.run_dir, "KILLED" if state == runs.INTERRUPTED else "FAILED")
    else:
        shutil.rmtree(p.run_dir, ignore_errors=True)


def _left_interrupted(p: Prepared, exc: WorkerLost) -> WorkerLost:
    """A lost worker: the run is marked interrupted (the chief's backups hold every completed
    epoch, training.cluster_sync) and the error says how to continue it."""
    _mark_ended(p, runs.INTERRUPTED, f"WorkerLost: {exc}")
    run = runs.resume_command(p.run_dir) if p.chief else "imgclf-train --resume RUN"
    return WorkerLost(
        f"{exc}; the run is left interrupted: once the cluster is whole again, continue it "
        f"with `{run}` on every worker"
    )


def _tidy(p: Prepared, runs_root: Path) -> None:
    """After a run is complete: drop its resume folder, point `latest` at it, remove a
    worker's scratch folder. Quick and idempotent, so a Ctrl+C here is answered by finishing."""
    for _ in range(3):
        try:
            if p.resume is not None:
                p.resume.clear()
            if p.chief and runs_root in p.run_dir.parents:
                runs.point_latest(p.run_dir)
            if not p.chief:
                shutil.rmtree(p.run_dir, ignore_errors=True)
            return
        except KeyboardInterrupt:
            continue


class RunInterrupted(KeyboardInterrupt):
    """Training was stopped (Ctrl+C, SIGTERM); `run_dir` is left `interrupted`, resumable."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def resume_run(run_dir: str | Path, verbose: int | str = "auto") -> Path:
    """Continue an interrupted (or failed) run to the end, with the config it started with:
    finished phases are not repeated, the interrupted one continues from its last backup
    (`imgclf.training.resume`). Returns the run directory, now complete.

    Raises:
        UserError: the run is complete, still training, or not a run.
        ConfigError: its data changed since it started.
    """

    config = check_resumable(Path(run_dir))
    return train(config, out=run_dir, verbose=verbose, resume=True)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the run is left `interrupted` and resumable, as after Ctrl+C


def _find_lr(config: Config, out: str | None, path: str | None, overrides: list[str]) -> int:
    from imgclf.training.find_lr import find_learning_rate
    from imgclf.training.lr_finder import describe

    folder, sweep = find_learning_rate(config, out)
    print(describe(sweep))
    print(f"curve: {folder / runs.LR_FINDER_PLOT}")
    given = [*(["--config", path] if path else []), *overrides]
    given = [g for g in given if not g.startswith("train.learning_rate=")]
    rate = f"train.learning_rate={sweep.suggestion:.2g}"
    print("train with: " + shlex.join(["imgclf-train", *given, rate]))
    if config.model.pretrained:
        print("(the fine-tune phase's rate depends on the trained head: train.learning_rate=auto")
        print(" finds it at the start of that phase)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `imgclf-train` argument parser (importing it costs no TensorFlow)."""
    parser = ArgumentParser(
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
        "--resume",
        metavar="RUN",
        help="continue the interrupted run RUN with its own config (no other argument)",
    )
    parser.add_argument(
        "--find-lr",
        action="store_true",
        help="run only the learning-rate range test (Smith 2017) on the recipe's data and model, "
        "print the suggested train.learning_rate and save the curve (nothing is trained; "
        "train.learning_rate=auto does this at the start of every phase of a run)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress output; print only the run"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's own start-up log lines (hidden by default; or set "
        "IMGCLF_TF_LOGS=1)",
    )
    parser.add_argument(
        "--ray",
        type=int,
        metavar="N",
        help="train on N workers of a Ray cluster (RAY_ADDRESS, else a local one) with "
        "train.distribute=multiworker; needs the [ray] extra (docs/distributed.md)",
    )
    return parser


def _start(config: Config, args: Any, verbose: int | str) -> Path:
    """Train here, or on `--ray N` workers of a Ray cluster (`training.ray_launch`)."""
    if args.ray is None:
        return train(config, out=args.out, verbose=verbose)
    from imgclf.training.ray_launch import launch

    return launch(train, config, args.ray, args.out, runs.DEFAULT_ROOT, verbose)


def _resume(args: Any, verbose: int | str) -> Path:
    """Continue `--resume RUN` here, or on `--ray N` workers (a multi-worker run)."""
    if args.ray is None:
        return resume_run(args.resume, verbose)
    from imgclf.training.ray_launch import launch

    config = check_resumable(Path(args.resume))
    return launch(train, config, args.ray, args.resume, runs.DEFAULT_ROOT, verbose, resume=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m imgclf.train` and `imgclf-train`; returns the exit code."""

    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # key=value before or after options
    if args.resume and (
        args.config or args.overrides or args.out or args.print_config or args.find_lr
    ):
        parser.error("--resume RUN takes no --config, --out, --print-config, --find-lr or others")
    if args.ray is not None and args.find_lr:  # the range test runs on one device
        parser.error("--find-lr runs on one device: leave out --ray")
    verbose = 0 if args.quiet else "auto"
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        # A run killed between `complete` and its tidy step: its .resume/ and `latest` now.
        runs.tidy_completed(runs.DEFAULT_ROOT)
        if args.resume:
            check_resumable(Path(args.resume))  # before TensorFlow loads
            check_address_space()
            quiet_tensorflow(args.verbose)
            run_dir = _resume(args, verbose)
        else:
            config = load_config(args.config, args.overrides)
            if args.print_config:
                sys.stdout.write(dump_config(config))
                return 0
            preflight(config, args.out)  # before TensorFlow loads: these answer at once
            check_address_space()
            quiet_tensorflow(args.verbose)
            if args.find_lr:
                return _find_lr(config, args.out, args.config, args.overrides)
            run_dir = _start(config, args, verbose)
    except (UserError, FileExistsError) as exc:
        print(f"error: {clip(exc)}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as exc:  # the machine's fault: one line, the run resumable
        again = "; a run that had started continues with imgclf-train --resume RUN"
        print(f"error: {clip(resource_problem(exc) + again)}", file=sys.stderr)
        end_after_failed_write(2)  # a half-written weights file: end before HDF5 crashes
        return 2
    except RunInterrupted as exc:
        print(
            f"interrupted: {exc.run_dir} is left as an interrupted run; continue it with "
            f"`{runs.resume_command(exc.run_dir)}`",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        if args.resume:
            print(
                f"interrupted: {args.resume} is left as it was; continue it with "
                f"`{runs.resume_command(args.resume)}`",
                file=sys.stderr,
            )
        else:
            print("interrupted before the run had started: nothing was written", file=sys.stderr)
        return 130
    if is_chief():  # the others' folders are gone: `RUN=$(imgclf-train -q ...)` gets the run
        print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
