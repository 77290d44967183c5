"""Honest evaluation: test-set metrics computed once, with the best weights, on held-out images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.forward import Forward

if TYPE_CHECKING:
    import keras

    from imgclf.confidence.split_outputs import SplitOutputs
    from imgclf.data import Splits

TTA_CHUNK = 1024  # test images per chunk of the test-time augmentation pass


def predict_proba(model: Any, images: np.ndarray, batch_size: int | str = "auto") -> np.ndarray:
    """The outputs of `model` for uint8/float images [N, H, W, C] in memory, through a compiled
    function on bounded batches (`forward.Forward`; `batch_size` images at a time)."""

    if len(images) == 0:
        return np.zeros((0, 0), np.float32)
    return np.asarray(Forward(model, batch_size)(images), dtype=np.float32)


def predict_readable(
    model: Any, images: Any, batch_size: int | str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """(outputs [k, ...], positions [k]) for every readable image of `images`, an array or a
    streamed split's ImageView (whose unreadable files are left out), through a compiled
    function `batch_size` images at a time (`forward.Forward`)."""

    outs, kept = [], []
    for out, positions in Forward(model, batch_size).stream(images):
        outs.append(np.asarray(out, dtype=np.float32))
        kept.append(positions)
    if not outs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(outs), np.concatenate(kept)


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str], k: int
) -> dict[str, Any]:
    """Loss, accuracy, top-k accuracy, per-class precision/recall/F1/support, confusion matrix.

    The loss is the plain cross-entropy of the probabilities (no regularisation terms), so it is
    comparable across models.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    n_classes = len(class_names)
    k = max(1, min(k, n_classes))
    labels = np.asarray(labels, dtype=np.int64)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    predicted = probs.argmax(axis=1)
    # Rank of the true class among the scores: in the top k if fewer than k classes beat it.
    beaten_by = (probs > probs[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=list(range(n_classes)), zero_division=0
    )
    matrix = confusion_matrix(labels, predicted, labels=list(range(n_classes)))
    return {
        "test": {
            "loss": float(-np.log(picked).mean()),
            "accuracy": float((predicted == labels).mean()),
            "top_k_accuracy": float((beaten_by < k).mean()),
            "k": k,
            "n": len(labels),
        },
        "per_class": {
            # A class with no test image was never tested: None, not a misleading 0.000.
            name: {
                "precision": float(precision[i]) if support[i] else None,
                "recall": float(recall[i]) if support[i] else None,
                "f1": float(f1[i]) if support[i] else None,
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
        "labels": list(class_names),
    }


def evaluate(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    k: int = 5,
    files: Sequence[str] | None = None,
    worst: int = 10,
) -> tuple[dict[str, Any], np.ndarray]:
    """Evaluate `model` on a test split; returns (metrics dict, probabilities).

    `images` is an array or a streamed split's ImageView: a test file that cannot be decoded is
    left out (and reported by the store), so `test.n` counts the images evaluated. See
    `evaluate_probabilities` for what the metrics hold.
    """
    probs, kept = predict_readable(model, images)
    metrics = evaluate_probabilities(probs, labels, kept, class_names, k, files, worst)
    return metrics, probs


def evaluate_probabilities(
    probs: np.ndarray,
    labels: np.ndarray,
    kept: np.ndarray,
    class_names: Sequence[str],
    k: int = 5,
    files: Sequence[str] | None = None,
    worst: int = 10,
) -> dict[str, Any]:
    """The test metrics of probabilities float [n, K] of the readable test images at positions
    `kept` [n] of a split whose labels are `labels` [N]: `classification_metrics`, plus the
    `worst` test images with the highest cross-entropy (the lowest probability on their true
    class), by file and position in the split, with their prediction."""
    labels = np.asarray(labels)[kept]
    metrics = classification_metrics(probs, labels, class_names, k)
    predicted = probs.argmax(axis=1)
    p_true = probs[np.arange(len(labels)), labels]
    order = np.argsort(p_true, kind="stable")[:worst]
    metrics["worst_predictions"] = [
        {
            "index": int(kept[i]),
            "file": files[kept[i]] if files is not None else None,
            "true": class_names[labels[i]],
            "predicted": class_names[predicted[i]],
            "confidence": float(probs[i, predicted[i]]),
            "true_probability": float(p_true[i]),
            "loss": float(-np.log(max(float(p_true[i]), 1e-12))),
        }
        for i in order
    ]
    return metrics


def validation_figures(val: SplitOutputs, temperature: float) -> dict[str, Any]:
    """The final model's accuracy and loss (mean cross-entropy of the calibrated probabilities)
    on the validation split: metrics.json `validation`, what a hyperparameter search ranks
    trials by, so the test split never takes part in choosing (None without validation images)."""
    if len(val) == 0:
        return {"images": 0, "accuracy": None, "loss": None}
    p = val.probabilities(temperature)
    picked = np.clip(p[np.arange(len(val)), val.labels], 1e-12, 1.0)
    accuracy = float(np.mean(np.argmax(p, axis=1) == val.labels))
    return {"images": len(val), "accuracy": accuracy, "loss": float(-np.mean(np.log(picked)))}


def tta_test_figures(
    model: keras.Model, splits: Splits, test: SplitOutputs, mode: str, batch: int,
    temperature: float = 1.0,
) -> dict[str, Any]:  # fmt: skip
    """metrics.json `test_tta`: the test images again through the test-time augmentation views
    of `mode` (`imgclf.models.tta`; `model` has its temperature folded in), in chunks of
    TTA_CHUNK images (memory does not grow with the test split); with the plain figures on the
    same images (`temperature`: what was folded in), so the gain is like for like."""
    from imgclf.models.tta import VIEWS, tta_model

    # every view's activations are alive at once: the batch shrinks by the number of views
    forward, x = Forward(tta_model(model, mode), max(1, batch // VIEWS[mode])), splits.test.x
    probs, rows = [], []
    for start in range(0, len(test), TTA_CHUNK):
        chunk = np.arange(start, min(start + TTA_CHUNK, len(test)))
        positions = test.positions[chunk]
        if hasattr(x, "read"):  # streamed: read again (a file changed since: left out)
            images, ok = x.read(positions)
            chunk = chunk[ok]
        else:
            images = np.asarray(x[positions])
        probs.append(np.asarray(forward(images), np.float64))
        rows.append(chunk)
    p, rows = np.concatenate(probs), np.concatenate(rows)
    labels, plain = test.labels[rows], test.probabilities(temperature)[rows]

    def figures(q: np.ndarray) -> tuple[float, float]:
        picked = np.clip(q[np.arange(len(q)), labels], 1e-12, 1.0)
        return float(np.mean(q.argmax(1) == labels)), float(-np.mean(np.log(picked)))

    (accuracy, loss), (plain_accuracy, plain_loss) = figures(p), figures(plain)
    return {
        "tta": mode, "views": VIEWS[mode], "n": len(rows), "accuracy": accuracy, "loss": loss,
        "accuracy_without_tta": plain_accuracy, "loss_without_tta": plain_loss,
        "gain": accuracy - plain_accuracy,
    }  # fmt: skip
