"""Interactive charts (Altair / Vega-Lite, bundled with Streamlit) built from what a run wrote:
history.csv rows, diagnostics.json, the confusion matrix, top-k predictions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from imgclf.runs import HistoryRow, phase_starts
from imgclf.training.transfer import block_of

EPOCH = alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d"))


# Categorical palettes for series that are different things (runs, splits, layers): distinct
# hues, not shades of one colour. category10 for up to 10 series, tableau20 for layer lists.
CATEGORICAL = alt.Scale(scheme="category10")
MANY_CATEGORIES = alt.Scale(scheme="tableau20")


def history_frame(history: Sequence[HistoryRow]) -> pd.DataFrame:
    """history.csv rows as a DataFrame with an integer `epoch` column."""
    frame = pd.DataFrame(list(history))
    if not frame.empty and "epoch" in frame:
        frame["epoch"] = frame["epoch"].astype(int)
    return frame


def _phase_rules(history: Sequence[HistoryRow]) -> alt.Chart | None:
    """Dashed vertical lines where a training phase after the first starts (fine-tuning)."""
    starts = phase_starts([r.phase for r in history])
    if not starts:
        return None
    frame = pd.DataFrame([{"epoch": i + 0.5, "phase": f"{name} starts"} for i, name in starts])
    rule = alt.Chart(frame).mark_rule(strokeDash=[6, 4], color="gray")
    return rule.encode(x="epoch:Q", tooltip=["phase"]) + rule.mark_text(
        align="left", dx=4, dy=-6, color="gray"
    ).encode(x="epoch:Q", y=alt.value(0), text="phase")


def metric_chart(history: Sequence[HistoryRow], metric: str) -> alt.Chart:
    """`metric` (loss or accuracy) per epoch, training vs validation, phase starts marked."""
    frame = history_frame(history)
    columns = {metric: "training", f"val_{metric}": "validation"}
    present = [c for c in columns if c in frame]
    long = frame.melt(id_vars=["epoch"], value_vars=present, var_name="split", value_name="value")
    long["split"] = long["split"].map(columns)
    chart = (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=EPOCH,
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color=alt.Color("split:N", title=None, scale=CATEGORICAL),
            tooltip=["epoch", "split", alt.Tooltip("value:Q", title=metric, format=".4f")],
        )
    )
    rules = _phase_rules(history)
    return (chart + rules if rules is not None else chart).properties(title=metric, height=260)


def learning_rate_scale(rates: Sequence[float]) -> alt.Scale:
    """Linear, or when the positive rates span more than 10× (a fine-tune rate of 1e-5 after
    1e-3 drew as 0) a symmetric log scale whose linear part ends at the smallest positive rate,
    so a schedule that reaches 0 (cosine) is drawn too, which a plain log scale cannot."""
    positive = [r for r in rates if r > 0]
    if not positive or max(positive) / min(positive) <= 10:
        return alt.Scale(type="linear")
    return alt.Scale(type="symlog", constant=min(positive))


def learning_rate_chart(history: Sequence[HistoryRow]) -> alt.Chart:
    """The learning rate over epochs (`learning_rate_scale`), phase starts marked."""
    frame = history_frame(history)
    scale = learning_rate_scale(frame["learning_rate"].astype(float).tolist())
    chart = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=EPOCH,
            y=alt.Y("learning_rate:Q", scale=scale, axis=alt.Axis(format=".0e")),
            tooltip=["epoch", alt.Tooltip("learning_rate:Q", format=".2e")],
        )
    )
    rules = _phase_rules(history)
    return (chart + rules if rules is not None else chart).properties(
        title="learning rate", height=200
    )


def lr_finder_chart(sweep: dict[str, Any]) -> alt.Chart:
    """One phase of the learning-rate range test (lr_finder.json): the smoothed training loss
    against the rate on a log axis, the raw loss faint behind it, the suggested rate a rule."""
    frame = pd.DataFrame(
        {"rate": sweep["rates"], "loss": sweep["losses"], "smoothed": sweep["smoothed"]}
    )
    low = float(frame["loss"].min())
    high = max(float(frame["smoothed"].iloc[0]), 2 * float(frame["smoothed"].min()))
    x = alt.X("rate:Q", scale=alt.Scale(type="log"), axis=alt.Axis(format=".0e"))
    y = alt.Scale(domain=[max(0.0, low * 0.95), high * 1.1], clamp=True)
    base = alt.Chart(frame).encode(x=x)
    raw = base.mark_line(color="lightgrey").encode(y=alt.Y("loss:Q", scale=y))
    smooth = base.mark_line().encode(
        y=alt.Y("smoothed:Q", scale=y, title="training loss"),
        tooltip=[alt.Tooltip("rate:Q", format=".2e"), alt.Tooltip("smoothed:Q", format=".3f")],
    )
    mark = pd.DataFrame({"rate": [sweep["suggestion"]]})
    rule = alt.Chart(mark).mark_rule(color="red", strokeDash=[4, 4]).encode(x="rate:Q")
    title = f"{sweep['phase']} phase: suggested {sweep['suggestion']:.2g} ({sweep['rule']})"
    return (raw + smooth + rule).properties(title=title, height=240)


def diagnostics_frame(diag: dict[str, Any], key: str, field: str | None = None) -> pd.DataFrame:
    """Long table (epoch, layer, value) of diagnostics.json's per-epoch `key` (`grad_norm`, or
    `activation` with `field` e.g. `dead_fraction`)."""
    rows = []
    for entry in diag.get("epochs", []):
        for layer, value in (entry.get(key) or {}).items():
            if field is not None:
                value = (value or {}).get(field)
            if value is not None:
                rows.append({"epoch": int(entry["epoch"]), "layer": layer, "value": float(value)})
    return pd.DataFrame(rows, columns=["epoch", "layer", "value"])


MAX_LINES = 12  # layers one diagnostics chart shows as lines before it groups them


def group_layers(frame: pd.DataFrame, how: str, order: Sequence[str], kind: str) -> pd.DataFrame:
    """A diagnostics frame (epoch, layer, value) made readable for a deep network: `how` is
    "all"; "ends" (the first and last MAX_LINES // 2 layers, in network order `order`); or
    "blocks" (one line per block of the backbone's naming, `transfer.block_of`: for gradient
    norms (`kind` "norm") the block's root-sum-square, i.e. the norm of all its layers'
    gradients together; for fractions their mean)."""
    if how == "all" or frame.empty:
        return frame
    if how == "ends":
        present = [name for name in order if name in set(frame.layer)]
        keep = set(present[: MAX_LINES // 2] + present[-(MAX_LINES // 2) :])
        return frame[frame.layer.isin(keep)]

    grouped = frame.assign(layer=frame.layer.map(block_of))
    if kind == "norm":
        agg = grouped.groupby(["epoch", "layer"], sort=False)["value"].apply(
            lambda v: float(np.sqrt((v**2).sum()))
        )
    else:
        agg = grouped.groupby(["epoch", "layer"], sort=False)["value"].mean()
    return agg.reset_index()


def layer_lines(frame: pd.DataFrame, title: str, log: bool = False) -> alt.Chart:
    """One line per layer over epochs (diagnostics)."""
    y = alt.Y("value:Q", title=title, scale=alt.Scale(type="log" if log else "linear"))
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=EPOCH,
            y=y,
            color=alt.Color(
                "layer:N",
                sort=None,
                scale=MANY_CATEGORIES,
                legend=alt.Legend(labelLimit=0, symbolLimit=0, columns=1),
            ),
            tooltip=["epoch", "layer", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(title=title, height=260)
    )


def confusion_chart(matrix: Sequence[Sequence[int]], labels: Sequence[str], normalise: bool):
    """The confusion matrix as a heatmap (rows true, columns predicted); counts, or each row
    divided by its total (recall on the diagonal)."""
    counts = np.asarray(matrix, dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise else counts
    rows = [
        {"true": t, "predicted": p, "value": float(values[i, j]), "count": int(counts[i, j])}
        for i, t in enumerate(labels)
        for j, p in enumerate(labels)
    ]
    frame = pd.DataFrame(rows)
    order = list(labels)
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", sort=order), y=alt.Y("true:N", sort=order)
    )
    fmt = ".2f" if normalise else "d"
    heat = base.mark_rect().encode(
        color=alt.Color("value:Q", scale=alt.Scale(scheme="blues"), title=None),
        tooltip=["true", "predicted", "count", alt.Tooltip("value:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("value:Q", format=fmt),
        color=alt.condition(
            alt.datum.value > float(values.max()) / 2, alt.value("white"), alt.value("black")
        ),
    )
    side = max(240, 32 * len(order))
    return (heat + text).properties(width=side, height=side)


def topk_chart(labels: Sequence[str], probabilities: Sequence[float]) -> alt.Chart:
    """Horizontal bars of the top-k classes, most probable on top."""
    frame = pd.DataFrame({"label": list(labels), "probability": list(probabilities)})
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
            # A fixed step per bar and no overlap pruning: with a total height, Vega squeezed
            # three bars into ~20 px and dropped the labels that overlapped (2 of 3 shown).
            y=alt.Y(
                "label:N",
                sort=None,
                title=None,
                axis=alt.Axis(labelOverlap=False, labelLimit=240),
            ),
            tooltip=["label", alt.Tooltip("probability:Q", format=".4f")],
        )
        .properties(height=alt.Step(24))
    )


def overlay_chart(curves: dict[str, Sequence[HistoryRow]], metric: str) -> alt.Chart:
    """`metric` (e.g. val_accuracy) per epoch for several runs on one chart."""
    rows = [
        {"run": run, "epoch": r.epoch, metric: r.get(metric)}
        for run, history in curves.items()
        for r in history
        if r.get(metric) is not None
    ]
    frame = pd.DataFrame(rows, columns=["run", "epoch", metric])
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=EPOCH,
            y=alt.Y(f"{metric}:Q", scale=alt.Scale(zero=False)),
            # Distinct hues (the app theme's default drew two runs in two blues), and run
            # names in full: labelLimit 0 lifts Vega's truncation of long legend labels.
            color=alt.Color(
                "run:N",
                scale=CATEGORICAL,
                legend=alt.Legend(orient="bottom", columns=1, labelLimit=0),
            ),
            tooltip=["run", "epoch", alt.Tooltip(f"{metric}:Q", format=".4f")],
        )
        .properties(title=metric, height=300)
    )


def reliability_chart(calibration: dict[str, Any]) -> alt.Chart:
    """The reliability diagram (metrics.json `calibration`): accuracy against mean confidence
    per bin, before and after temperature scaling, points sized by their number of test
    images, over the diagonal of perfect calibration; the tooltip gives each bin's figures."""
    if "temperature" in calibration:
        t = calibration["temperature"]
        names = {"before": "softmax (T = 1)", "after": f"calibrated (T = {t:.2f})"}
    else:  # task: multilabel: every (image, label) pair, one temperature per label
        names = {"before": "sigmoids as trained", "after": "calibrated (a T per label)"}
    rows = [
        {"curve": names[key], **b, "bin": f"{b['lower']:.2f}-{b['upper']:.2f}"}
        for key in ("before", "after")
        for b in calibration[key]["reliability"]
    ]
    frame = pd.DataFrame(rows)
    unit = alt.Scale(domain=[0, 1])
    diagonal = (
        alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}))
        .mark_line(strokeDash=[4, 4], color="grey")
        .encode(x=alt.X("x:Q", scale=unit), y=alt.Y("y:Q", scale=unit))
    )
    base = alt.Chart(frame).encode(
        x=alt.X("confidence:Q", scale=unit, title="confidence (top-1 probability)"),
        y=alt.Y("accuracy:Q", scale=unit, title="accuracy"),
        color=alt.Color(
            "curve:N", scale=alt.Scale(scheme="category10"), legend=alt.Legend(orient="bottom")
        ),
    )
    # A bin of one or two images swings between 0 and 1: the point's size shows how few.
    points = base.mark_circle(opacity=0.8).encode(
        size=alt.Size("count:Q", title="test images in bin", scale=alt.Scale(type="sqrt")),
        tooltip=[
            "curve",
            "bin",
            "count",
            alt.Tooltip("confidence:Q", format=".3f"),
            alt.Tooltip("accuracy:Q", format=".3f"),
        ],
    )
    lines = base.mark_line(strokeWidth=1.5)
    return (diagonal + lines + points).properties(
        width=360, height=360, title="Reliability (test set)"
    )


