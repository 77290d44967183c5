"""Multi-label classification, measured (issue #31): the recipe configs/multilabel_example.yaml
(a CNN on multimnist, `task: multilabel`) against a baseline of independent one-vs-rest
logistic regressions (scikit-learn) on the same pictures' pixels (scaled to 0..1), same split;
and the effect of per-label thresholds chosen on validation against a single 0.5.

`--task fashion-pairs`: a real-photo-like task built from installed photos. Fashion-MNIST's
product photos (Debian's dataset-fashion-mnist), two different products side by side in one
picture (or one beside an empty half), written as a folder dataset with each picture in each
of its labels' folders (hard links: the multi-label folder layout, read as a user's would be),
then: a CNN from scratch, EfficientNet-Lite0's ImageNet features under a trained sigmoid head
(the two-phase transfer's frozen phase on cached features), and the one-vs-rest baseline.

    python benchmarks/multilabel.py [--task multimnist|fashion-pairs] [--pictures N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


from imgclf import runs
from imgclf.config import load_config
from imgclf.data import load_data
from imgclf.train import train
from imgclf.training.multilabel import choose_thresholds, multilabel_metrics

RECIPE = "configs/multilabel_example.yaml"


def row(name: str, m: dict, seconds: float) -> str:
    t, h = m["at_thresholds"], m["at_0.5"]
    return (
        f"| {name} | {m['map_macro']:.4f} | {m['map_micro']:.4f} | {t['subset_accuracy']:.4f} | "
        f"{h['subset_accuracy']:.4f} | {t['hamming_loss']:.4f} | {h['hamming_loss']:.4f} | "
        f"{t['macro_f1']:.4f} | {h['macro_f1']:.4f} | {seconds:.0f} |"
    )


def baseline(splits) -> tuple[dict, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    began = time.perf_counter()
    import numpy as np

    # A folder source streams its images (an ImageView): read each split whole, as pixels.
    flat = {n: np.asarray(s.x[np.arange(len(s))]).reshape(len(s), -1) / 255.0 for n, s in
            (("train", splits.train), ("val", splits.val), ("test", splits.test))}  # fmt: skip
    model = OneVsRestClassifier(LogisticRegression(C=0.1, max_iter=300), n_jobs=1)
    model.fit(flat["train"], splits.train.targets)
    cuts = choose_thresholds(model.predict_proba(flat["val"]), splits.val.targets)
    probs = model.predict_proba(flat["test"])
    figures = multilabel_metrics(probs, splits.test.targets, cuts, splits.class_names)
    return figures, time.perf_counter() - began


FASHION_NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                 "bag", "boot"]  # fmt: skip


def fashion_pairs(root: Path, pictures: int, seed: int = 31) -> Path:
    """`pictures` PNGs of 28×56 under root/<label>/, two thirds of them two different
    products side by side (hard-linked into both labels' folders), the rest one product
    beside an empty half."""
    import numpy as np
    from PIL import Image

    from imgclf.data.builtin import fashion_mnist

    pool = fashion_mnist(load_config(None, ["data.source=fashion_mnist"]).data)
    x, y = pool.images[..., 0] if pool.images.ndim == 4 else pool.images, pool.labels
    rng = np.random.default_rng(seed)
    for name in FASHION_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(pictures):
        a = int(rng.integers(len(y)))
        halves, labels = [x[a], np.zeros((28, 28), np.uint8)], [int(y[a])]
        if rng.random() < 2 / 3:
            others = np.flatnonzero(y != y[a])
            b = int(others[rng.integers(len(others))])
            halves[1], labels = x[b], [*labels, int(y[b])]
        if rng.random() < 0.5:
            halves.reverse()
        first = root / FASHION_NAMES[labels[0]] / f"p{i:05d}.png"
        Image.fromarray(np.concatenate(halves, axis=1)).save(first)
        for extra in labels[1:]:
            os.link(first, root / FASHION_NAMES[extra] / first.name)
    return root


def fashion_main(pictures: int) -> None:
    common = ["task=multilabel", "data.source=folder", "data.image_size=[28,56]",
              "data.channels=1", "train.export=false", "train.diagnostics=false"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        root = fashion_pairs(Path(tmp) / "pairs", pictures)
        print(f"wrote {pictures} pictures in {time.perf_counter() - began:.0f} s", flush=True)
        recipes = {
            "CNN from scratch (the multilabel recipe's model)": (RECIPE, [
                *common, f"data.path={root}", "name=fashion-pairs-cnn"]),
            "EfficientNet-Lite0 ImageNet features + sigmoid head (frozen, cached)": (None, [
                *common, f"data.path={root}", "name=fashion-pairs-lite0",
                "model.name=efficientnet_lite0", "model.weights=imagenet", "data.channels=3",
                "data.image_size=[64,128]", "transfer.head_epochs=15",
                "transfer.fine_tune_epochs=0", "augment.rotation=0", "augment.zoom=0",
                "augment.translate=0",
                "train.learning_rate=0.003", "train.batch_size=64"]),
        }  # fmt: skip
        rows, splits = [], None
        for name, (recipe, overrides) in recipes.items():
            config = load_config(recipe, overrides)
            data = load_data(config)
            splits = splits or data
            print(f"{name}: {data.report['totals']}, {data.report['several_labels']}", flush=True)
            began = time.perf_counter()
            run = train(config, out=Path(tmp) / config.name, verbose=0, splits=data)
            metrics = runs.read_json(run / runs.METRICS)
            cal = metrics.get("calibration") or {}
            if "after" in cal:
                print(f"  ECE {cal['before']['ece']:.4f} -> {cal['after']['ece']:.4f}")
            rows.append(row(name, metrics["multilabel"], time.perf_counter() - began))
            print(rows[-1], flush=True)
        base, seconds = baseline(splits)
        rows.append(row("one-vs-rest logistic regression on pixels", base, seconds))
    _table(rows)


def _table(rows: list[str]) -> None:
    print(
        "\n| model | mAP macro | mAP micro | subset acc (thresholds) | subset acc (0.5) | "
        "Hamming (thresholds) | Hamming (0.5) | macro F1 (thresholds) | macro F1 (0.5) | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows), flush=True)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["multimnist", "fashion-pairs"], default="multimnist")
    parser.add_argument("--pictures", type=int, default=4000)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPU cores", flush=True)
    if args.task == "fashion-pairs":
        return fashion_main(args.pictures)
    config = load_config(RECIPE, ["train.export=false"])
    splits = load_data(config)
    print(f"multimnist: {splits.report['totals']}, labels per picture "
          f"{splits.report['labels_per_image']['test']:.2f} (test)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        run = train(config, out=Path(tmp) / "run", verbose=0, splits=splits)
        cnn = runs.read_json(run / runs.METRICS)["multilabel"]
        cnn_seconds = time.perf_counter() - began
    base, base_seconds = baseline(splits)
    _table([row("CNN, task: multilabel (the recipe)", cnn, cnn_seconds),
            row("one-vs-rest logistic regression on pixels", base, base_seconds)])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
