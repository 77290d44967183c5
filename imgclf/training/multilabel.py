"""The end of a `task: multilabel` run: per-label decision thresholds chosen on the validation
split, test metrics from scikit-learn, and the run's artifacts.

    thresholds   per label, the probability cut that maximises that label's F1 on the
                 validation split (over every cut scikit-learn's precision_recall_curve
                 gives); test never takes part. A label is predicted when p >= its threshold.
    test         mAP (macro: the mean of per-label average precision; micro: over every
                 image-label pair), per label precision / recall / F1 / AP / support and a
                 confusion summary (true and false positives, false negatives), subset accuracy
                 (every label of an image right), Hamming loss (the share of image-label
                 decisions wrong), binary cross-entropy; the same decisions at a single 0.5
                 threshold beside them; the 3 worst test images per label
    exports      the SavedModel at the end (train.export), TFLite and ONNX by imgclf-export, each
                 checked on every per-label probability; Predictor on an export in its run
                 uses the run's thresholds
    not yet      calibration and the out-of-distribution score
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf import runs
from imgclf.evaluate import predict_readable
from imgclf.forward import inference_batch_size

if TYPE_CHECKING:
    import keras

    from imgclf.data import Split, Splits
    from imgclf.schema import Config

WORST_PER_LABEL = 3


def choose_thresholds(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """float [K]: per label the cut of highest F1 on (`probs`, `targets`) [N, K] (validation)."""
    from sklearn.metrics import precision_recall_curve

    cuts = np.full(targets.shape[1], 0.5)
    for k in range(targets.shape[1]):
        if targets[:, k].sum() == 0:
            continue  # no positive to learn a cut from: 0.5
        precision, recall, thresholds = precision_recall_curve(targets[:, k], probs[:, k])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        cuts[k] = float(thresholds[int(np.argmax(f1))])
    return cuts


def _decisions(probs: np.ndarray, targets: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    return {
        "subset_accuracy": float(accuracy_score(targets, predicted)),
        "hamming_loss": float(hamming_loss(targets, predicted)),
        "micro_f1": float(f1_score(targets, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(targets, predicted, average="macro", zero_division=0)),
    }


def multilabel_metrics(
    probs: np.ndarray, targets: np.ndarray, cuts: np.ndarray, names: list[str]
) -> dict[str, Any]:
    """The test figures of the module docstring for `probs` and `targets` [N, K]."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    predicted = (probs >= cuts).astype(int)
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    loss = float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predicted, zero_division=0
    )
    per_label = {}
    for k, name in enumerate(names):
        t, d = targets[:, k] > 0, predicted[:, k] > 0
        per_label[name] = {
            "threshold": float(cuts[k]), "precision": float(precision[k]),
            "recall": float(recall[k]), "f1": float(f1[k]), "support": int(support[k]),
            "ap": float(average_precision_score(t, probs[:, k])) if t.any() else None,
            "true_positives": int((t & d).sum()), "false_positives": int((~t & d).sum()),
            "false_negatives": int((t & ~d).sum()),
        }  # fmt: skip
    return {
        "n": len(targets), "loss": loss,
        "map_macro": float(average_precision_score(targets, probs, average="macro")),
        "map_micro": float(average_precision_score(targets, probs, average="micro")),
        "thresholds": "per label, maximising F1 on validation",
        "at_thresholds": _decisions(probs, targets, predicted),
        "at_0.5": _decisions(probs, targets, (probs >= 0.5).astype(int)),
        "per_label": per_label,
    }  # fmt: skip


