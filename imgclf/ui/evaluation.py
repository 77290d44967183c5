"""Evaluation page: held-out test metrics, the confusion matrix, per-class precision/recall/F1,
the worst predictions, and the data report (skipped files)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from imgclf import runs
from imgclf.ui import charts
from imgclf.ui.catalog import RunEntry


def render(entry: RunEntry, entries: list[RunEntry], root: Path) -> None:
    """The Evaluation page for the selected run."""
    st.title("Evaluation")
    run = runs.Run(entry.path)
    metrics = run.metrics
    if not metrics or "test" not in metrics:
        st.warning(f"`{entry.name}` has no test metrics ({runs.METRICS}).")
        return
    test = metrics["test"]
    cols = st.columns(4)
    cols[0].metric("Test accuracy", f"{test['accuracy']:.4f}")
    cols[1].metric(f"Top-{test['k']} accuracy", f"{test['top_k_accuracy']:.4f}")
    cols[2].metric("Cross-entropy", f"{test['loss']:.4f}")
    cols[3].metric("Test images", f"{test['n']:,}")
    st.caption("Held-out test split, evaluated once with the best epoch's weights.")

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

    st.subheader("Per class")
    per_class = pd.DataFrame(
        [{"class": name, **values} for name, values in metrics["per_class"].items()]
    )
    st.dataframe(per_class.round(4), hide_index=True)

    worst = metrics.get("worst_predictions") or []
    st.subheader("Worst predictions")
    if not worst:
        st.caption("None recorded.")
    else:
        st.caption("The test images with the lowest probability on their true class.")
        cols = st.columns(5)
        for n, item in enumerate(worst):
            image = entry.path / item["image"] if item.get("image") else None
            caption = (
                f"true {item['true']} → {item['predicted']} "
                f"(p {item['confidence']:.2f}; p(true) {item.get('true_probability', 0):.2f})"
            )
            if image is not None and image.is_file():
                cols[n % 5].image(str(image), caption=caption, width=120)
            else:
                cols[n % 5].write(f"{item.get('file') or '#' + str(item['index'])}: {caption}")

    report = run.data_report or {}
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
