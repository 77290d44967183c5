"""Does ImageNet pretraining help on real photos? Four arms on two real-photo tasks that install
offline, in one process with fixed seeds; prints test accuracy per seed, the mean, the error
ratio against the best from-scratch arm, and the time per arm.

Tasks
  lfw       scikit-image's lfw_subset: 200 real photos (100 faces, 100 non-faces), 25×25 grey;
            5-fold stratified cross-validation per seed (every photo is tested once per seed; the
            validation set for early stopping comes from the training folds).
  fashion10 Fashion-MNIST (Debian dataset-fashion-mnist) with 10 labelled training images per
            class (+5 per class for validation), tested on 2,000 images of the official test set
            (200 per class, the same for every seed and arm).
  fashion50 the same with 50 per class (+10 for validation).

Arms
  a  the best from-scratch imgclf recipe: two CNN variants (plain; with flips, shifts and zoom)
     at the native size, the better mean reported as `a` (both are printed)
  b  EfficientNet-Lite0 from random weights, trained end to end
  c  Lite0 with ImageNet weights, frozen; only the new head trains (on cached features)
  d  Lite0 with ImageNet weights, two-phase: the head, then the whole backbone fine-tuned at
     1e-5 (batch-norm frozen)
Every arm stops early on validation loss and keeps its best epoch. The Lite0 arms see the
photos upsampled (LITE_SIZE), the scratch CNNs their native size.

    python benchmarks/transfer_imagenet.py                       # everything, seeds 0 1 2
    python benchmarks/transfer_imagenet.py --tasks fashion10 --seeds 0 --arms c d
    python benchmarks/transfer_imagenet.py --explore             # + input size / augmentation
    python benchmarks/transfer_imagenet.py --lfw-folder DIR      # lfw_subset as a photo folder
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from imgclf.config import load_config
from imgclf.data import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    fashion_mnist_dirs,
    read_idx,
    split_indices,
    splits_from_arrays,
)
from imgclf.train import train

LITE = ["model.name=efficientnet_lite0", "model.dropout=0.2", "train.diagnostics=false"]
NO_AUG = ["augment.rotation=0", "augment.zoom=0", "augment.translate=0"]
# name -> overrides (the image size is added per task)
ARMS: dict[str, list[str]] = {
    "a:cnn": [
        "model.name=cnn", "model.filters=[32,64]", "model.hidden=[128]", "model.dropout=0.3",
        *NO_AUG, "train.epochs=150", "train.early_stopping.patience=25",
    ],
    "a:cnn+aug": [
        "model.name=cnn", "model.filters=[32,64]", "model.hidden=[128]", "model.dropout=0.3",
        "augment.flip=horizontal", "augment.translate=0.1", "augment.zoom=0.1",
        "augment.rotation=0.03", "train.epochs=150", "train.early_stopping.patience=25",
    ],
    "b": [*LITE, *NO_AUG, "train.epochs=40", "train.early_stopping.patience=10"],
    "c": [
        *LITE, *NO_AUG, "model.weights=imagenet", "transfer.head_epochs=150",
        "transfer.fine_tune_epochs=0", "train.early_stopping.patience=20",
    ],
    # Fine-tuning at 1e-5 with Adam, as keras.io's transfer-learning guide does.
    "d": [
        *LITE, *NO_AUG, "model.weights=imagenet", "transfer.head_epochs=150",
        "transfer.fine_tune_epochs=20", "transfer.unfreeze=all",
        "transfer.fine_tune_lr_factor=0.01", "train.early_stopping.patience=8",
    ],
}  # fmt: skip
EXPLORE: dict[str, list[str]] = {
    "d@64px": ["data.image_size=[64,64]"],
    "d@96px": ["data.image_size=[96,96]"],
    "d@224px": ["data.image_size=[224,224]"],
    "d:lr×0.1": ["transfer.fine_tune_lr_factor=0.1"],
    "d+aug": ["augment.flip=horizontal", "augment.translate=0.1", "augment.zoom=0.1"],
    "d:top+decay": ["transfer.unfreeze=block6a_expand_conv", "transfer.layer_lr_decay=0.7"],
}
# Lite0 input size per task (--size overrides): lfw's photos are 25 px, so 96 px already
# upsamples them 4×; on Fashion-MNIST frozen features gained from 96 to 224 px in a probe.
LITE_SIZE = {"lfw": 96, "fashion10": 128, "fashion50": 128}
TEST_SEED = 12345  # the Fashion-MNIST test subset: the same 2,000 images for every run

Part = tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------------------------
# Data


def lfw_folds(seed: int, folds: int = 5) -> list[dict[str, Part]]:
    """5 stratified folds of lfw_subset; each fold's training part loses 15% to validation."""
    from skimage.data import lfw_subset
    from sklearn.model_selection import StratifiedKFold

    x = np.rint(lfw_subset() * 255).astype(np.uint8)  # float 0..1 [200, 25, 25]
    y = np.array([0] * 100 + [1] * 100)  # faces first, then non-faces (scikit-image's order)
    out = []
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        tr, va, _ = split_indices(y[train_idx], 0.15, 0.0, seed)
        fit, val = train_idx[tr], train_idx[va]
        test = test_idx
        out.append({"train": (x[fit], y[fit]), "val": (x[val], y[val]), "test": (x[test], y[test])})
    return out


