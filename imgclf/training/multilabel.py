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
    calibration  one temperature per label fitted on validation and folded into the output layer
                 (`imgclf.confidence.multilabel`; train.calibrate), so model.keras and every
                 export answer calibrated; thresholds are chosen after it; test ECE before/after
    OOD          the Mahalanobis detector of single-label runs (`imgclf.confidence.ood`), its
                 class means those of each label combination seen in training; one flag per image
    artifacts    worst/ (per label the 3 test images furthest from the truth), samples/ (named
                 by label set), plots/ (curves, reliability), metrics.json, model_card.md
    exports      the SavedModel at the end (train.export), TFLite and ONNX by imgclf-export, each
                 checked on every per-label probability; Predictor on an export in its run
                 uses the run's thresholds
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf import runs
from imgclf.forward import inference_batch_size
from imgclf.training.multilabel_report import card, summary_line

if TYPE_CHECKING:
    import keras

    from imgclf.confidence.split_outputs import SplitOutputs
    from imgclf.data import Split, Splits
    from imgclf.schema import Config

WORST_PER_LABEL = 3
MIN_SET_IMAGES = 5  # a label combination with fewer training images has no OOD centre of its own
MAX_SET_CENTRES = 64  # at most this many combinations get one (the most frequent)
MAX_NAMED = 3  # labels named in a sample's file name (then `+N-more`)
CURVE_POINTS = 60  # per label, on the test precision-recall curve (the app draws them)


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


def label_set_codes(targets: np.ndarray) -> tuple[np.ndarray, int]:
    """(int64 [N]: each image's group, the number of groups): the "classes" of the OOD
    detector's mixture. An image with `3` and `7` is neither a typical 3 nor a typical 7, so a
    label combination seen at least MIN_SET_IMAGES times is a group of its own (the
    MAX_SET_CENTRES most frequent); any other image joins the group of its first label, so a
    long tail of rare combinations cannot make thousands of one-image centres."""
    _, inverse, counts = np.unique(
        np.asarray(targets) > 0, axis=0, return_inverse=True, return_counts=True
    )
    inverse = np.asarray(inverse, np.int64).ravel()
    frequent = [s for s in np.argsort(-counts, kind="stable") if counts[s] >= MIN_SET_IMAGES]
    own = {int(s): n for n, s in enumerate(frequent[:MAX_SET_CENTRES])}
    first = np.argmax(np.asarray(targets), axis=1)
    keys = [
        ("set", own[int(s)]) if int(s) in own else ("first", int(f))
        for s, f in zip(inverse, first, strict=True)
    ]
    index = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    codes = np.array([index[key] for key in keys], np.int64)
    return codes, len(index)


def confidence_step(
    model: keras.Model, splits: Splits, config: Config, batch: int
) -> tuple[dict[str, SplitOutputs], Any, np.ndarray]:
    """(outputs per split, the Confidence, the temperatures [K]): one bounded pass per split
    (`split_outputs.run_outputs`), per-label temperatures fitted on validation and folded into
    the output layer (`confidence.multilabel`), and the OOD detector (`confidence.fit`) fitted
    with each training image's label set as its class."""
    from imgclf.confidence import multilabel as calib
    from imgclf.confidence.calibration import fold_temperature
    from imgclf.confidence.fit import fit_confidence
    from imgclf.confidence.ood import MAX_FIT_IMAGES
    from imgclf.confidence.split_outputs import run_outputs

    tcfg = config.train
    outputs = run_outputs(model, splits, batch, MAX_FIT_IMAGES if tcfg.ood else 0, config.seed)
    val, test = outputs["val"], outputs["test"]
    temperatures, section = np.ones(len(splits.class_names)), None
    if tcfg.calibrate and len(val) and len(test):
        temperatures, section = calib.calibrate(
            val.logits, splits.val.targets[val.positions], test.logits,
            splits.test.targets[test.positions], splits.class_names,
        )  # fmt: skip
    elif tcfg.calibrate:
        section = {"skipped": "no readable validation or test image to fit or measure on"}
    sets = 0
    if "train" in outputs:
        codes, sets = label_set_codes(splits.train.targets[outputs["train"].positions])
        outputs["train"] = dataclasses.replace(outputs["train"], labels=codes)
    only_ood = config.model_copy(update={"train": tcfg.model_copy(update={"calibrate": False})})
    confidence = fit_confidence(model, outputs, sets, only_ood)
    confidence.calibration = section
    if (temperatures != 1.0).any():  # folded before saving: model.keras answers calibrated
        fold_temperature(model, temperatures)
    return outputs, confidence, temperatures


