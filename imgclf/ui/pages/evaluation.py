"""Evaluation page: held-out test metrics, the confusion matrix, per-class precision/recall/F1,
the worst predictions, and the data report (skipped files)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from imgclf import runs
from imgclf.ui import charts
from imgclf.ui.catalog import RunEntry


def _usable(section: dict | None, key: str, absent: str, switch: str, needed: tuple) -> bool:
    """True when metrics.json's `key` section can be shown; else one caption or warning says
    why (switched off, skipped with its reason, or incomplete)."""
    if not section:
        st.caption(f"{absent} ({switch}: false, or trained before imgclf had it).")
        return False
    if "skipped" in section:
        st.caption(f"{absent}: {section['skipped']}.")
        return False
    missing = [k for k in needed if k not in section]
    if missing:
        st.warning(f"{runs.METRICS}: the {key} section lacks {', '.join(missing)}; re-train.")
        return False
    return True


def _calibration(cal: dict | None) -> None:
    """ECE/NLL/Brier before and after temperature scaling, and the reliability diagram."""
    st.subheader("Calibration")
    needed = ("temperature", "before", "after", "n_val", "n_test", "binning")
    if not _usable(cal, "calibration", "Not calibrated", "train.calibrate", needed):
        return
    table = pd.DataFrame(
        [
            {"probabilities": name, **{m: cal[key][m] for m in ("ece", "nll", "brier")}}
            for key, name in (("before", "softmax (T = 1)"), ("after", "calibrated"))
        ]
    ).rename(columns={"ece": "ECE", "nll": "NLL", "brier": "Brier"})
    left, right = st.columns([2, 3])
    left.metric("Temperature T", f"{cal['temperature']:.3f}")
    left.dataframe(table.round(4), hide_index=True)
    left.caption(
        f"Fitted on {cal['n_val']} validation images, measured on {cal['n_test']} test images. "
        f"ECE: {cal['binning']}. The run and its exports answer with the calibrated "
        "probabilities; the accuracy is unchanged."
    )
    right.altair_chart(charts.reliability_chart(cal), key="reliability")


def _ood(ood: dict | None) -> None:
    """The out-of-distribution detector: threshold and how often in-distribution images trip it."""
    st.subheader("Out-of-distribution warning")
    keys = ("threshold", "quantile", "val_false_alarm_rate", "test_false_alarm_rate", "method",
            "feature_dim", "fitted_on")  # fmt: skip
    if not _usable(ood, "ood", "No detector", "train.ood", keys):
        return
    cols = st.columns(3)
    cols[0].metric("Threshold", f"{ood['threshold']:.2f}")
    cols[1].metric("False alarms, validation", f"{ood['val_false_alarm_rate']:.1%}")
    cols[2].metric("False alarms, test", f"{ood['test_false_alarm_rate']:.1%}")
    st.caption(
        f"{ood['method']}, on {ood['feature_dim']}-dimensional features; fitted on "
        f"{ood['fitted_on']}. An image scoring above the threshold (the {ood['quantile']:.0%} "
        "quantile of the validation images' scores) is flagged \"doesn't look like the training "
        'data" wherever it is classified. The false-alarm rate is the share of in-distribution '
        "images flagged."
    )


def _test_metrics(test: dict, n_classes: int) -> None:
    """The headline test figures (accuracy, top-k, cross-entropy, images) in a row; top-k only
    when k is below the number of classes (a 4-class run's top-4 accuracy is always 1)."""
    figures = [("Test accuracy", f"{test['accuracy']:.4f}")]
    if test["k"] < n_classes:
        figures.append((f"Top-{test['k']} accuracy", f"{test['top_k_accuracy']:.4f}"))
    figures += [("Cross-entropy", f"{test['loss']:.4f}"), ("Test images", f"{test['n']:,}")]
    for col, (label, value) in zip(st.columns(len(figures)), figures, strict=True):
        col.metric(label, value)
    st.caption("Held-out test split, evaluated once with the best epoch's weights.")


def _confusion(metrics: dict) -> None:
    """The confusion matrix, as counts or row-normalised (the `confusion_mode` radio)."""
    st.subheader("Confusion matrix")
    mode = st.radio("Show", ["counts", "row-normalised"], horizontal=True, key="confusion_mode")
    st.altair_chart(
        charts.confusion_chart(
            metrics["confusion_matrix"], metrics["labels"], mode == "row-normalised"
        )
    )
    st.caption(
        "Rows: true class; columns: predicted class. Row-normalised: recall on the diagonal."
    )


def _worst_predictions(run_path: Path, worst: list[dict]) -> None:
    """The worst test predictions, five to a row: each image (when the run kept it) or its name."""
    st.subheader("Worst predictions")
    if not worst:
        st.caption("None recorded.")
        return
    st.caption("The test images with the lowest probability on their true class.")
    cols = st.columns(5)
    inside = run_path.resolve()
    for n, item in enumerate(worst):
        image = (run_path / str(item["image"])).resolve() if item.get("image") else None
        if image is not None and not image.is_relative_to(inside):
            image = None  # a received metrics.json naming a file outside its run: not shown
        caption = (
            f"true {item['true']} → {item['predicted']} "
            f"(p {item['confidence']:.2f}; p(true) {item.get('true_probability', 0):.2f})"
        )
        if image is not None and image.is_file():
            cols[n % 5].image(str(image), caption=caption, width=120)
        else:
            cols[n % 5].write(f"{item.get('file') or '#' + str(item['index'])}: {caption}")


def _data_report(report: dict) -> None:
    """The data report: split sizes and the files skipped as unreadable."""
    st.subheader("Data report")
    totals = report.get("totals")
    if totals:
        st.write(
            f"{totals.get('train', '?')} train, {totals.get('val', '?')} validation, "
            f"{totals.get('test', '?')} test images."
        )
    skipped = report.get("skipped") or []
    if skipped:
        st.warning(f"{len(skipped)} unreadable file(s) were skipped:")
        st.dataframe(pd.DataFrame(skipped), hide_index=True)
    else:
        st.caption("No file was skipped.")


def render(entry: RunEntry, entries: list[RunEntry], root: Path) -> None:
    """The Evaluation page for the selected run."""
    run = runs.Run(entry.path)
    metrics = run.metrics
    if not metrics or "test" not in metrics:
        st.warning(f"`{entry.name}` has no test metrics ({runs.METRICS}).")
        return
    if metrics.get("task") == "multilabel" and "multilabel" in metrics:
        from imgclf.ui.pages import evaluation_multilabel

        evaluation_multilabel.render(entry.path, metrics, _ood)
        _data_report(run.data_report or {})
        return
    _test_metrics(metrics["test"], len(metrics.get("per_class") or {}) or metrics["test"]["k"] + 1)
    tta = metrics.get("test_tta")
    if tta:  # predict.tta: the same test images through the views (imgclf.models.tta)
        st.caption(
            f"With test-time augmentation ({tta['tta']}, {tta['views']} views per image): "
            f"accuracy {tta['accuracy']:.4f} against {tta['accuracy_without_tta']:.4f} without "
            f"({tta['gain']:+.4f}); the Classify page and the SavedModel use it."
        )
    _calibration(metrics.get("calibration"))
    _ood(metrics.get("ood"))
    _confusion(metrics)

    st.subheader("Per class")
    per_class = pd.DataFrame(
        [{"class": name, **values} for name, values in metrics["per_class"].items()]
    )
    st.dataframe(per_class.round(4), hide_index=True)

    _worst_predictions(entry.path, metrics.get("worst_predictions") or [])
    _data_report(run.data_report or {})
