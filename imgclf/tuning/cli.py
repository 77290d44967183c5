"""`imgclf-tune`: search hyperparameters of a recipe with KerasTuner (the [tune] extra).

    imgclf-tune --config configs/digits_mlp.yaml --space space.yaml --trials 12

prints one line per trial, then the best trial and the command that trains its config again.
Running the same command again resumes an interrupted search.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imgclf import runs
from imgclf.infra.arguments import ArgumentParser
from imgclf.infra.bounded import clip
from imgclf.infra.console import quiet_tensorflow
from imgclf.infra.errors import UserError, require_packages
from imgclf.tuning.search import ALGORITHMS, BEST, OBJECTIVES, SEARCH, Search, run_search
from imgclf.tuning.space import check_space, read_space

EXAMPLES = (
    "space file (dotted config keys; a list is a set of choices):\n"
    "  train.learning_rate: {log: [1.0e-4, 1.0e-2]}\n"
    "  model.dropout: {range: [0.0, 0.5]}\n"
    "  model.hidden: [[64], [128], [256, 128]]\n"
    "example:\n"
    "  imgclf-tune --config configs/digits_mlp.yaml --space space.yaml --trials 12"
)
INSTALL = "pip install 'imgclf[tune]'"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="imgclf-tune",
        description="Search hyperparameters (any dotted config key) with KerasTuner; every "
        "trial is a run, ranked on its validation split only.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="the base recipe (YAML; default: the embedded default)")
    parser.add_argument("--space", required=True, help="YAML: the keys to search and their ranges")
    parser.add_argument(
        "--trials",
        type=int,
        help="how many trials (default 10; Hyperband sets its own number "
        "from train.epochs and takes no --trials)",
    )
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="bayesian")
    parser.add_argument("--objective", choices=list(OBJECTIVES), default="val_accuracy")
    parser.add_argument(
        "--out", help="the search folder (default runs/<config name>-search); resumes if it exists"
    )
    parser.add_argument("--runs-root", default=str(runs.DEFAULT_ROOT), help="where trials go")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="base recipe overrides")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the best config")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `imgclf-tune`; returns the exit code."""
    from imgclf.config import load_config

    args = build_parser().parse_intermixed_args(argv)
    try:
        if args.algorithm == "hyperband" and args.trials is not None:
            raise UserError(
                "--algorithm hyperband sets its number of trials from train.epochs (brackets of "
                "factor 3); leave out --trials, or use --algorithm bayesian or random"
            )
        args.trials = 10 if args.trials is None else args.trials
        if not 1 <= args.trials <= 10_000:
            raise UserError(f"--trials {args.trials}: give 1 to 10000")
        require_packages("imgclf-tune", INSTALL, "keras_tuner")
        base = load_config(args.config, args.overrides)
        dims = read_space(args.space)
        check_space(dims, args.config, args.overrides)
        out = Path(args.out or Path(args.runs_root) / f"{base.name}-search")
        search = Search(
            args.config, list(args.overrides), dims, out, Path(args.runs_root), args.objective,
            verbose=not args.quiet,
        )  # fmt: skip
        quiet_tensorflow(False)
        best = run_search(search, args.algorithm, args.trials)
    except UserError as exc:
        print(f"error: {clip(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: run the same command again to resume the search (an interrupted "
            "trial's run continues where it stopped)",
            file=sys.stderr,
        )
        return 130
    if best is None:
        print("error: no trial completed; see the trials' runs for why", file=sys.stderr)
        return 2
    if not args.quiet:
        print(
            f"best: trial {best['trial']}, {args.objective} {best[args.objective]:.4f} "
            f"(test accuracy {best['test_accuracy']:.4f}, not used to choose); "
            f"all trials: {out / SEARCH}"
        )
        print(f"train it again: imgclf-train --config {out / BEST}")
    else:
        print(out / BEST)
    return 0


if __name__ == "__main__":
    sys.exit(main())
