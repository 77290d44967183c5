"""`imgclf-lab double-descent`: test error against model size (Belkin et al., PNAS 2019). A
one-hidden-layer ReLU MLP on 4,000 mnist5k training images (784 grey pixels scaled to 0..1),
widths swept from far below to far above the interpolation threshold (parameters ~ training
samples x classes = 40,000, a width of about 50), each trained without regularisation towards
zero training error: squared loss on one-hot targets with a linear output, as Belkin et al.
did, Adam, until every training image is fitted or the epoch budget ends. A share of the
training labels can be replaced by a random other class (`label_noise`, as Nakkiran et al.
(2019) do to sharpen the peak); the 1,000 test images keep their true labels. The peak, if any,
is reported where it is: the table and `double_descent.png` say what the curve shows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgclf.config import load_config
from imgclf.data.split import load_pool

FULL_WIDTHS = [1, 4, 16, 32, 40, 45, 50, 55, 60, 80, 150, 400]
QUICK_WIDTHS = [2, 8, 32, 128]


def mnist_subset(n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, ...]:
    """Stratified, seeded train and test subsets of mnist5k: x float32 [N, 784] in 0..1,
    y int64 [N]."""

    pool = load_pool(load_config(None, ["data.source=mnist5k"]).data)
    x = pool.images.reshape(len(pool.images), -1).astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(pool.labels == c))
        train += list(idx[: n_train // 10])
        test += list(idx[n_train // 10 : n_train // 10 + n_test // 10])
    train, test = rng.permutation(train), rng.permutation(test)
    return x[train], pool.labels[train], x[test], pool.labels[test]


def with_label_noise(y: np.ndarray, share: float, seed: int) -> np.ndarray:
    """`y` with `share` of its labels (seeded) replaced by a random *other* class."""
    rng = np.random.default_rng(seed + 1)
    noisy = y.copy()
    picked = rng.choice(len(y), round(share * len(y)), replace=False)
    noisy[picked] = (y[picked] + rng.integers(1, 10, len(picked))) % 10
    return noisy


def parameters(width: int, inputs: int = 784, classes: int = 10) -> int:
    """Weights and biases of the one-hidden-layer MLP."""
    return inputs * width + width + width * classes + classes


def _fit(width: int, data: tuple[np.ndarray, ...], epochs: int, seed: int) -> dict[str, Any]:
    import keras

    x, y, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((x.shape[1],)),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(10),  # linear output, squared loss (Belkin et al.)
    ])  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    targets = np.eye(10, dtype=np.float32)[y]

    class Interpolated(keras.callbacks.Callback):
        """Stop once every training image is classified as its (possibly noisy) label."""

        def on_epoch_end(self, epoch, logs=None):
            if (
                epoch % 10 == 9
                and (self.model.predict(x, verbose=0, batch_size=4096).argmax(1) == y).all()
            ):
                self.model.stop_training = True

    start = time.perf_counter()
    history = model.fit(x, targets, batch_size=500, epochs=epochs, verbose=0,
                        callbacks=[Interpolated()])  # fmt: skip
    train_err = float((model.predict(x, verbose=0, batch_size=4096).argmax(1) != y).mean())
    test_err = float((model.predict(x_test, verbose=0, batch_size=4096).argmax(1) != y_test).mean())
    return {
        "width": width,
        "parameters": parameters(width, x.shape[1]),
        "epochs": len(history.history["loss"]),
        "train loss": round(float(history.history["loss"][-1]), 5),
        "train error": round(train_err, 4),
        "test error": round(test_err, 4),
        "seconds": round(time.perf_counter() - start, 1),
    }


def peak_near(rows: list[dict[str, Any]], threshold: int) -> dict[str, Any] | None:
    """The row with the highest test error among those within 1/4 to 4 times the threshold's
    parameters that is a local maximum of the curve (higher than both neighbours), or None: no
    bump there (small nets' high error, at the left end, is under-fitting, not the peak)."""
    best = None
    for i in range(1, len(rows) - 1):
        row = rows[i]
        near = threshold / 4 <= row["parameters"] <= threshold * 4
        bump = rows[i - 1]["test error"] < row["test error"] > rows[i + 1]["test error"]
        if near and bump and (best is None or row["test error"] > best["test error"]):
            best = row
    return None if best is None else {k: best[k] for k in ("width", "parameters", "test error")}


def run(quick: bool = False, seed: int = 0, label_noise: float = 0.1) -> tuple[list, dict]:
    """The sweep: (table rows, summary)."""
    n_train, n_test = (500, 500) if quick else (4000, 1000)
    widths, epochs = (QUICK_WIDTHS, 10) if quick else (FULL_WIDTHS, 1000)
    x, y, x_test, y_test = mnist_subset(n_train, n_test, seed)
    y = with_label_noise(y, label_noise, seed)

    rows = []
    for width in widths:
        rows.append(_fit(width, (x, y, x_test, y_test), epochs, seed))
        r = rows[-1]  # a line per width: minutes each in full mode
        print(f"width {width} ({r['parameters']:,} parameters): train error "
              f"{r['train error']:.3f}, test error {r['test error']:.3f} after {r['epochs']} "
              f"epochs, {r['seconds']:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    threshold = n_train * 10
    peak = peak_near(rows, threshold)
    fitted = next((r for r in rows if r["train error"] == 0), None)
    summary = {
        "quick": quick,
        "seed": seed,
        "data": f"mnist5k: {n_train} training images (stratified), {n_test} test images",
        "label_noise": label_noise,
        "training": f"squared loss, linear output, Adam 1e-3, batch 500, up to {epochs} epochs "
        "(stopped once every training image is fitted)",
        "interpolation_threshold_parameters": threshold,
        "peak_near_threshold": peak,
        "first_width_fitting_every_training_label": fitted["width"] if fitted else None,
    }
    return rows, summary


def draw(path: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """double_descent.png: train and test error against parameters (log scale), the
    interpolation threshold (training samples x classes) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = [r["parameters"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(params, [r["test error"] for r in rows], "o-", label="test error")
    ax.plot(params, [r["train error"] for r in rows], "s--", label="train error")
    threshold = summary["interpolation_threshold_parameters"]
    ax.axvline(threshold, color="grey", linestyle=":", label=f"n x classes = {threshold:,}")
    ax.set_xscale("log")
    ax.set_xlabel(f"parameters (one hidden layer, widths {rows[0]['width']}..{rows[-1]['width']})")
    ax.set_ylabel("error")
    ax.set_title(
        f"Double descent? Label noise {summary['label_noise']:.0%}, seed {summary['seed']}"
    )
    fig.text(0.01, 0.01, summary["data"], fontsize=8)
    ax.legend()
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
