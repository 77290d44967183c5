"""The end of a run: everything written after training, from the trained model and its data.

`finish_run` saves model.keras, evaluates once on the held-out test split (metrics.json, the
worst predictions under worst/), draws the plots, saves sample images, exports the SavedModel
(parity-checked), writes the model card and, last, the manifest. It needs only the run
directory, the model and the splits, so it also re-evaluates and re-exports an existing run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf import evaluate, runs
from imgclf.confidence.fit import fit_confidence
from imgclf.confidence.ood import MAX_FIT_IMAGES
from imgclf.confidence.split_outputs import head_outputs, run_outputs
from imgclf.evaluate import evaluate_probabilities
from imgclf.export.parity import PARITY_MAX_IMAGES, ExportError, Reference, model_reference
from imgclf.export.saved_model import export_saved_model, saved_model_record
from imgclf.forward import inference_batch_size
from imgclf.images import png_bytes
from imgclf.infra import faults
from imgclf.infra.bounded import clip
from imgclf.infra.errors import DataError
from imgclf.model_card import model_card
from imgclf.training.backend import backend_name, can_export_saved_model, export_skipped_message
from imgclf.training.progress import Meter, cost_line
from imgclf.training.tracking import finish_run as finish_tracking

if TYPE_CHECKING:
    import keras

    from imgclf.confidence.ood import OODStats
    from imgclf.confidence.split_outputs import SplitOutputs
    from imgclf.data import Splits
    from imgclf.schema import Config

MAX_SAMPLES = 10


def safe_names(class_names: list[str]) -> dict[str, str]:
    """Each class name as a file-name fragment, unique: names that sanitise alike (`x y`,
    `x_y`, `x?y`) get their class index appended (`x_y-0`, `x_y-1`, `x_y-2`), so a sample or
    a wrong prediction is never named like another class."""
    plain = [re.sub(r"[^A-Za-z0-9._-]+", "_", name) for name in class_names]
    return {
        name: safe if plain.count(safe) == 1 else f"{safe}-{i}"
        for i, (name, safe) in enumerate(zip(class_names, plain, strict=True))
    }


def save_samples(run_dir: Path, splits: Splits) -> None:
    """A few test images (one per class first) as PNGs, so a user can try predict at once."""

    test = splits.test
    readable = test.readable()  # a streamed file that failed to decode is never a sample
    firsts = [int(readable[test.y[readable] == c][0]) for c in np.unique(test.y[readable])]
    firsts = firsts[:MAX_SAMPLES]
    folder = run_dir / runs.SAMPLES
    folder.mkdir(exist_ok=True)
    safe = safe_names(splits.class_names)
    for n, i in enumerate(firsts):
        label = safe[splits.class_names[test.y[i]]]
        runs.write_bytes(folder / f"test{n:02d}_true-{label}.png", png_bytes(test.x[i]))


def save_worst(run_dir: Path, splits: Splits, metrics: dict[str, Any]) -> None:
    """The highest-loss test images as PNGs under worst/, named in metrics' worst_predictions
    (`image`), so the app can show them without the dataset."""

    folder = run_dir / runs.WORST
    folder.mkdir(exist_ok=True)
    safe = safe_names(splits.class_names)
    for n, entry in enumerate(metrics["worst_predictions"]):
        name = f"{n:02d}_true-{safe[entry['true']]}_pred-{safe[entry['predicted']]}.png"
        runs.write_bytes(folder / name, png_bytes(splits.test.x[entry["index"]]))
        entry["image"] = f"{runs.WORST}/{name}"


def evaluate_run(
    run_dir: Path,
    test: SplitOutputs,
    temperature: float,
    splits: Splits,
    config: Config,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate on the test split once, from the model's test outputs (`test`, computed once
    for the confidence fit too) with the calibration `temperature`, and write metrics.json
    (with `extra`: phases, epochs), worst/ and the plots; returns the metrics."""

    from imgclf.plots import plot_confusion, plot_reliability

    metrics = evaluate_probabilities(
        test.probabilities(temperature),
        splits.test.y,
        test.positions,
        splits.class_names,
        k=config.train.top_k,
        files=splits.test.files,
    )
    metrics["counts"] = splits.report["totals"]
    leaked = (splits.report.get("duplicates") or {}).get("leaked_test_files")
    if leaked and splits.test.files is not None:
        metrics["test_without_leaked"] = without_leaked(test, temperature, splits, set(leaked))
    metrics.update(extra)
    save_worst(run_dir, splits, metrics)
    runs.write_json(run_dir / runs.METRICS, metrics)
    plot_history(run_dir)
    confusion = np.asarray(metrics["confusion_matrix"])
    plot_confusion(confusion, splits.class_names, run_dir / runs.CONFUSION_PLOT)
    if metrics.get("calibration") and "after" in metrics["calibration"]:
        plot_reliability(metrics["calibration"], run_dir / runs.RELIABILITY_PLOT)
    return metrics


