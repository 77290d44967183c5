"""`model_card.md`: what a run's model is, what it was trained on and how, how well it did on
held-out data, how it was exported, and what it should not be used for; written by `train`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf import runs
from imgclf.data import near_duplicates, suspects
from imgclf.data.duplicates import describe
from imgclf.training.progress import duration

if TYPE_CHECKING:
    from imgclf.data import Splits
    from imgclf.schema import Config


EXPORT_HEADING = "## Export"
# exports.json key -> what the format is, in the order the table lists them.
_FORMATS = {
    "saved_model": "SavedModel `serving_default` (raw pixels)",
    "tf_serving": "TF Serving version (raw pixels)",
    "tflite": "TFLite float32",
    "tflite_int8": "TFLite int8 (dynamic range)",
    "onnx": "ONNX (onnxruntime)",
    "openvino": "ONNX in OpenVINO (f32)",
    "mediapipe": "MediaPipe classifier (float32)",
    "mediapipe_int8": "MediaPipe classifier (full int8)",
}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def export_section(
    exports: dict[str, Any] | None, backend: str = "tensorflow", skipped: bool = False
) -> str:
    """The model card's export table: one row per exported format (and one for the SavedModel's
    `serve_bytes` signature) with its size and parity figures against model.keras. `skipped`:
    training was told not to export (`train.export: false`)."""
    if not exports and skipped:
        return (
            "- No export yet: this run trained with `train.export: false`. Run\n"
            "  `imgclf-export <this run directory>` to write and check `saved_model/`.\n"
        )
    if not exports:
        return (
            f"- SavedModel export skipped: it needs the TensorFlow backend and this run trained "
            f"on `{backend}`.\n  Run `imgclf-export <this run directory>` with "
            f"KERAS_BACKEND=tensorflow to write\n  `saved_model/` from `model.keras`.\n"
        )
    rows, withheld = [], []
    for key, what in _FORMATS.items():
        record = exports.get(key)
        if record is None:
            continue
        if "withheld" in record:  # its check failed at the end of training: not written
            withheld.append(f"- {what} withheld: {record['withheld']}\n")
            continue
        parity = record["parity"]
        size = f"{record['size_bytes'] / 1e6:.2f} MB" if "size_bytes" in record else "–"
        accuracy = record.get("test_accuracy")
        name = Path(record["path"]).name if key == "tf_serving" else record["path"]
        rows.append(
            f"| {what} | `{name}` | {size} | {parity['max_abs_diff']:.1e} | "
            f"{_pct(parity['top1_agreement'])} | {_pct(accuracy)} | {parity['n_images']} |"
        )
        if "serve_bytes_max_abs_diff" in parity:
            rows.append(
                f"| SavedModel `serve_bytes` (encoded files, as PNG) | `{name}` | – | "
                f"{parity['serve_bytes_max_abs_diff']:.1e} | "
                f"{_pct(parity['serve_bytes_top1_agreement'])} | – | {parity['n_images']} |"
            )
    if withheld and not rows:
        return "".join(withheld) + "  `imgclf-export <this run directory>` tries again.\n"
    return "".join(withheld) + (
        "Each export was run in its own runtime on the test images and compared with "
        "`model.keras`\n(float exports must agree within 1e-4 and on ≥ 99.9% of top-1 labels; "
        "int8 reports its drop).\n\n"
        "| format | file | size | max \\|Δp\\| | top-1 agreement | test accuracy | images |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n" + _format_lines(exports)
    )


def _format_lines(exports: dict[str, Any]) -> str:
    """One line per artifact on the format corpus (docs/formats.md): how many kinds give the
    run's top-1, and which it refuses."""
    tables = {}
    for key, what in _FORMATS.items():
        formats = (exports.get(key) or {}).get("formats")
        if not formats:
            continue
        if key in ("saved_model", "tf_serving"):
            where = "SavedModel" if key == "saved_model" else "TF Serving version"
            tables[f"{where} `serving_default`"] = formats.get("serving_default", {})
            tables[f"{where} `serve_bytes`"] = formats.get("serve_bytes", {})
        else:
            tables[what] = formats
    lines = []
    for what, table in tables.items():
        agree = sum(1 for row in table.values() if row.get("top1_agreement") == 1.0)
        refused = sorted(kind for kind, row in table.items() if row.get("refused"))
        line = f"- {what}: {agree} of {len(table)} format kinds give the run's top-1"
        lines.append(line + (f"; refused: {', '.join(refused)}" if refused else ""))
    if not lines:
        return ""
    return (
        "\nOn the format corpus (every format × mode × EXIF orientation; docs/formats.md):\n\n"
        + ("\n".join(lines) + "\n")
    )


