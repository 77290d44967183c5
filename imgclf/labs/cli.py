"""`imgclf-lab NAME [--quick] [--out DIR] [--seed N]`: run one of the course's experiments and
write its lab folder (`imgclf.labs.folder`); prints the table and where it went.

    imgclf-lab regions          # linear regions of a deep and a wide ReLU net (2-D input)
    imgclf-lab double-descent   # test error against width of a one-hidden-layer MLP on MNIST
    imgclf-lab lecun1989        # the 1989 digit net, then the modern changes one at a time
                                # (--more-data: and with MNIST's digits, through Keras)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from pathlib import Path

from imgclf.infra.arguments import ArgumentParser
from imgclf.infra.bounded import clip
from imgclf.infra.console import quiet_tensorflow
from imgclf.infra.errors import UserError
from imgclf.labs.folder import labs_root, markdown_table, write_lab

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MAX_SEED = 2**31 - 16  # every lab adds small offsets to the seed for its layers

LABS = {
    "regions": ("imgclf.labs.regions", "regions.png"),
    "double-descent": ("imgclf.labs.double_descent", "double_descent.png"),
    "lecun1989": ("imgclf.labs.lecun1989", "lecun1989.png"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="imgclf-lab", description=__doc__.split("\n")[0])
    parser.add_argument("lab", choices=sorted(LABS), help="which experiment")
    parser.add_argument("--quick", action="store_true", help="minutes on 2 cores (tests)")
    parser.add_argument("--out", help="the lab folder (default: labs/<lab>-<time>)")
    parser.add_argument("--seed", type=int, default=0, help=f"0..{MAX_SEED}")
    parser.add_argument("--label-noise", type=float, default=None,
                        help="double-descent only: share of training labels made wrong, "
                        "0 <= x < 0.9 (default 0.1)")  # fmt: skip
    parser.add_argument("--more-data", action="store_true",
                        help="lecun1989 only: also train on MNIST's 70,000 digits (Keras' "
                        "cache, or a download)")  # fmt: skip
    return parser


def run_lab(name: str, quick: bool = False, seed: int = 0, out: str | None = None, **options):
    """Run lab `name` and write its folder; returns (folder, rows)."""

    module_name, picture = LABS[name]
    module = importlib.import_module(module_name)
    start = time.perf_counter()
    rows, summary = module.run(quick=quick, seed=seed, **options)
    seconds = round(time.perf_counter() - start, 1)
    public = {k: v for k, v in summary.items() if not k.startswith("_")}
    public["seconds"] = seconds
    folder = write_lab(name, rows, {picture: lambda p: module.draw(p, rows, summary)}, public, out)
    return folder, rows


def _check(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments (before minutes of training), or None."""

    if not 0 <= args.seed <= MAX_SEED:
        return f"--seed must be in 0..{MAX_SEED}, got {args.seed}"
    if args.label_noise is not None:
        if args.lab != "double-descent":
            return "--label-noise is for double-descent only"
        if not 0.0 <= args.label_noise < 0.9:
            return f"--label-noise must be in [0, 0.9), got {args.label_noise}"
    if args.more_data and args.lab != "lecun1989":
        return "--more-data is for lecun1989 only"
    target = Path(args.out) if args.out else labs_root() / "x"
    if args.out and target.exists():
        return f"{args.out} already exists: give --out a new folder"
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        return f"{parent} is not writable: give --out a folder you can write"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"error: {clip(problem)}", file=sys.stderr)
        return 2
    quiet_tensorflow()

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes, one per model
    options = {}
    if args.lab == "double-descent":
        options["label_noise"] = 0.1 if args.label_noise is None else args.label_noise
    if args.more_data:
        options["more_data"] = True
    try:
        folder, rows = run_lab(args.lab, args.quick, args.seed, args.out, **options)
    except (UserError, OSError) as exc:
        print(f"error: {clip(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    print(markdown_table(rows), end="")
    if args.quick:
        print("note: --quick is a smoke test (few images, 1-2 epochs): these figures are not the "
              "lab's results; run without --quick for them", file=sys.stderr)  # fmt: skip
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
