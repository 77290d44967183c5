"""PNG plots for the run directory: training curves and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np

from imgclf.runs import atomic_path, phase_starts


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_curves(
    history: dict[str, Sequence[float]], path: str | Path, phases: Sequence[str] = ()
) -> None:
    """Loss and accuracy per epoch, training vs validation; a dashed line where a new phase of
    the transfer schedule (fine-tuning) begins."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-o"), (f"val_{metric}", "-s")):
            if history.get(key):
                ax.plot(epochs, history[key], style, markersize=3, label=key)
        for epoch, phase in phase_starts(phases):
            # The line sits between the last epoch of the old phase and the first of the new.
            ax.axvline(
                epoch - 0.5, color="grey", linestyle="--", linewidth=1, label=f"{phase} starts"
            )
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], path: str | Path) -> None:
    """Confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    matrix = np.asarray(matrix)
    n = len(labels)
    size = min(4 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=labels, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (test set)")
    if n <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if matrix[i, j] > threshold else "black",
                )
    _save(fig, path)


def plot_image_grid(
    grid: np.ndarray,
    row_titles: Sequence[str],
    path: str | Path,
    column_titles: Sequence[str] | None = None,
) -> None:
    """Images [rows, cols, H, W, C] (0..255) as a grid; row titles on the left."""
    rows, cols = grid.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            img = np.clip(grid[r, c], 0, 255).astype(np.uint8)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=8)
            if r == 0 and column_titles is not None:
                ax.set_title(column_titles[c], fontsize=8)
    _save(fig, path)


def _diag_colors(n: int) -> list[tuple[float, float, float, float]]:
    """One colour per layer, input (dark) to output (bright), so depth reads at a glance."""
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(n - 1, 1) * 0.9) for i in range(n)]


def _diag_series(
    entries: Sequence[dict], key: str, name: str, field: str | None = None
) -> np.ndarray:
    """entries[*][key][name] (or [field] of it) as floats; missing/null values become NaN."""
    values = []
    for entry in entries:
        value = (entry.get(key) or {}).get(name)
        if field is not None and value is not None:
            value = value.get(field)
        values.append(np.nan if value is None else float(value))
    return np.asarray(values, dtype=float)


def _diag_phases(ax: plt.Axes, entries: Sequence[dict]) -> None:
    """Whole-epoch ticks, and a dashed vertical line where the training phase changes (e.g.
    head -> fine-tune)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for i in range(1, len(entries)):
        before, after = entries[i - 1], entries[i]
        if before.get("phase") != after.get("phase"):
            x = before["epoch"] + 0.5
            ax.axvline(x, color="grey", linestyle="--", linewidth=1)
            label = f" {after.get('phase')}"
            ax.text(
                x,
                1.0,
                label,
                fontsize=8,
                color="grey",
                va="top",
                transform=ax.get_xaxis_transform(),
            )


def _diag_legend(ax: plt.Axes, fig: plt.Figure, names: Sequence[str]) -> None:
    if len(names) <= 12:
        ax.legend(fontsize=7, ncol=2 if len(names) > 6 else 1)
    else:
        sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, (len(names) - 1) / 0.9))
        fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.04, label="layer index (input → output)")


def _save_empty(fig: plt.Figure, axes: Sequence[plt.Axes], message: str, path: str | Path) -> None:
    """Save a figure whose panels only say why there is nothing to plot."""
    for ax in axes:
        ax.text(0.5, 0.5, message, ha="center", va="center")
        ax.set_axis_off()
    _save(fig, path)


def plot_gradients(diag: dict, path: str | Path) -> None:
    """Gradient norm per layer vs epoch (log scale), and per layer from input to output at the
    first and last recorded epoch: a vanishing gradient shows as a curve rising to the right."""
    names = list(diag.get("layers", []))
    entries = [e for e in diag.get("epochs", []) if e.get("grad_norm")]
    fig, (ax_time, ax_depth) = plt.subplots(1, 2, figsize=(12, 4.5))
    if not names or not entries:
        _save_empty(fig, (ax_time, ax_depth), "no gradient norms recorded", path)
        return
    epochs = np.asarray([e["epoch"] for e in entries])
    for name, color in zip(names, _diag_colors(len(names)), strict=True):
        values = _diag_series(entries, "grad_norm", name)
        values[values <= 0] = np.nan  # an underflowed 0 cannot sit on a log axis
        ax_time.plot(epochs, values, "-o", markersize=3, color=color, label=name)
    ax_time.set_yscale("log")
    ax_time.set_xlabel("epoch (0 = before training)")
    ax_time.set_ylabel("‖∂loss/∂kernel‖₂ (fixed batch)")
    ax_time.set_title("gradient norm per layer")
    ax_time.grid(alpha=0.3, which="both")
    _diag_phases(ax_time, entries)
    _diag_legend(ax_time, fig, names)

    index = np.arange(len(names))
    picks = [entries[0]] if len(entries) == 1 else [entries[0], entries[-1]]
    ratios = []
    for entry, style in zip(picks, ("-o", "-s"), strict=False):
        values = np.asarray(
            [np.nan if entry["grad_norm"].get(n) is None else entry["grad_norm"][n] for n in names],
            dtype=float,
        )
        values[values <= 0] = np.nan
        ax_depth.plot(index, values, style, markersize=4, label=f"epoch {entry['epoch']}")
        if len(values) > 1 and np.isfinite(values[0]) and np.isfinite(values[-1]):
            ratios.append(f"epoch {entry['epoch']}: {values[-1] / values[0]:.3g}×")
    ax_depth.set_yscale("log")
    ax_depth.set_xticks(index, labels=names, rotation=90 if len(names) > 6 else 0, fontsize=8)
    ax_depth.set_xlabel("layer (input → output)")
    title = "gradient norm by depth"
    if ratios:
        title += "\nlast / first layer: " + ", ".join(ratios)
    ax_depth.set_title(title)
    ax_depth.grid(alpha=0.3, which="both")
    ax_depth.legend(fontsize=8)
    _save(fig, path)


