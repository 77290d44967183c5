"""PNG plots for the run directory: training curves and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np

from imgclf.runs import atomic_path


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_curves(history: dict[str, Sequence[float]], path: str | Path) -> None:
    """Loss and accuracy per epoch, training vs validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-o"), (f"val_{metric}", "-s")):
            if history.get(key):
                ax.plot(epochs, history[key], style, markersize=3, label=key)
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
