"""Training curves page: loss and accuracy (training vs validation, fine-tuning start marked),
the learning rate, and, when the run recorded them, per-layer gradient norms and dead units."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from imgclf import runs
from imgclf.ui import charts
from imgclf.ui.catalog import RunEntry


def show_history(history: list[runs.HistoryRow], key: str) -> None:
    """Loss and accuracy side by side (used live by the Train page too)."""
    left, right = st.columns(2)
    left.altair_chart(charts.metric_chart(history, "loss"), width="stretch", key=f"{key}-loss")
    if any(r.accuracy is not None for r in history):
        right.altair_chart(
            charts.metric_chart(history, "accuracy"), width="stretch", key=f"{key}-acc"
        )


def render(entry: RunEntry, entries: list[RunEntry], root: Path) -> None:
    """The Training curves page for the selected run."""
    run = runs.Run(entry.path)
    history = run.history
    if not history:
        st.warning(f"`{entry.name}` has no {runs.HISTORY}: nothing to plot.")
        return
    phases = sorted({r.phase for r in history})
    st.caption(
        f"{len(history)} epochs ({', '.join(phases)}); the figures are each epoch's averages "
        "on the training batches (augmented, with dropout on) and on the validation split."
    )
    show_history(history, "curves")
    if any(r.learning_rate is not None for r in history):
        st.altair_chart(charts.learning_rate_chart(history), width="stretch")
    diag = run.diagnostics
    if not diag or not diag.get("epochs"):
        st.caption("This run recorded no training diagnostics (`train.diagnostics`).")
        return
    st.subheader("Diagnostics")
    st.caption(
        f"Measured each epoch on a fixed batch of {diag.get('n_images', '?')} training images."
    )
    left, right = st.columns(2)
    grads = charts.diagnostics_frame(diag, "grad_norm")
    if not grads.empty:
        left.altair_chart(
            charts.layer_lines(grads, "gradient norm per layer", log=bool((grads.value > 0).all())),
            width="stretch",
        )
    dead = charts.diagnostics_frame(diag, "activation", "dead_fraction")
    if not dead.empty:
        right.altair_chart(charts.layer_lines(dead, "dead-unit fraction"), width="stretch")