def gradient_profile_chart(profiles: dict[str, Sequence[tuple[str, float]]]) -> alt.Chart:
    """Gradient norm of every kernel layer at initialisation (log scale), input side first, one
    line per run: a vanishing gradient is a line falling towards the input."""
    rows = [
        {"run": run, "depth": n + 1, "layer": layer, "grad_norm": norm}
        for run, profile in profiles.items()
        for n, (layer, norm) in enumerate(profile)
    ]
    frame = pd.DataFrame(rows, columns=["run", "depth", "layer", "grad_norm"])
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("depth:Q", title="layer (1 = next to the input)", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("grad_norm:Q", scale=alt.Scale(type="log"), title="gradient norm at init"),
            color=alt.Color(
                "run:N",
                scale=CATEGORICAL,
                legend=alt.Legend(orient="bottom", columns=1, labelLimit=0),
            ),
            tooltip=["run", "layer", alt.Tooltip("grad_norm:Q", format=".3g")],
        )
        .properties(title="gradient norm per layer at initialisation", height=300)
    )


def precision_recall_chart(curves: dict[str, dict[str, Sequence[float]]], labels: Sequence[str]):
    """Per label its test precision-recall curve (metrics.json `multilabel.curves`), one
    colour per label; `labels` selects which (the legend click highlights one)."""
    rows = [
        {"label": name, "recall": r, "precision": p}
        for name in labels
        for r, p in zip(curves[name]["recall"], curves[name]["precision"], strict=True)
    ]
    pick = alt.selection_point(fields=["label"], bind="legend")
    unit = alt.Scale(domain=[0, 1])
    scale = CATEGORICAL if len(labels) <= 10 else MANY_CATEGORIES
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("recall:Q", scale=unit), y=alt.Y("precision:Q", scale=unit),
            color=alt.Color("label:N", scale=scale), tooltip=["label", "recall", "precision"],
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
        )
        .add_params(pick)
        .properties(height=320)
    )  # fmt: skip