def _outputs(model: keras.Model, split: Split, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [n, K] of the readable images, their positions in the split)."""
    return predict_readable(model, split.x, batch)


def _worst(probs: np.ndarray, targets: np.ndarray, files: Any, names: list[str]) -> dict:
    """Per label the WORST_PER_LABEL test images whose probability is furthest from the truth."""
    worst = {}
    for k, name in enumerate(names):
        gap = np.abs(probs[:, k] - targets[:, k])
        rows = np.argsort(-gap, kind="stable")[:WORST_PER_LABEL]
        worst[name] = [
            {"index": int(r), "file": files[r] if files else None,
             "probability": float(probs[r, k]), "true": bool(targets[r, k])}
            for r in rows
        ]  # fmt: skip
    return worst


def finish_multilabel(
    run_dir: Path, model: keras.Model, splits: Splits, config: Config,
    extra: dict[str, Any] | None = None, verbose: int | str = 0, meter: Any = None,
    estimate: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Write the artifacts of a trained multi-label run and return its metrics (the same
    arguments as `finish.finish_run`)."""
    from imgclf.plots import plot_curves
    from imgclf.training.tracking import finish_run as finish_tracking

    if estimate is not None:
        estimate.finishing()
    extra = dict(extra or {})
    batch = inference_batch_size(model, config.train.eval_batch_size)
    val_probs, val_rows = _outputs(model, splits.val, batch)
    test_probs, test_rows = _outputs(model, splits.test, batch)
    cuts = choose_thresholds(val_probs, splits.val.targets[val_rows])
    targets = splits.test.targets[test_rows]
    figures = multilabel_metrics(test_probs, targets, cuts, splits.class_names)
    files = [splits.test.files[r] for r in test_rows] if splits.test.files else None
    figures["worst_per_label"] = _worst(test_probs, targets, files, splits.class_names)
    validation = multilabel_metrics(
        val_probs, splits.val.targets[val_rows], cuts, splits.class_names
    )
    metrics = {
        "task": "multilabel",
        "test": {"accuracy": figures["at_thresholds"]["subset_accuracy"],
                 "loss": figures["loss"], "n": figures["n"]},
        "validation": {"images": len(val_rows), "map_macro": validation["map_macro"],
                       "accuracy": validation["at_thresholds"]["subset_accuracy"],
                       "loss": validation["loss"]},
        "multilabel": figures, "labels": splits.class_names, **extra,
    }  # fmt: skip
    with runs.atomic_path(run_dir / runs.MODEL) as tmp:
        model.save(tmp)
    history = runs.read_history(run_dir / runs.HISTORY)
    curves = {k: [r.get(k) for r in history if r.get(k) is not None]
              for k in ("loss", "accuracy", "val_loss", "val_accuracy")}  # fmt: skip
    plot_curves(curves, run_dir / runs.CURVES_PLOT, [r.phase for r in history])
    if meter is not None:
        metrics["resources"] = meter.report()
    runs.write_json(run_dir / runs.METRICS, metrics)
    (run_dir / runs.PROGRESS).unlink(missing_ok=True)
    runs.write_text(run_dir / runs.MODEL_CARD, _card(config, splits, metrics))
    finish_tracking(run_dir, config)
    runs.write_manifest(run_dir)
    runs.set_state(run_dir, runs.COMPLETE)
    if config.train.export:
        _export(run_dir)
    if verbose:
        print(summary_line(metrics), flush=True)
    return metrics


def _export(run_dir: Path) -> None:
    """The SavedModel of the complete run (its per-label probabilities parity-checked, as
    `imgclf-export RUN` does); one line and a run without it when it fails its check."""
    import sys

    from imgclf.export.parity import ExportError
    from imgclf.export.saved_model import export_run
    from imgclf.training.backend import can_export_saved_model, export_skipped_message

    if not can_export_saved_model():
        print(export_skipped_message(run_dir), file=sys.stderr, flush=True)
        return
    try:
        export_run(run_dir)
    except ExportError as exc:
        print(f"export: SavedModel withheld: {exc}", file=sys.stderr, flush=True)


def summary_line(metrics: dict[str, Any]) -> str:
    m = metrics["multilabel"]
    return (
        f"test: mAP {m['map_macro']:.4f} (micro {m['map_micro']:.4f}), subset accuracy "
        f"{m['at_thresholds']['subset_accuracy']:.4f}, Hamming loss "
        f"{m['at_thresholds']['hamming_loss']:.4f} at per-label thresholds "
        f"({m['at_0.5']['subset_accuracy']:.4f} / {m['at_0.5']['hamming_loss']:.4f} at 0.5; "
        f"{m['n']} images)"
    )


def _card(config: Config, splits: Splits, metrics: dict[str, Any]) -> str:
    m = metrics["multilabel"]
    rows = "\n".join(
        f"| {name} | {v['threshold']:.3f} | {v['precision']:.3f} | {v['recall']:.3f} | "
        f"{v['f1']:.3f} | {v['ap'] if v['ap'] is None else round(v['ap'], 3)} | {v['support']} |"
        for name, v in m["per_label"].items()
    )
    return f"""# Model card: {config.name}

A multi-label classifier (`task: multilabel`): `{config.model.name}` on `{config.data.source}`,
{len(splits.class_names)} labels, independent sigmoid outputs trained with binary cross-entropy.
Written {time.strftime("%Y-%m-%d %H:%M")}.

## How it decides
Each label has its own threshold, chosen on the validation split to maximise that label's F1;
an image gets every label whose probability reaches its threshold (possibly none, possibly
all). The probabilities are not calibrated, and there is no out-of-distribution warning yet.

## Test figures ({m["n"]} images)
{summary_line(metrics)}

| label | threshold | precision | recall | F1 | AP | support |
|---|---|---|---|---|---|---|
{rows}
"""
