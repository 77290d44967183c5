"""Few-shot transfer vs training from scratch, offline: the figures of the README's transfer
table come from here.

Pair 1 (same domain, new classes): a CNN pre-trained on MNIST digits 0-4
(configs/pretrain_mnist_0to4.yaml) is re-used for digits 5-9 with N labelled training images per
class (configs/transfer_mnist_5to9_few_shot.yaml: frozen head phase, then fine-tuning), against
the same CNN trained from scratch on the same N images. Pair 2 (new domain): the default CNN
trained on all of mnist5k, re-used for scikit-learn's digits (8×8 scans upsampled to 28×28).
Both arms use the same seed, so the same split: test accuracy is on the same held-out images.

    python benchmarks/transfer_few_shot.py                 # N = 5 10 25, seed 0
    python benchmarks/transfer_few_shot.py --seeds 0 1 2   # mean over seeds (and the spread)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from imgclf.config import load_config
from imgclf.train import train

TRANSFER = "configs/transfer_mnist_5to9_few_shot.yaml"
PRETRAIN = "configs/pretrain_mnist_0to4.yaml"
# Pair 2 changes only the data of the few-shot recipe: digits' 10 classes, upsampled.
DIGITS = ["data.source=digits", "data.classes=null", "data.image_size=[28,28]"]


def _accuracy(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["test"]["accuracy"]


def _pair(
    name: str, source_run: Path, data: list[str], shots: list[int], seed: int, tmp: Path
) -> list[dict]:
    """Scratch and transfer test accuracy for every N of one pair."""
    rows = []
    recipe = load_config(TRANSFER)
    scratch_epochs = recipe.transfer.head_epochs + recipe.transfer.fine_tune_epochs
    for n in shots:
        common = [*data, f"data.max_per_class={n}", f"seed={seed}"]
        start = time.perf_counter()
        scratch = train(
            load_config(
                TRANSFER, [*common, "model.weights=null", f"train.epochs={scratch_epochs}"]
            ),
            out=tmp / f"{name}-scratch-n{n}-s{seed}",
            verbose=0,
        )
        middle = time.perf_counter()
        transfer = train(
            load_config(TRANSFER, [*common, f"model.weights={source_run}"]),
            out=tmp / f"{name}-transfer-n{n}-s{seed}",
            verbose=0,
        )
        end = time.perf_counter()
        phases = json.loads((transfer / "metrics.json").read_text())["phases"]
        rows.append(
            {
                "pair": name,
                "n": n,
                "seed": seed,
                "scratch": _accuracy(scratch),
                "transfer": _accuracy(transfer),
                "scratch_s": middle - start,
                "transfer_s": end - middle,
                "fine_tune_kept": all(p.get("kept", True) for p in phases),
            }
        )
        r = rows[-1]
        print(
            f"  {name} N={n} seed={seed}: scratch {r['scratch']:.4f} ({r['scratch_s']:.0f} s), "
            f"transfer {r['transfer']:.4f} ({r['transfer_s']:.0f} s)",
            flush=True,
        )
    return rows


def _table(rows: list[dict], pair: str, shots: list[int]) -> None:
    print(f"\n{pair}")
    print("| N per class | scratch accuracy | transfer accuracy | error ratio (transfer/scratch) |")
    print("|---:|---:|---:|---:|")
    for n in shots:
        sel = [r for r in rows if r["pair"] == pair and r["n"] == n]
        scratch = sum(r["scratch"] for r in sel) / len(sel)
        transfer = sum(r["transfer"] for r in sel) / len(sel)
        spread = ""
        if len(sel) > 1:
            lo_s, hi_s = min(r["scratch"] for r in sel), max(r["scratch"] for r in sel)
            lo_t, hi_t = min(r["transfer"] for r in sel), max(r["transfer"] for r in sel)
            spread = f" (seeds: scratch {lo_s:.3f}–{hi_s:.3f}, transfer {lo_t:.3f}–{hi_t:.3f})"
        ratio = (1 - transfer) / (1 - scratch) if scratch < 1 else float("nan")
        print(f"| {n} | {scratch:.3f} | {transfer:.3f} | {ratio:.2f} |{spread}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--skip-digits", action="store_true", help="only the MNIST 0-4 → 5-9 pair")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    rows: list[dict] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # Pre-training uses seed 0 always: the backbone is fixed, the few-shot draw varies.
        pre = train(load_config(PRETRAIN), out=tmp / "pretrain_0to4", verbose=0)
        print(f"pre-trained on MNIST 0-4: test accuracy {_accuracy(pre):.4f}", flush=True)
        pre_all = None
        if not args.skip_digits:
            pre_all = train(
                load_config(None, ["name=pretrain_mnist5k"]), out=tmp / "all", verbose=0
            )
            print(f"pre-trained on all of mnist5k: test accuracy {_accuracy(pre_all):.4f}")
        for seed in args.seeds:
            rows += _pair("MNIST 0-4 → 5-9", pre, [], args.shots, seed, tmp)
            if pre_all is not None:
                rows += _pair(
                    "mnist5k → digits (8×8 upsampled)", pre_all, DIGITS, args.shots, seed, tmp
                )
    for pair in dict.fromkeys(r["pair"] for r in rows):
        _table(rows, pair, args.shots)
    kept = sum(r["fine_tune_kept"] for r in rows)
    print(f"\nfine-tuning kept (beat the head phase on val_loss) in {kept}/{len(rows)} runs")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