def refresh_export_section(run_dir: str | Path, exports: dict[str, Any]) -> None:
    """Re-write the export table of `run_dir/model_card.md` after an export (no-op without a
    card, e.g. a run from an older imgclf)."""
    path = Path(run_dir) / runs.MODEL_CARD
    if not path.is_file():
        return
    text = path.read_text("utf-8")
    pattern = re.compile(rf"^{EXPORT_HEADING}\n.*?(?=^## )", re.S | re.M)
    table = f"{EXPORT_HEADING}\n{export_section(exports)}\n"
    if pattern.search(text):
        runs.write_text(path, pattern.sub(lambda _: table, text, count=1))


def _transfer_lines(config: Config, metrics: dict[str, Any]) -> str:
    """The model card's lines on where the weights came from and what each phase did."""
    if not config.model.pretrained:
        return ""
    lines = [f"\n- Started from trained weights: `{config.model.weights}`"]
    for p in metrics.get("phases", []):
        what = {"head": "backbone frozen, new head trained", "fine_tune": "top of the backbone "
                f"unfrozen ({len(p.get('unfrozen_layers', []))} layers with weights; batch-norm "
                "stays frozen)"}.get(p["phase"], "")  # fmt: skip
        kept = "" if p.get("kept", True) else "; did not beat the head phase, so not kept"
        lines.append(
            f"\n- Phase `{p['phase']}`: {what}; {p['epochs_run']} epoch(s) at learning rate "
            f"{p['learning_rate']:g}, {p['trainable_params']:,} trainable parameters"
            + (", trained on cached backbone features" if p.get("cached_features") else "")
            + kept
        )
    return "".join(lines)


def _confidence_lines(metrics: dict[str, Any]) -> str:
    """The card's calibration and out-of-distribution lines (empty when the run has neither)."""
    lines = []
    cal = metrics.get("calibration")
    if cal and "temperature" in cal:
        b, a = cal["before"], cal["after"]
        lines.append(
            f"- Calibration: temperature scaling, T = {cal['temperature']:.3f} fitted on "
            f"{cal['n_val']} validation images; on the test set ECE {b['ece']:.4f} → "
            f"{a['ece']:.4f}, NLL {b['nll']:.4f} → {a['nll']:.4f}, Brier {b['brier']:.4f} → "
            f"{a['brier']:.4f} ({cal['binning']}). The model outputs the calibrated "
            "probabilities."
        )
    elif cal:
        lines.append(f"- Calibration: not fitted ({cal['skipped']})")
    else:
        lines.append("- Calibration: off (train.calibrate: false); raw softmax probabilities")
    ood = metrics.get("ood")
    if ood and "threshold" in ood:
        lines.append(
            f"- Out-of-distribution warning: {ood['method']}; threshold {ood['threshold']:.2f} "
            f"(the {ood['quantile']:.0%} quantile of validation scores), flagging "
            f"{ood['test_false_alarm_rate']:.1%} of in-distribution test images (false alarms)"
        )
    elif ood:
        lines.append(f"- Out-of-distribution warning: not fitted ({ood['skipped']})")
    return ("\n" + "\n".join(lines)) if lines else ""


def _ood_limit(metrics: dict[str, Any]) -> str:
    """The limits' sentence about the out-of-distribution warning."""
    if (metrics.get("ood") or {}).get("threshold") is None:
        return "This run has no out-of-distribution warning (train.ood)."
    return (
        "The out-of-distribution score flags many such images, not all: it is a warning, "
        "not a guarantee (docs/confidence.md says where it fails)."
    )


def _class_row(name: str, m: dict[str, Any]) -> str:
    if m["precision"] is None:  # no test image of the class (data.allow_untested_classes)
        return f"| {name} | not tested | not tested | not tested | 0 |"
    return f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"