def plot_history(run_dir: Path) -> None:
    """plots/curves.png from the run's history.csv: loss and accuracy, training and
    validation, with the phases marked."""
    from imgclf.plots import plot_curves

    history = runs.read_history(run_dir / runs.HISTORY)
    curves = {
        key: [r.get(key) for r in history if r.get(key) is not None]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy")
    }
    plot_curves(curves, run_dir / runs.CURVES_PLOT, [r.phase for r in history])


def without_leaked(
    test: SplitOutputs, temperature: float, splits: Splits, leaked: set[str]
) -> dict[str, Any]:
    """Test accuracy over the test images that have no identical copy in training (`leaked`:
    their file names): what the source's own split would score without its leakage."""
    predicted = test.probabilities(temperature).argmax(axis=1)
    labels = splits.test.y[test.positions]
    clean = np.array([splits.test.files[int(p)] not in leaked for p in test.positions], bool)
    hits = predicted[clean] == labels[clean]
    return {
        "leaked_images": int((~clean).sum()),
        "images": int(clean.sum()),
        "accuracy": float(hits.mean()) if len(hits) else None,
    }


def run_reference(
    model: keras.Model,
    splits: Splits,
    test: SplitOutputs,
    stats: OODStats | None,
    batch_size: int,
    tta: str = "none",
) -> Reference:
    """The SavedModel's parity reference from the run's own test outputs: its first
    PARITY_MAX_IMAGES readable test images (read again, in batches), with `model`'s output
    layer (the temperature folded in) and the detector's layer applied to the features the
    confidence fit computed for them (`split_outputs.head_outputs`): the same TensorFlow ops on
    the same device as the export runs them, without another pass through the backbone. A run
    whose features were too wide to keep runs the images through `model` instead."""

    n = min(len(test), PARITY_MAX_IMAGES)
    x = splits.test.x
    positions = test.positions[:n]
    if hasattr(x, "read"):  # streamed: read those files again (or from the decoded cache)
        images, ok = x.read(positions)
        if not ok.all():  # a file that changed since it was read: check on the rest
            positions = positions[ok]
    else:
        images = np.asarray(x[positions])
    rows = np.searchsorted(test.positions, positions)
    if test.features is None or tta != "none":  # through the model (and its TTA views)
        return model_reference(model, stats, images, test.labels[rows], batch_size, tta)
    probs, scores = head_outputs(model, stats, test.features[rows], batch_size)
    threshold = None if stats is None else stats.threshold
    return Reference(images, test.labels[rows], probs, scores, threshold, batch_size)