def write_lfw_folder(root: Path) -> None:
    """lfw_subset as a user's photo folder: root/face/*.png and root/non-face/*.png (200 PNGs),
    to measure configs/photos_transfer.yaml the way a user would run it."""
    from PIL import Image
    from skimage.data import lfw_subset

    for i, image in enumerate(np.rint(lfw_subset() * 255).astype(np.uint8)):
        folder = root / ("face" if i < 100 else "non-face")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"lfw_{i:03d}.png")
    print(f"wrote 200 photos to {root}/face and {root}/non-face")


def _fashion_arrays() -> dict[str, Part]:
    root = next(d for d in fashion_mnist_dirs() if (d / FASHION_MNIST_FILES["test"][0]).is_file())
    return {
        split: (read_idx(root / images, 3), read_idx(root / labels, 1).astype(np.int64))
        for split, (images, labels) in FASHION_MNIST_FILES.items()
    }


def _per_class(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n] for c in range(10)]))


def fashion_few_shot(n: int, seed: int, arrays: dict[str, Part]) -> list[dict[str, Part]]:
    """n training and max(5, n // 5) validation images per class (seeded), 2,000 test images."""
    (x, y), (xt, yt) = arrays["train"], arrays["test"]
    rng = np.random.default_rng(seed)
    n_val = max(5, n // 5)
    chosen = _per_class(y, n + n_val, rng)
    fit = np.sort(np.concatenate([chosen[y[chosen] == c][:n] for c in range(10)]))
    val = np.setdiff1d(chosen, fit)
    test = _per_class(yt, 200, np.random.default_rng(TEST_SEED))
    return [{"train": (x[fit], y[fit]), "val": (x[val], y[val]), "test": (xt[test], yt[test])}]


# --------------------------------------------------------------------------------------------
# Runs


def run_arm(
    overrides: list[str], folds: list[dict[str, Part]], classes: list[str], seed: int, tmp: Path
) -> tuple[float, float, float]:
    """(test accuracy over all folds, seconds fitting, seconds in all) for one arm and seed."""
    correct = total = 0
    fit_s = 0.0
    start = time.perf_counter()
    for i, parts in enumerate(folds):
        config = load_config(None, [*overrides, f"seed={seed}", "name=bench"])
        splits = splits_from_arrays(config, parts, classes, "benchmark")
        run = train(config, out=tmp / f"run{time.monotonic_ns()}-{i}", verbose=0, splits=splits)
        metrics = json.loads((run / "metrics.json").read_text())
        correct += round(metrics["test"]["accuracy"] * metrics["test"]["n"])
        total += metrics["test"]["n"]
        fit_s += sum(p["seconds"] for p in metrics["phases"])
    return correct / total, fit_s, time.perf_counter() - start


def tasks(names: list[str]) -> dict[str, tuple[Callable[[int], list], list[str], int]]:
    """name -> (folds for a seed, class names, native size)."""
    out: dict[str, tuple[Callable[[int], list], list[str], int]] = {}
    if "lfw" in names:
        out["lfw"] = (lfw_folds, ["face", "non-face"], 25)
    fashion = [n for n in names if n.startswith("fashion")]
    if fashion:
        arrays = _fashion_arrays()
        for name in fashion:
            n = int(name.removeprefix("fashion"))
            out[name] = (
                lambda seed, n=n: fashion_few_shot(n, seed, arrays),
                list(FASHION_MNIST_CLASSES),
                28,
            )
    return out


def _size(arm: str, native: int, size: int) -> list[str]:
    side = native if arm.startswith("a") else size
    return [f"data.image_size=[{side},{side}]", "data.channels=1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["lfw", "fashion10", "fashion50"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--size", type=int, help="input size of the Lite0 arms (LITE_SIZE)")
    parser.add_argument("--explore", action="store_true", help="also the EXPLORE variants of d")
    parser.add_argument("--json", type=Path, help="write every figure here too")
    parser.add_argument("--lfw-folder", type=Path, help="only write lfw_subset as a folder there")
    args = parser.parse_args()
    if args.lfw_folder:
        write_lfw_folder(args.lfw_folder)
        return
    arms = {k: v for k, v in ARMS.items() if k in args.arms or k.split(":")[0] in args.arms}
    if args.explore:
        arms.update({k: [*ARMS["d"], *v] for k, v in EXPLORE.items()})
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    sizes = ", ".join(f"{t} {args.size or LITE_SIZE[t]} px" for t in args.tasks)
    print(f"Lite0 input: {sizes}, grey (repeated to RGB inside the model)\n")
    print(f"{'task':<10} {'arm':<20} {'seed':>4} {'test acc':>9} {'fit s':>7} {'total s':>8}")
    results: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="imgclf-bench-") as tmp:
        for task, (make_folds, classes, native) in tasks(args.tasks).items():
            seeds = args.seeds
            for seed in seeds:
                folds = make_folds(seed)
                for arm, overrides in arms.items():
                    if arm in EXPLORE and seed != seeds[0]:
                        continue  # the variants: first seed only
                    # later overrides win: an EXPLORE variant's own image size replaces --size
                    size = args.size or LITE_SIZE[task]
                    over = [*_size(arm, native, size), *overrides]
                    acc, fit_s, total_s = run_arm(over, folds, classes, seed, Path(tmp))
                    results.setdefault(task, {}).setdefault(arm, []).append((acc, fit_s, total_s))
                    print(
                        f"{task:<10} {arm:<20} {seed:>4} {acc:>9.4f} {fit_s:>7.1f} {total_s:>8.1f}",
                        flush=True,
                    )
    summarise(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def summarise(results: dict[str, dict[str, list[tuple[float, float, float]]]]) -> None:
    """Mean accuracy per arm, each seed, error ratio vs the best scratch arm, mean time."""
    head = f"{'mean acc':>9} {'per seed':<24} {'err ratio':>9} {'s/seed':>7}"
    print(f"\n{'task':<10} {'arm':<20} {head}")
    for task, by_arm in results.items():
        scratch = [np.mean([r[0] for r in v]) for k, v in by_arm.items() if k.startswith("a")]
        best_err = 1 - max(scratch) if scratch else None
        for arm, rows in by_arm.items():
            acc = float(np.mean([r[0] for r in rows]))
            ratio = (1 - acc) / best_err if best_err else float("nan")
            seeds = " ".join(f"{r[0]:.3f}" for r in rows)
            secs = float(np.mean([r[2] for r in rows]))
            print(f"{task:<10} {arm:<20} {acc:>9.4f} {seeds:<24} {ratio:>9.2f} {secs:>7.0f}")


if __name__ == "__main__":
    main()