def _cost_line(metrics: dict[str, Any]) -> str:
    """What training this run cost (metrics' `resources`), as a recipe line, or ""."""

    total = (metrics.get("resources") or {}).get("total")
    if not total:
        return ""
    peak = total.get("peak_anon_mb") or total.get("peak_rss_mb")
    cpus = metrics["resources"].get("cpus")
    return (
        f"\n- Cost of this run: {duration(total['wall_s'])} wall time, "
        f"{duration(total['cpu_s'])} CPU time ({cpus} cores), peak memory {peak / 1024:.2f} GB"
    )


def _test_notes(metrics: dict[str, Any]) -> str:
    return _leak_line(metrics) + _confidence_lines(metrics)


def _leak_line(metrics: dict[str, Any]) -> str:
    """The test accuracy without the test images that have a copy in training, if any."""
    clean = metrics.get("test_without_leaked")
    if not clean or clean["accuracy"] is None:
        return ""
    return (
        f"\n- Without the {clean['leaked_images']} test image(s) that have an identical copy in "
        f"training (the source's own split leaks): accuracy {clean['accuracy']:.4f} on "
        f"{clean['images']} images"
    )


def _subset_lines(config: Config, report: dict[str, Any]) -> str:
    """The card's lines on the classes kept, the training cap and the duplicates found ("" for
    the whole source, with no duplicates)."""
    subset = describe(report.get("duplicates"), "\n- ")
    subset += near_duplicates.describe(report.get("near_duplicates"), "\n- ")
    subset += suspects.describe(report, "\n- ")
    if config.data.classes:
        subset += f"\n- Classes kept from the source: {', '.join(config.data.classes)}"
    if config.data.max_per_class:
        subset += (
            f"\n- Training images capped at {config.data.max_per_class} per class "
            "(validation and test are not capped)"
        )
    return subset


def model_card(
    config: Config,
    splits: Splits,
    metrics: dict[str, Any],
    model: Any,
    exports: dict[str, Any] | None,
    backend: str = "tensorflow",
) -> str:
    """The run's model_card.md: model, data, recipe (with transfer phases), test results,
    export parity (`exports`: exports.json's content, None when the SavedModel export was
    skipped) and the limits of intended use, from what the run measured."""
    test = metrics["test"]
    rows = "\n".join(_class_row(name, m) for name, m in metrics["per_class"].items())
    counts = splits.report["totals"]
    transfer = _transfer_lines(config, metrics)
    augment = "on" if config.augment.enabled else "off"
    epochs = "" if config.model.pretrained else f"up to {config.train.epochs} epochs, "
    height, width = config.data.image_size
    source = config.data.source + (f" ({config.data.path})" if config.data.path else "")
    subset = _subset_lines(config, splits.report)
    export = export_section(exports, backend, skipped=not config.train.export)
    return f"""# Model card: {config.name}

## Model
- Family: `{config.model.name}`, {model.count_params():,} parameters
- Input: raw pixels 0..255, {height}×{width}, {config.data.channels} channel(s); preprocessing
  (`{config.data.normalize}`) is inside the model
- Output: softmax over {len(splits.class_names)} classes: {", ".join(splits.class_names)}

## Training data
- Source: {source}
- Split (stratified, seed {config.seed}): {counts["train"]} train, {counts["val"]} validation,
  {counts["test"]} test; {len(splits.report["skipped"])} unreadable file(s) skipped{subset}

## Recipe
- Keras backend `{backend}`
- Optimizer `{config.train.optimizer}`, learning rate {config.train.learning_rate}, batch size
  {config.train.batch_size}, {epochs}early stopping on
  `{config.train.early_stopping.monitor}` (patience {config.train.early_stopping.patience})
- Augmentation: {augment}; the full recipe is in `config.yaml`{transfer}{_cost_line(metrics)}

## Test results (held-out, evaluated once with the best weights)
- Accuracy {test["accuracy"]:.4f}, top-{test["k"]} accuracy {test["top_k_accuracy"]:.4f},
  cross-entropy {test["loss"]:.4f} on {test["n"]} images{_test_notes(metrics)}

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

{EXPORT_HEADING}
{export}
## Intended use and limits
- Classifies images that resemble the training data into exactly these classes. Any other
  input still receives one of these labels: an image of something else gives a meaningless answer.
  {_ood_limit(metrics)}
- Images are stretched to {height}×{width} without keeping the aspect ratio.
- Figures come from {counts["test"]} test images of the same source; accuracy on other data
  (other cameras, scans, handwriting, lighting) may be lower.
"""