def plot_activations(diag: dict, path: str | Path) -> None:
    """Per activation layer: mean ± std of its outputs, and the fraction of dead units (ReLU
    units that are 0 for every image of the fixed batch) vs epoch."""
    names = list(diag.get("activation_layers", []))
    entries = list(diag.get("epochs", []))
    fig, (ax_mean, ax_dead) = plt.subplots(1, 2, figsize=(12, 4.5))
    if not names or not entries:
        _save_empty(fig, (ax_mean, ax_dead), "no activation layers recorded", path)
        return
    epochs = np.asarray([e["epoch"] for e in entries])
    any_dead = False
    for name, color in zip(names, _diag_colors(len(names)), strict=True):
        mean = _diag_series(entries, "activation", name, "mean")
        std = _diag_series(entries, "activation", name, "std")
        ax_mean.plot(epochs, mean, "-o", markersize=3, color=color, label=name)
        ax_mean.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.12)
        dead = _diag_series(entries, "activation", name, "dead_fraction")
        if np.isfinite(dead).any():
            any_dead = True
            ax_dead.plot(epochs, dead, "-o", markersize=3, color=color, label=name)
    ax_mean.set_xlabel("epoch (0 = before training)")
    ax_mean.set_title("activation mean ± std (fixed batch)")
    ax_mean.grid(alpha=0.3)
    _diag_phases(ax_mean, entries)
    _diag_legend(ax_mean, fig, names)
    if any_dead:
        ax_dead.set_ylim(-0.03, 1.03)
        ax_dead.set_xlabel("epoch (0 = before training)")
        ax_dead.set_title("dead ReLU units (0 for every image)")
        ax_dead.grid(alpha=0.3)
        _diag_phases(ax_dead, entries)
        ax_dead.legend(fontsize=7)
    else:
        ax_dead.text(
            0.5,
            0.5,
            "no ReLU layers: dead units are not measured\n"
            "(leaky ReLU and PReLU cannot die;\nsigmoid and tanh saturate instead)",
            ha="center",
            va="center",
        )
        ax_dead.set_axis_off()
    _save(fig, path)


def plot_reliability(calibration: dict, path: str | Path) -> None:
    """Reliability diagram of the test split before and after temperature scaling: accuracy
    against mean confidence per bin (metrics.json `calibration.*.reliability`), the diagonal
    being perfect calibration, with each curve's ECE in the legend."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    single = "temperature" in calibration  # else multi-label: one temperature per label
    after = f"T = {calibration['temperature']:.2f}" if single else "a T per label"
    before = "softmax" if single else "as trained"
    for key, style, name in (("before", "-o", before), ("after", "-s", after)):
        bins = calibration[key]["reliability"]
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            style,
            markersize=4,
            label=f"{name}: ECE {calibration[key]['ece']:.4f}",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)" if single else "probability of a label")
    ax.set_ylabel("accuracy" if single else "share of images that have it")
    ax.set_title(f"reliability, test set ({calibration['binning']})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    _save(fig, path)


def plot_lr_finder(sweeps: Sequence[dict], path: str | Path) -> None:
    """The learning-rate range test (imgclf.training.lr_finder): loss against rate on a log
    axis, raw and smoothed, one panel per phase, the suggested rate marked."""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5 * len(sweeps), 3.6), squeeze=False)
    for ax, sweep in zip(axes[0], sweeps, strict=True):
        ax.plot(sweep["rates"], sweep["losses"], color="lightgrey", linewidth=1, label="loss")
        ax.plot(sweep["rates"], sweep["smoothed"], linewidth=1.5, label="smoothed loss")
        ax.axvline(
            sweep["suggestion"], color="tab:red", linestyle="--", linewidth=1,
            label=f"suggested {sweep['suggestion']:.2g} ({sweep['rule']})",
        )  # fmt: skip
        ax.set_xscale("log")
        # The raw loss spikes where it diverges: show the smoothed curve's range and a margin.
        low, high = min(sweep["losses"]), max(sweep["smoothed"][0], min(sweep["smoothed"]) * 2)
        ax.set_ylim(max(0.0, low - 0.05 * (high - low)), high * 1.1)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title(f"{sweep['phase']} phase")
        ax.legend(fontsize=8)
    _save(fig, path)
