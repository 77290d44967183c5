"""The frozen head phase with and without cached backbone features: wall time of the phase and
how far apart the two resulting models are.

Both runs train the same recipe (a ResNet50 backbone, head phase only, augmentation off) with the
same seed; one computes the backbone features once per image (transfer.cache_features=auto), the
other pushes every batch of every epoch through the frozen backbone (cache_features=false).
The backbone weights are a random-init ResNet50 file written here (speed does not depend on the
weight values, and ImageNet weights cannot be downloaded offline).

    python benchmarks/feature_cache.py                      # resnet50, 64×64, 5 epochs
    python benchmarks/feature_cache.py --model mobilenetv2 --size 96 --epochs 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from imgclf.config import load_config
from imgclf.models import build_model
from imgclf.models.reuse import load_run_model
from imgclf.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=100, help="training images per class")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    base = [
        "name=cache-bench",
        "data.source=mnist5k",
        f"data.image_size=[{args.size},{args.size}]",
        f"data.max_per_class={args.per_class}",
        f"model.name={args.model}",
        "augment.rotation=0",
        "augment.zoom=0",
        "augment.translate=0",
        f"transfer.head_epochs={args.epochs}",
        "transfer.fine_tune_epochs=0",
        "train.early_stopping.patience=0",
    ]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        weights = tmp / f"{args.model}_notop.weights.h5"
        build_model(load_config(None, base), 10).get_layer("backbone").save_weights(str(weights))
        results = {}
        for setting in ("auto", "false"):
            config = load_config(
                None, [*base, f"model.weights={weights}", f"transfer.cache_features={setting}"]
            )
            run = train(config, out=tmp / f"cache-{setting}", verbose=0)
            metrics = json.loads((run / "metrics.json").read_text())
            head = load_run_model(run).get_layer("probabilities").get_weights()
            results[setting] = (metrics["phases"][0], metrics["test"]["accuracy"], head)
    (fast, fast_acc, fast_w), (slow, slow_acc, slow_w) = results["auto"], results["false"]
    assert fast["cached_features"] and not slow["cached_features"]
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(fast_w, slow_w, strict=True))
    print(
        f"{args.model} at {args.size}×{args.size}, {fast['epochs_run']} head epochs, "
        f"{10 * args.per_class} training images"
    )
    print(f"  through the frozen backbone: {slow['seconds']:.1f} s, test accuracy {slow_acc:.4f}")
    print(f"  on cached features:          {fast['seconds']:.1f} s, test accuracy {fast_acc:.4f}")
    print(f"  speed-up {slow['seconds'] / fast['seconds']:.1f}×; head weights max |Δ| {diff:.1e}")


if __name__ == "__main__":
    main()
