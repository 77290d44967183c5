"""Evaluation page of a `task: multilabel` run (metrics.json `multilabel`, written by
`imgclf.training.multilabel`): mAP, subset accuracy and Hamming loss at the per-label thresholds
and at 0.5, the thresholds with each label's precision, recall, F1, AP and errors, per-label
precision-recall curves, calibration per label, the OOD detector and the worst test images of
each label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from imgclf.ui import charts
from imgclf.ui.text import plain


def _headline(m: dict[str, Any]) -> None:
    at, half = m["at_thresholds"], m["at_0.5"]
    figures = [
        ("mAP (macro)", f"{m['map_macro']:.4f}"), ("mAP (micro)", f"{m['map_micro']:.4f}"),
        ("Subset accuracy", f"{at['subset_accuracy']:.4f}"),
        ("Hamming loss", f"{at['hamming_loss']:.4f}"), ("Test images", f"{m['n']:,}"),
    ]  # fmt: skip
    for col, (label, value) in zip(st.columns(len(figures)), figures, strict=True):
        col.metric(label, value)
    st.caption(
        "Held-out test split. Subset accuracy: every label of an image right; Hamming loss: "
        "the share of image-label decisions wrong; both at the per-label thresholds (at a "
        f"single 0.5: {half['subset_accuracy']:.4f} and {half['hamming_loss']:.4f}). mAP: the "
        "mean of each label's average precision (macro), or over every image-label pair "
        "(micro); it does not depend on any threshold."
    )


def _per_label(m: dict[str, Any], cal: dict[str, Any]) -> None:
    st.subheader("Thresholds and per-label figures")
    ece = {k: (cal.get(k) or {}).get("ece_per_label") or {} for k in ("before", "after")}
    rows = []
    for name, v in m["per_label"].items():
        row = {"label": name, "threshold": v["threshold"], "precision": v["precision"],
               "recall": v["recall"], "F1": v["f1"], "AP": v["ap"], "support": v["support"],
               "false positives": v["false_positives"],
               "false negatives": v["false_negatives"]}  # fmt: skip
        if ece["after"]:
            row["ECE before"], row["ECE after"] = ece["before"].get(name), ece["after"].get(name)
        rows.append(row)
    st.dataframe(pd.DataFrame(rows).round(4), hide_index=True)
    st.caption(
        "An image gets every label whose probability reaches that label's threshold. Each "
        "threshold is the one of highest F1 on the validation split (the test split never "
        "chooses it); imgclf-predict, the Classify page and every export decide with them."
    )


def _curves(m: dict[str, Any]) -> None:
    curves = m.get("curves") or {}
    if not curves:
        return
    st.subheader("Precision-recall per label")
    names = list(curves)
    chosen = st.multiselect("Labels", names, default=names[:10], key="pr_labels")
    if chosen:
        st.altair_chart(charts.precision_recall_chart(curves, chosen), key="pr_curves")
    st.caption("Test split. Click a label in the legend to bring its curve forward.")


def _calibration(cal: dict[str, Any] | None) -> None:
    st.subheader("Calibration")
    if not cal:
        st.caption("Not calibrated (train.calibrate: false).")
        return
    if "skipped" in cal:
        st.caption(f"Not calibrated: {cal['skipped']}.")
        return
    left, right = st.columns([2, 3])
    table = pd.DataFrame([
        {"probabilities": name, "ECE": cal[key]["ece"], "NLL": cal[key]["nll"]}
        for key, name in (("before", "as trained"), ("after", "calibrated"))
    ])  # fmt: skip
    left.dataframe(table.round(4), hide_index=True)
    temperatures = pd.DataFrame(
        {"label": list(cal["temperatures"]), "T": list(cal["temperatures"].values())}
    )
    left.dataframe(temperatures.round(3), hide_index=True)
    kept = cal.get("kept_as_trained") or []
    left.caption(
        f"One temperature per label, fitted on {cal['n_val']} validation images; ECE and NLL "
        f"over every image-label pair of {cal['n_test']} test images ({cal['binning']})."
        + (f" Kept as trained (no finite T fits): {plain(', '.join(kept))}." if kept else "")
    )
    right.altair_chart(charts.reliability_chart(cal), key="reliability")


def _worst(run_path: Path, worst: dict[str, list[dict[str, Any]]]) -> None:
    st.subheader("Worst test images per label")
    if not worst:
        st.caption("None recorded.")
        return
    label = st.selectbox("Label", list(worst), key="worst_label")
    cols = st.columns(5)
    inside = run_path.resolve()
    for n, item in enumerate(worst[label]):
        truth = "has it" if item["true"] else "does not have it"
        caption = f"{truth}; p({plain(label)}) = {item['probability']:.2f}"
        image = (run_path / str(item.get("image") or "")).resolve()
        if item.get("image") and image.is_relative_to(inside) and image.is_file():
            cols[n % 5].image(str(image), caption=caption, width=120)
        else:
            name = plain(item.get("file") or "#" + str(item["index"]))
            cols[n % 5].write(f"{name}: {caption}")


def render(run_path: Path, metrics: dict[str, Any], ood_view: Any) -> None:
    """The whole page for a multi-label run; `ood_view` draws the OOD section (shared with
    single-label runs)."""
    m = metrics["multilabel"]
    _headline(m)
    _per_label(m, metrics.get("calibration") or {})
    _curves(m)
    _calibration(metrics.get("calibration"))
    ood_view(metrics.get("ood"))
    _worst(run_path, m.get("worst_per_label") or {})
