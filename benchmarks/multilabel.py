"""Multi-label classification, measured (issue #31): the recipe configs/multilabel_example.yaml
(a CNN on multimnist, `task: multilabel`) against a baseline of independent one-vs-rest
logistic regressions (scikit-learn) on the same pictures' pixels (scaled to 0..1), same split;
and the effect of per-label thresholds chosen on validation against a single 0.5.

    python benchmarks/multilabel.py
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
    flat = {n: s.x.reshape(len(s), -1) / 255.0 for n, s in
            (("train", splits.train), ("val", splits.val), ("test", splits.test))}  # fmt: skip
    model = OneVsRestClassifier(LogisticRegression(C=0.1, max_iter=300), n_jobs=1)
    model.fit(flat["train"], splits.train.targets)
    cuts = choose_thresholds(model.predict_proba(flat["val"]), splits.val.targets)
    probs = model.predict_proba(flat["test"])
    figures = multilabel_metrics(probs, splits.test.targets, cuts, splits.class_names)
    return figures, time.perf_counter() - began


def main() -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPU cores", flush=True)
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
    print(
        "\n| model | mAP macro | mAP micro | subset acc (thresholds) | subset acc (0.5) | "
        "Hamming (thresholds) | Hamming (0.5) | macro F1 (thresholds) | macro F1 (0.5) | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(row("CNN, task: multilabel (the recipe)", cnn, cnn_seconds))
    print(row("one-vs-rest logistic regression on pixels", base, base_seconds), flush=True)


if __name__ == "__main__":
    sys.exit(main())
