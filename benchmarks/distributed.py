"""Multi-worker training, measured (issue #32): the same recipe on 1 worker (`train.distribute:
none`) and on 2 workers (`multiworker`, two processes on 127.0.0.1, TF_CONFIG set as a cluster
launcher would), back to back, each through `python -m imgclf.train`: time per epoch and
training throughput (images/s, from history.csv's `seconds`), the whole job's wall time, and
the communication volume per step (every trainable weight's gradient is all-reduced once per
step: float32, so 4 bytes × trainable parameters; a ring all-reduce sends 2 × (W − 1) / W of
that from each of W workers), plus the per-epoch batch-norm and log all-reduces.

Each is run back to back with the bare arm (`bare_keras_distributed.py`: Keras' fit on one
process, the TensorFlow tutorial's custom loop under MultiWorkerMirroredStrategy on two, the
same images and network), and the ratios imgclf / bare are printed. Augmentation is off and
the rate constant in both arms, so they do the same job.

On a machine with fewer cores than workers × the threads each wants, two workers share the
same cores: this measures the cost of the protocol, not a speed-up.

    python benchmarks/distributed.py [--epochs 3] [--recipe configs/default.yaml] [key=value ...]
    python benchmarks/distributed.py data.source=fashion_mnist data.max_per_class=1500
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


def run_bare(workers: int, recipe: str, overrides: list[str], epochs: int) -> dict:
    """The bare arm on `workers` processes; worker 0's JSON, with the whole job's wall time."""
    script = Path(__file__).with_name("bare_keras_distributed.py")
    command = [sys.executable, str(script), "--config", recipe, "--epochs", str(epochs), *overrides]
    began = time.perf_counter()
    envs = [dict(os.environ)]
    if workers > 1:
        cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
        envs = [
            {
                **os.environ,
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                ),
            }
            for i in range(workers)
        ]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for env in envs]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a bare worker failed: exit codes {[p.returncode for p in procs]}")
    result = json.loads(outs[0].strip().splitlines()[-1])
    result["job"] = time.perf_counter() - began
    return result


def epochs(run_dir: Path) -> list[float]:
    with (run_dir / "history.csv").open() as fh:
        return [float(row["seconds"]) for row in csv.DictReader(fh)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="configs/default.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="key=value for both arms (e.g. the data)")
    args = parser.parse_args()
    same = ["augment.rotation=0", "augment.zoom=0", "augment.translate=0", "augment.flip=none",
            "train.schedule=constant", *args.overrides]  # fmt: skip
    overrides = [f"train.epochs={args.epochs}", "train.export=false", "train.diagnostics=false",
                 "train.early_stopping.patience=0", *same]  # fmt: skip
    print(f"{time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPU cores; {args.recipe}")
    rows, bare = [], []
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
            b = run_bare(workers, args.recipe, same, args.epochs)
            b_steady = b["epoch_seconds"][1:] or b["epoch_seconds"]
            bare.append((sum(b_steady) / len(b_steady), b["job"], b["test_accuracy"]))
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
    print("\nAgainst the bare arm (bare_keras_distributed.py), back to back:\n")
    print("| workers | bare s per epoch | imgclf / bare per epoch | bare whole job s | "
          "imgclf / bare whole job | bare test accuracy |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for row, (b_epoch, b_job, b_acc) in zip(rows, bare, strict=True):
        workers, per_epoch, _, wall, _, _ = row
        print(f"| {workers} | {b_epoch:.2f} | {per_epoch / b_epoch:.2f} | {b_job:.0f} | "
              f"{wall / b_job:.2f} | {b_acc:.4f} |")  # fmt: skip


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
