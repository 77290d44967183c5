"""Training curves page: loss and accuracy (training vs validation, fine-tuning start marked),
the learning rate (and its range test, with `learning_rate: auto`), how to open the run's
TensorBoard and MLflow logs when it wrote them, and, when the run recorded them, per-layer
gradient norms and dead units."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from imgclf import runs
from imgclf.training.tracking import open_commands
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


def show_tracking(run_dir: Path) -> None:
    """The commands that open the run's TensorBoard and MLflow logs (train.tensorboard,
    train.mlflow), when it wrote them."""
    commands = open_commands(run_dir)
    if not commands:
        return
    st.subheader("TensorBoard and MLflow")
    for what, command in commands:
        st.caption(what)
        st.code(command, language="bash")


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
    for sweep in run.lr_finder:  # train.learning_rate: auto, one range test per phase
        st.altair_chart(charts.lr_finder_chart(sweep), width="stretch")
    show_tracking(entry.path)
    diag = run.diagnostics
    if not diag or not diag.get("epochs"):
        st.caption("This run recorded no training diagnostics (`train.diagnostics`).")
        return
    st.subheader("Diagnostics")
    st.caption(
        f"Measured each epoch on a fixed batch of {diag.get('n_images', '?')} training images."
    )
    grads = charts.diagnostics_frame(diag, "grad_norm")
    dead = charts.diagnostics_frame(diag, "activation", "dead_fraction")
    how = _grouping(max(grads.layer.nunique(), dead.layer.nunique()))
    left, right = st.columns(2)
    if not grads.empty:
        grads = charts.group_layers(grads, how, diag.get("layers", []), "norm")
        left.altair_chart(
            charts.layer_lines(
                grads, f"gradient norm per {_unit(how)}", log=bool((grads.value > 0).all())
            ),
            width="stretch",
        )
    if not dead.empty:
        dead = charts.group_layers(dead, how, diag.get("activation_layers", []), "fraction")
        right.altair_chart(
            charts.layer_lines(dead, f"dead-unit fraction per {_unit(how)}"), width="stretch"
        )


GROUPINGS = {
    "blocks": "one line per block",
    "ends": f"the first and last {charts.MAX_LINES // 2} layers",
    "all": "every layer",
}


def _grouping(layers: int) -> str:
    """How to draw `layers` lines: every layer when they are few; else the user's choice of
    grouping by block (the default) or the first and last layers."""
    if layers <= charts.MAX_LINES:
        return "all"
    st.caption(
        f"{layers} layers are too many for one chart: by default each block of the network "
        "is one line (gradient norm of the whole block; mean dead fraction)."
    )
    return st.radio(
        "Show",
        list(GROUPINGS),
        format_func=GROUPINGS.get,
        horizontal=True,
        key="diagnostics_grouping",
    )


def _unit(how: str) -> str:
    return "block" if how == "blocks" else "layer"
