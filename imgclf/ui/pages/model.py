"""Model page: the model card, labels, the layer summary with parameter counts, and the
exports with their parity figures."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import streamlit as st

from imgclf import runs
from imgclf.ui.catalog import RunEntry
from imgclf.ui.state import predictor_for


def _layers(model) -> pd.DataFrame:
    rows = []
    for layer in model.layers:
        try:
            shape = str(tuple(layer.output.shape))
        except (AttributeError, ValueError):
            shape = "?"
        rows.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "output shape": shape,
                "parameters": layer.count_params(),
                "trainable": sum(math.prod(w.shape) for w in layer.trainable_weights),
            }
        )
    return pd.DataFrame(rows)


def render(entry: RunEntry, entries: list[RunEntry], root: Path) -> None:
    """The Model page for the selected run."""
    predictor = predictor_for(entry.path)
    card, layers, exports_tab = st.tabs(["Model card", "Layers", "Exports"])
    card_path = entry.path / runs.MODEL_CARD
    with card:
        st.write("Labels (output index order): " + ", ".join(predictor.class_names))
        if card_path.is_file():
            st.markdown(card_path.read_text("utf-8"))
        else:
            st.caption("This run has no model card.")
    with layers:
        model = predictor.model
        st.write(f"{model.count_params():,} parameters; input {tuple(model.input_shape)}")
        st.dataframe(_layers(model), hide_index=True)
    with exports_tab:
        exports = runs.Run(entry.path).exports
        if not exports:
            st.caption(f"No exports yet: `imgclf-export {entry.path} --format all`.")
            return
        rows = []
        for key, record in exports.items():
            if key == "benchmark":  # a table of its own, below
                continue
            parity = record.get("parity", {})
            rows.append(
                {
                    "format": key,
                    "path": record.get("path"),
                    "MB": round(record["size_bytes"] / 1e6, 2) if "size_bytes" in record else None,
                    "max |Δp|": parity.get("max_abs_diff"),
                    "top-1 agreement": parity.get("top1_agreement"),
                    "test accuracy": record.get("test_accuracy"),
                    "images checked": parity.get("n_images"),
                    "quantized": str(record.get("quantized") or "no"),
                }
            )
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        st.caption(
            "Each export was run in its own runtime on the test images and compared with "
            "model.keras. Add formats with `imgclf-export RUN --format all`."
        )
        _benchmark(exports.get("benchmark"), entry.path)


def _benchmark(found: dict | None, run: Path) -> None:
    """The run's `imgclf-export --benchmark` table (exports.json `benchmark`), if measured."""
    st.subheader("Speed and size across formats")
    if not found:
        st.caption(f"Not measured: `imgclf-export {run} --benchmark`.")
        return
    with st.container(key="model-benchmark"):
        st.dataframe(pd.DataFrame(found["rows"]), hide_index=True)
    st.caption(
        f"`imgclf-export --benchmark`, {found.get('measured', '?')}, {found.get('cpus', '?')} "
        "CPUs: every artifact in its own runtime in one process; latency at batch 1 and "
        "throughput at batch 32 are medians of 5 runs."
    )
