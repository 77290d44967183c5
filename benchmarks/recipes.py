"""Measure a recipe: train it with several seeds (each seed also re-draws the split) and print
test accuracy, epochs and wall time per run. Figures in README.md and config headers come from
here.

    python benchmarks/recipes.py                      # the embedded default, seeds 0 1 2
    python benchmarks/recipes.py --config configs/digits_mlp.yaml --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from imgclf.config import load_config
from imgclf.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    # key=value overrides may stand anywhere, after --seeds too: argparse's nargs="+" would take
    # them as seeds, so they are taken out of the command line before it is parsed.
    argv = sys.argv[1:]
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"recipe: {args.config or 'embedded default'} {' '.join(args.overrides)}")
    print(f"{'seed':>4} {'test acc':>9} {'top-k':>7} {'epochs':>6} {'wall s':>7}")
    accs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            config = load_config(args.config, [*args.overrides, f"seed={seed}"])
            start = time.perf_counter()
            run = train(config, out=Path(tmp) / f"seed{seed}", verbose=0)
            wall = time.perf_counter() - start
            m = json.loads((run / "metrics.json").read_text())
            accs.append(m["test"]["accuracy"])
            print(
                f"{seed:>4} {m['test']['accuracy']:>9.4f} {m['test']['top_k_accuracy']:>7.4f} "
                f"{m['epochs_run']:>6} {wall:>7.1f}",
                flush=True,
            )
    print(f"mean test accuracy {sum(accs) / len(accs):.4f}, min {min(accs):.4f}")


if __name__ == "__main__":
    main()
