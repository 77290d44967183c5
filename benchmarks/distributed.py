"""Multi-worker training, measured (issue #32): the same recipe on 1 worker (`train.distribute:
none`) and on 2 workers (`multiworker`, two processes on 127.0.0.1, TF_CONFIG set as a cluster
launcher would), back to back, each through `python -m imgclf.train`: time per epoch and
training throughput (images/s, from history.csv's `seconds`), the whole job's wall time, and
the communication volume per step (every trainable weight's gradient is all-reduced once per
step: float32, so 4 bytes × trainable parameters; a ring all-reduce sends 2 × (W − 1) / W of
that from each of W workers), plus the per-epoch batch-norm and log all-reduces.

On a machine with fewer cores than workers × the threads each wants, two workers share the
same cores: this measures the cost of the protocol, not a speed-up.

    python benchmarks/distributed.py [--epochs 3] [--recipe configs/default.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def run(workers: int, recipe: str, overrides: list[str], out: Path) -> float:
    """Train on `workers` processes; returns the wall time (s) of the whole job."""
    command = [sys.executable, "-m", "imgclf.train", "--config", recipe, "-q", *overrides]
    began = time.perf_counter()
    if workers == 1:
        subprocess.run([*command, "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - began
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    procs = []
    for index in range(workers):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        argv = [*command, "train.distribute=multiworker", "--out", str(out)]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    return time.perf_counter() - began


def epochs(run_dir: Path) -> list[float]:
    with (run_dir / "history.csv").open() as fh:
        return [float(row["seconds"]) for row in csv.DictReader(fh)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="configs/default.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    overrides = [f"train.epochs={args.epochs}", "train.export=false", "train.diagnostics=false",
                 "train.early_stopping.patience=0"]  # fmt: skip
    print(f"{time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPU cores; {args.recipe}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            out = Path(tmp) / f"w{workers}"
            wall = run(workers, args.recipe, overrides, out)
            metrics = json.loads((out / "metrics.json").read_text())
            seconds = epochs(out)
            images = metrics["counts"]["train"]
            params = trainable(out)
            steady = seconds[1:] or seconds  # the first epoch traces the step functions
            per_epoch = sum(steady) / len(steady)
            rows.append((workers, per_epoch, images / per_epoch, wall,
                         metrics["test"]["accuracy"], params))  # fmt: skip
    print(
        "\n| workers | s per epoch (after the first) | train images/s | whole job s | test "
        "accuracy | gradient all-reduce per step | sent per worker per step (ring) |"
    )
    print("|---|---|---|---|---|---|---|")
    for workers, per_epoch, rate, wall, accuracy, params in rows:
        size = 4 * params
        sent = 2 * (workers - 1) / workers * size
        print(f"| {workers} | {per_epoch:.2f} | {rate:.0f} | {wall:.0f} | {accuracy:.4f} | "
              f"{size / 2**20:.2f} MB ({params:,} float32) | "
              f"{sent / 2**20:.2f} MB |")  # fmt: skip


def trainable(run_dir: Path) -> int:
    """Trainable parameters of the run's model."""
    import keras
    import numpy as np

    from imgclf.models.saving import register_custom_layers

    register_custom_layers()
    model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


if __name__ == "__main__":
    main()
