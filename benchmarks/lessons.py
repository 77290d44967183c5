"""Train every lesson recipe in configs/lessons/ and print what it shows: test accuracy, best
validation accuracy, final training accuracy, and, from diagnostics.json, how much smaller the
first hidden layer's gradient norm is than the last hidden layer's at initialisation (epoch 0).
The README's "Lessons" table and the configs' headers come from this script's output.

    python benchmarks/lessons.py                         # all lessons (~10 min on 2 CPU cores)
    python benchmarks/lessons.py activations_sigmoid activations_relu
    python benchmarks/lessons.py --json lessons.json     # also save the figures
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from imgclf import lessons
from imgclf.config import load_config
from imgclf.train import train

LESSONS = Path(__file__).resolve().parents[1] / "configs" / "lessons"


def gradient_ratio(run: Path) -> float | None:
    """grad-norm(last hidden kernel) / grad-norm(first hidden kernel) at epoch 0."""
    path = run / "diagnostics.json"
    return lessons.gradient_ratio(json.loads(path.read_text())) if path.is_file() else None


def measure(name: str, root: Path) -> dict:
    config = load_config(LESSONS / f"{name}.yaml")
    start = time.perf_counter()
    run = train(config, out=root / name, verbose=0)
    seconds = time.perf_counter() - start
    metrics = json.loads((run / "metrics.json").read_text())
    with (run / "history.csv").open() as fh:
        history = list(csv.DictReader(fh))
    return {
        "lesson": name,
        "test_accuracy": metrics["test"]["accuracy"],
        "best_val_accuracy": max(float(r["val_accuracy"]) for r in history),
        "final_train_accuracy": float(history[-1]["accuracy"]),
        "epochs": len(history),
        "seconds": round(seconds, 1),
        "grad_ratio_last_over_first": gradient_ratio(run),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("lessons", nargs="*", help="lesson names (default: all)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_intermixed_args()
    names = args.lessons or sorted(p.stem for p in LESSONS.glob("*.yaml"))
    print(f"{os.cpu_count()} CPU cores")
    print(
        "| lesson | test acc | best val acc | final train acc | epochs | seconds | "
        "grad ratio last/first hidden (epoch 0) |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = measure(name, Path(tmp))
            rows.append(row)
            ratio = row["grad_ratio_last_over_first"]
            shown = "—" if ratio is None else f"{ratio:,.3g}×"
            print(
                f"| {name} | {row['test_accuracy']:.3f} | {row['best_val_accuracy']:.3f} | "
                f"{row['final_train_accuracy']:.3f} | {row['epochs']} | {row['seconds']} | "
                f"{shown} |",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
