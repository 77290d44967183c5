"""Compare page: several runs' validation curves on one chart and a table of the config keys
that differ with their results (the "sigmoid vs ReLU" or "frozen vs fine-tuned" view)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from imgclf.compare import compare, load_run
from imgclf.infra.errors import UserError
from imgclf.ui import charts
from imgclf.ui.catalog import RunEntry


def render(entry: RunEntry, entries: list[RunEntry], root: Path) -> None:
    """The Compare page: the selected run and the next newest are picked to start with."""
    if len(entries) < 2:
        st.info("Compare needs at least two runs; train another one (Train page).")
        return
    labels = {str(e.path): e.label for e in entries}
    default = [str(entry.path), *[p for p in labels if p != str(entry.path)][:1]]
    chosen = st.multiselect(
        "Runs", list(labels), default=default, format_func=labels.__getitem__, key="compare_runs"
    )
    if len(chosen) < 2:
        st.info("Pick at least two runs.")
        return
    try:
        result = compare(chosen)
        summaries = [load_run(p) for p in chosen]
    except UserError as exc:
        st.error(str(exc))
        return
    curves = {s.name: s.history for s in summaries}
    left, right = st.columns(2)
    left.altair_chart(charts.overlay_chart(curves, "val_accuracy"), width="stretch")
    right.altair_chart(charts.overlay_chart(curves, "val_loss"), width="stretch")
    st.subheader("What differs, and the results")
    if result["differences"]:
        st.caption("Config keys whose values differ: " + ", ".join(result["differences"]))
    else:
        st.caption("The runs' configs are identical (apart from the name).")
    st.dataframe(pd.DataFrame(result["rows"]), hide_index=True)