def export_run_model(
    run_dir: Path,
    model: keras.Model,
    splits: Splits,
    test: SplitOutputs,
    ood_stats: OODStats | None,
    batch_size: int,
    tta: str = "none",
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The SavedModel (with the OOD outputs when `ood_stats`), parity-checked against the run's
    own answers on its test images (`run_reference`), recorded in exports.json; returns
    (parity report, exports) or (None, None) when the backend cannot write one (said first,
    before any work). A SavedModel that fails its check is not written: exports.json records
    it as `withheld` with the reason (printed as one line), and the run still completes."""

    if not can_export_saved_model():
        print(export_skipped_message(run_dir), file=sys.stderr, flush=True)
        return None, None
    reference = run_reference(model, splits, test, ood_stats, batch_size, tta)
    target = run_dir / runs.SAVED_MODEL
    try:
        parity = export_saved_model(model, splits.class_names, target, reference, ood_stats, tta)
    except ExportError as exc:
        # The training succeeded: the run completes with its model; only the artifact that
        # failed its check is withheld (nothing of it was written), and it says why.
        why = clip(exc, 600)
        print(f"export: SavedModel withheld: {why}", file=sys.stderr, flush=True)
        exports = {"saved_model": {"withheld": why}}
        runs.write_json(run_dir / runs.EXPORTS, exports)
        return None, exports
    record = saved_model_record(
        runs.SAVED_MODEL, model, splits.class_names, parity, runs.tree_size(target)
    )
    exports = {"saved_model": record}
    runs.write_json(run_dir / runs.EXPORTS, exports)
    return parity, exports


def report_late_failures(run_dir: Path, splits: Splits) -> int:
    """Add to data_report.json's `skipped` the streamed files that failed to decode while they
    were read (data.cache: none finds them then); returns how many were added."""
    known = {entry["file"] for entry in splits.report["skipped"]}
    added = []
    for split in (splits.train, splits.val, splits.test):
        if not split.streamed:
            continue
        store = split.x.store
        for i in sorted(set(split.x.indices.tolist()) & set(store.failures)):
            if store.files[i] not in known:
                known.add(store.files[i])
                added.append({"file": store.files[i], "reason": store.failures[i]})
    if added:
        splits.report["skipped"].extend(added)
        runs.write_json(run_dir / runs.DATA_REPORT, splits.report)
    return len(added)


def confidence_step(
    model: keras.Model, splits: Splits, config: Config, batch: int
) -> tuple[dict[str, SplitOutputs], Any, float]:
    """(outputs per split, the Confidence, the temperature): one bounded, compiled pass per
    split (`batch` images at a time), shared by the confidence fit, evaluation and the
    SavedModel's parity check; the fitted temperature is folded into `model` (1.0: none)."""
    from imgclf.confidence.calibration import fold_temperature

    train_limit = MAX_FIT_IMAGES if config.train.ood else 0
    # Always: metrics.json `validation` is what imgclf-tune compares trials on (never test).
    outputs = run_outputs(model, splits, batch, train_limit, config.seed, need_val=True)
    confidence = fit_confidence(model, outputs, len(splits.class_names), config)
    temperature = (confidence.calibration or {}).get("temperature", 1.0)
    if temperature != 1.0:  # folded before saving: model.keras answers calibrated
        fold_temperature(model, temperature)
    return outputs, confidence, temperature


def require_test_images(run_dir: Path, splits: Splits, test: SplitOutputs) -> None:
    """DataError (after recording them in data_report.json) when every test file failed to
    decode while it was read (`data.cache: none` finds them only then)."""
    if len(test) == 0:
        report_late_failures(run_dir, splits)
        raise DataError(
            f"no test image could be read (each failed to decode; {runs.DATA_REPORT} lists them "
            "under skipped): nothing to evaluate the model on. Fix or replace the files, or "
            "set data.cache=disk so they are checked before training"
        )


def save_model(run_dir: Path, model: keras.Model, stats: OODStats | None) -> None:
    """model.keras (the temperature folded in) and ood.npz, each atomically."""
    with runs.atomic_path(run_dir / runs.MODEL) as tmp:
        model.save(tmp)
    if stats is not None:
        stats.save(run_dir / runs.OOD)
    faults.point("model")


def finish_run(
    run_dir: Path,
    model: keras.Model,
    splits: Splits,
    config: Config,
    extra: dict[str, Any] | None = None,
    verbose: int | str = 0,
    meter: Meter | None = None,
    estimate: Any = None,
) -> dict[str, Any]:
    """Write every artifact of a trained run (model.keras with the temperature folded in,
    ood.npz, metrics.json, worst/, plots/, samples/, saved_model/, exports.json,
    model_card.md, then manifest.json) and return the metrics. `extra` goes into metrics.json
    (the phases, epochs run); so do `calibration`, `ood` (imgclf.confidence) and `resources`
    (the run's `meter`, imgclf.training.progress.Meter: wall time, CPU time and peak memory of every
    stage). `estimate` (imgclf.training.estimate.Estimate) is told that the end has begun.

    Raises ExportError (imgclf.export.parity) when the SavedModel disagrees with the model,
    DataError when no test image can be read; the run then has no manifest."""

    meter = meter or Meter()
    if estimate is not None:
        estimate.finishing()
    batch = inference_batch_size(model, config.train.eval_batch_size)
    with meter.stage("confidence"):
        outputs, confidence, temperature = confidence_step(model, splits, config, batch)
    require_test_images(run_dir, splits, outputs["test"])
    extra = {**(extra or {}), "calibration": confidence.calibration, "ood": confidence.ood}
    extra["validation"] = evaluate.validation_figures(outputs["val"], temperature)
    save_model(run_dir, model, confidence.stats)
    with meter.stage("evaluation"):
        if config.predict.tta != "none":  # the same test images through the TTA views
            extra["test_tta"] = evaluate.tta_test_figures(
                model, splits, outputs["test"], config.predict.tta, batch, temperature
            )
        metrics = evaluate_run(run_dir, outputs["test"], temperature, splits, config, extra)
        late = report_late_failures(run_dir, splits)
        save_samples(run_dir, splits)
    if late and verbose:
        print(f"data: {late} more file(s) could not be decoded; see data_report.json", flush=True)
    parity, exports = None, None
    if config.train.export:
        with meter.stage("export"):
            parity, exports = export_run_model(
                run_dir, model, splits, outputs["test"], confidence.stats, batch,
                config.predict.tta,
            )  # fmt: skip
    # What the run cost, in metrics.json (rewritten: the export's stage is measured too).
    metrics["resources"] = meter.report()
    runs.write_json(run_dir / runs.METRICS, metrics)
    (run_dir / runs.PROGRESS).unlink(missing_ok=True)  # the estimate is over
    card = model_card(config, splits, metrics, model, exports, backend_name())
    runs.write_text(run_dir / runs.MODEL_CARD, card)
    finish_tracking(run_dir, config)  # train.mlflow: test figures, card, plots (never raises)
    faults.point("manifest")
    runs.write_manifest(run_dir)  # last: the SHA-256 of every artifact, checked when loading
    runs.set_state(run_dir, runs.COMPLETE)  # only now may anything load the run
    if verbose:
        print(summary_lines(metrics, parity), flush=True)
    return metrics


def summary_lines(metrics: dict[str, Any], parity: dict[str, Any] | None) -> str:
    """What a run prints at its end: the test figures, the confidence line, the cost line."""
    t = metrics["test"]
    # Top-k only when k is below the number of classes: top-4 of 4 classes is always 1.
    top_k = (
        f"top-{t['k']} {t['top_k_accuracy']:.4f}, " if t["k"] < len(metrics["per_class"]) else ""
    )
    lines = [
        f"test: accuracy {t['accuracy']:.4f}, {top_k}loss {t['loss']:.4f} ({t['n']} images)"
        + (f"; SavedModel parity max |Δp| {parity['max_abs_diff']:.1e}" if parity else "")
    ]
    tta = metrics.get("test_tta")
    if tta:
        lines.append(
            f"test with TTA ({tta['tta']}, {tta['views']} views): accuracy {tta['accuracy']:.4f}"
            f", loss {tta['loss']:.4f} (without: {tta['accuracy_without_tta']:.4f})"
        )
    clean = metrics.get("test_without_leaked")
    if clean and clean["accuracy"] is not None:
        lines.append(
            f"warning: {clean['leaked_images']} test image(s) have an identical copy in "
            f"training (the source's own split); without them: accuracy "
            f"{clean['accuracy']:.4f} ({clean['images']} images)"
        )
    summary = confidence_summary(metrics)
    if summary:
        lines.append(summary)
    if "resources" in metrics:
        lines.append(cost_line(metrics["resources"]))
    return "\n".join(lines)


def confidence_summary(metrics: dict[str, Any]) -> str:
    """One line on the calibration and the OOD detector of a run ("" when it has neither)."""
    parts = []
    cal = metrics.get("calibration") or {}
    if "temperature" in cal:
        parts.append(
            f"calibration: T = {cal['temperature']:.3f}, test ECE {cal['before']['ece']:.4f} → "
            f"{cal['after']['ece']:.4f}"
        )
    elif "after" in cal:  # task: multilabel (imgclf.confidence.multilabel)
        parts.append(
            f"calibration: a temperature per label, test ECE {cal['before']['ece']:.4f} → "
            f"{cal['after']['ece']:.4f} (every image-label pair)"
        )
    ood = metrics.get("ood") or {}
    if "threshold" in ood:
        parts.append(
            f"OOD threshold {ood['threshold']:.2f} (false alarms: "
            f"{ood['test_false_alarm_rate']:.1%} of test images)"
        )
    for name, section in (("calibration", cal), ("OOD", ood)):
        if "skipped" in section:
            parts.append(f"{name} skipped: {section['skipped']}")
    return "; ".join(parts)