def _curves(probs: np.ndarray, targets: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per label its test precision-recall curve (scikit-learn), at most CURVE_POINTS points."""
    from sklearn.metrics import precision_recall_curve

    curves = {}
    for k, name in enumerate(names):
        if not targets[:, k].any():
            continue
        precision, recall, _ = precision_recall_curve(targets[:, k], probs[:, k])
        keep = np.unique(np.linspace(0, len(precision) - 1, CURVE_POINTS).round().astype(int))
        curves[name] = {"precision": precision[keep].round(4).tolist(),
                        "recall": recall[keep].round(4).tolist()}  # fmt: skip
    return curves


def _worst(
    probs: np.ndarray, targets: np.ndarray, positions: np.ndarray, test: Split, names: list[str],
    run_dir: Path,
) -> dict:  # fmt: skip
    """Per label the WORST_PER_LABEL test images whose probability is furthest from the
    truth, each saved as a PNG under worst/ (the app shows them without the dataset)."""
    from imgclf.images import png_bytes
    from imgclf.training.finish import safe_names

    folder = run_dir / runs.WORST
    folder.mkdir(exist_ok=True)
    safe, worst = safe_names(names), {}
    for k, name in enumerate(names):
        gap = np.abs(probs[:, k] - targets[:, k])
        entries = []
        for n, r in enumerate(np.argsort(-gap, kind="stable")[:WORST_PER_LABEL]):
            index = int(positions[r])
            image = f"{runs.WORST}/{safe[name]}_{n}.png"
            runs.write_bytes(run_dir / image, png_bytes(test.x[index]))
            entries.append({
                "index": index, "file": test.files[index] if test.files else None,
                "probability": float(probs[r, k]), "true": bool(targets[r, k]), "image": image,
            })  # fmt: skip
        worst[name] = entries
    return worst


def save_samples(run_dir: Path, splits: Splits) -> None:
    """A few test images as PNGs named by their label sets (`test00_true-3+7.png`), those with
    the most labels first, so a user can try imgclf-predict on a several-label image at once."""
    from imgclf.images import png_bytes
    from imgclf.training.finish import MAX_SAMPLES, safe_names

    test = splits.test
    readable = test.readable()
    order = readable[np.argsort(-test.targets[readable].sum(1), kind="stable")][:MAX_SAMPLES]
    folder = run_dir / runs.SAMPLES
    folder.mkdir(exist_ok=True)
    safe = safe_names(splits.class_names)
    for n, i in enumerate(order):
        present = [safe[splits.class_names[k]] for k in np.flatnonzero(test.targets[i])]
        labels = "+".join(present[:MAX_NAMED])[:120]  # a file name has its limits
        labels += f"+{len(present) - MAX_NAMED}-more" if len(present) > MAX_NAMED else ""
        runs.write_bytes(folder / f"test{n:02d}_true-{labels}.png", png_bytes(test.x[i]))


def finish_multilabel(
    run_dir: Path, model: keras.Model, splits: Splits, config: Config,
    extra: dict[str, Any] | None = None, verbose: int | str = 0, meter: Any = None,
    estimate: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Write the artifacts of a trained multi-label run and return its metrics (the same
    arguments as `finish.finish_run`)."""
    from imgclf.confidence.multilabel import sigmoid
    from imgclf.training.finish import require_test_images
    from imgclf.training.progress import Meter

    meter = meter or Meter()
    if estimate is not None:
        estimate.finishing()
    batch = inference_batch_size(model, config.train.eval_batch_size)
    with meter.stage("confidence"):
        outputs, confidence, temperatures = confidence_step(model, splits, config, batch)
    require_test_images(run_dir, splits, outputs["test"])
    val, test = outputs["val"], outputs["test"]
    val_targets, targets = splits.val.targets[val.positions], splits.test.targets[test.positions]
    val_probs, test_probs = sigmoid(val.logits, temperatures), sigmoid(test.logits, temperatures)
    cuts = choose_thresholds(val_probs, val_targets)  # on calibrated validation probabilities
    names = splits.class_names
    with meter.stage("evaluation"):
        figures = multilabel_metrics(test_probs, targets, cuts, names)
        figures["curves"] = _curves(test_probs, targets, names)
        figures["worst_per_label"] = _worst(
            test_probs, targets, test.positions, splits.test, names, run_dir
        )
        # No readable validation image (data.cache none found them all broken): 0.5 cuts.
        validation = multilabel_metrics(val_probs, val_targets, cuts, names) if len(val) else None
        save_samples(run_dir, splits)
    metrics = {
        "task": "multilabel",
        "test": {"accuracy": figures["at_thresholds"]["subset_accuracy"],
                 "loss": figures["loss"], "n": figures["n"]},
        "validation": validation and {
            "images": len(val), "map_macro": validation["map_macro"],
            "accuracy": validation["at_thresholds"]["subset_accuracy"],
            "loss": validation["loss"]},
        "multilabel": figures, "labels": names, "counts": splits.report["totals"],
        **(extra or {}), "calibration": confidence.calibration, "ood": confidence.ood,
    }  # fmt: skip
    _write_run(run_dir, model, confidence.stats, config, splits, metrics, meter)
    if config.train.export:
        with meter.stage("export"):
            _export(run_dir)
    if verbose:
        print(_closing_lines(run_dir, metrics), flush=True)
    return metrics


def _closing_lines(run_dir: Path, metrics: dict[str, Any]) -> str:
    """The test figures, the SavedModel's parity (when it was written), the confidence line
    and the cost line (up to the export, which runs after the run is complete)."""
    from imgclf.training.progress import cost_line

    text = summary_line(metrics)
    record = runs.read_json(run_dir / runs.EXPORTS).get("saved_model", {}) if (
        run_dir / runs.EXPORTS).is_file() else {}  # fmt: skip
    parity = record.get("parity") or {}
    if "max_abs_diff" in parity:
        first, _, rest = text.partition("\n")
        first += f"; SavedModel parity max |Δp| {parity['max_abs_diff']:.1e}"
        text = first + ("\n" + rest if rest else "")
    return text + "\n" + cost_line(metrics["resources"])


def _write_run(
    run_dir: Path, model: keras.Model, stats: Any, config: Config, splits: Splits,
    metrics: dict[str, Any], meter: Any,
) -> None:  # fmt: skip
    """model.keras (the temperatures folded in), ood.npz, metrics.json, the plots, the model
    card, then the manifest and the `complete` state."""
    from imgclf.plots import plot_reliability
    from imgclf.training.finish import plot_history, save_model
    from imgclf.training.tracking import finish_run as finish_tracking

    save_model(run_dir, model, stats)
    plot_history(run_dir)
    if (metrics.get("calibration") or {}).get("after"):
        plot_reliability(metrics["calibration"], run_dir / runs.RELIABILITY_PLOT)
    metrics["resources"] = meter.report()
    runs.write_json(run_dir / runs.METRICS, metrics)
    (run_dir / runs.PROGRESS).unlink(missing_ok=True)
    runs.write_text(run_dir / runs.MODEL_CARD, card(config, splits, metrics))
    finish_tracking(run_dir, config)
    runs.write_manifest(run_dir)
    runs.set_state(run_dir, runs.COMPLETE)


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
