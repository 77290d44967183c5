"""`imgclf-lab regions`: depth vs width as linear regions. A ReLU network is piecewise linear
in its input; where one pattern of active and inactive hidden units holds, every unit is one
affine function of the input, so the network is too: an *activation region* (Hanin & Rolnick,
2019), always convex. For 2-D inputs they can be counted and drawn: evaluate every hidden
unit's sign on a fine grid of the input square [-1, 1]^2 and count the distinct patterns.

A deep net (4 layers of 10 ReLU units) and a wide one (1 layer of 40: the same 40 hidden units)
are counted at initialisation (He normal, seeded) and after training on two interleaved spirals
(a 2-D task that needs many pieces), and the counts are printed next to the Montúfar et al.
(2014) lower bound on the *maximal* number of linear regions (`diagnostics.linear_regions_bound`:
821 for 1 x 40, 875,000 for 4 x 10; the bound is over all of R^2, the count over the square).
A region smaller than a grid cell is missed; two neighbouring activation regions can carry the
same affine map (a unit that flips but feeds only inactive units), so for the deep net the count
can exceed its number of distinct linear pieces. For one hidden layer the two are the same.
At initialisation Keras' biases are zero, so every unit's boundary passes through the origin
and the regions are wedges around it; training moves them apart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

NETS = {"deep": [10, 10, 10, 10], "wide": [40]}


def spirals(n: int, seed: int, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals in [-1, 1]^2: float32 [n, 2] points, int labels [n] (0/1)."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    labels = rng.integers(0, 2, n)
    sign = np.where(labels == 0, 1.0, -1.0)
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / (3 * np.pi)
    return (x + rng.normal(0, noise, x.shape)).astype(np.float32), labels


def build(widths: list[int], seed: int) -> Any:
    """A ReLU MLP on 2 inputs with He-normal initialisation (seeded) and a 2-way softmax."""
    import keras

    # One initialiser per layer: a Keras initialiser with a fixed seed draws the same values
    # every time it is called, so a shared one would start every layer alike.
    inputs = keras.Input((2,))
    h = inputs
    for n, width in enumerate(widths):
        init = keras.initializers.HeNormal(seed=seed + n)
        h = keras.layers.Dense(width, activation="relu", kernel_initializer=init,
                               name=f"hidden{n + 1}")(h)  # fmt: skip
    out_init = keras.initializers.GlorotUniform(seed=seed + len(widths))
    outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer=out_init,
                                 name="probabilities")(h)  # fmt: skip
    return keras.Model(inputs, outputs)


def grid(resolution: int) -> np.ndarray:
    """float32 [resolution^2, 2]: the centres of a resolution x resolution grid on [-1, 1]^2,
    row by row from the top (y = 1) down."""
    edge = (np.arange(resolution) + 0.5) / resolution * 2 - 1
    xx, yy = np.meshgrid(edge, edge[::-1])
    return np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)


def region_ids(model: Any, points: np.ndarray) -> np.ndarray:
    """int64 [N]: the activation pattern of every hidden ReLU unit at each point, numbered
    0.. in order of first appearance (points with the same pattern share a number)."""
    import keras

    hidden = [layer.output for layer in model.layers if layer.name.startswith("hidden")]
    probe = keras.Model(model.input, hidden)
    outs = probe.predict(points, batch_size=65536, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    pattern = np.concatenate([o > 0 for o in outs], axis=1)
    packed = np.packbits(pattern, axis=1)
    _, ids = np.unique(packed, axis=0, return_inverse=True)
    return ids.ravel().astype(np.int64)


def _train(model: Any, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> float:
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    return float(history.history["accuracy"][-1])


def run(quick: bool = False, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The lab: (table rows, summary with the region maps for the picture)."""
    from imgclf.training.diagnostics import linear_regions_bound

    resolution, epochs, n = (200, 15, 1000) if quick else (1000, 300, 2000)
    x, y = spirals(n, seed)
    points = grid(resolution)
    rows, maps = [], {}
    import keras

    for name, widths in NETS.items():
        keras.utils.set_random_seed(seed)
        model = build(widths, seed)
        start = time.perf_counter()
        at_init = region_ids(model, points)
        accuracy = _train(model, x, y, epochs, seed)
        trained = region_ids(model, points)
        maps[name] = {"init": at_init, "trained": trained}
        rows.append({
            "net": name,
            "hidden layers": len(widths),
            "hidden units": sum(widths),
            "parameters": model.count_params(),
            "regions at init": int(at_init.max()) + 1,
            "regions trained": int(trained.max()) + 1,
            "Montúfar bound": linear_regions_bound(widths, 2),
            "train accuracy": round(accuracy, 3),
            "seconds": round(time.perf_counter() - start, 1),
        })  # fmt: skip
    summary = {
        "quick": quick,
        "seed": seed,
        "grid": f"{resolution} x {resolution} on [-1, 1]^2",
        "task": f"two spirals, {n} points, noise 0.05; Adam 0.01, batch 64, {epochs} epochs",
    }
    return rows, {**summary, "_maps": maps, "_resolution": resolution, "_data": (x, y)}


def draw(path: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """regions.png: deep and wide, at initialisation and trained; each region its own colour
    (a seeded random colour per activation pattern), the training points on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res, (x, y) = summary["_resolution"], summary["_data"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 10.6))
    for r, row in enumerate(rows):
        for c, stage in enumerate(("init", "trained")):
            ids = summary["_maps"][row["net"]][stage]
            colours = np.random.default_rng(1).uniform(0.15, 1.0, (int(ids.max()) + 1, 3))
            ax = axes[r, c]
            ax.imshow(colours[ids].reshape(res, res, 3), extent=(-1, 1, -1, 1))
            if stage == "trained":
                ax.scatter(x[:, 0], x[:, 1], c=np.where(y == 0, "black", "white"), s=3,
                           edgecolors="none")  # fmt: skip
            count = row["regions at init" if stage == "init" else "regions trained"]
            ax.set_title(f"{row['net']} ({row['hidden layers']} x "
                         f"{row['hidden units'] // row['hidden layers']}), {stage}: "
                         f"{count:,} regions", fontsize=10)  # fmt: skip
            ax.set_xlim(-1, 1)  # the scatter would widen the axes past the picture
            ax.set_ylim(-1, 1)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Linear regions of ReLU nets with 40 hidden units on [-1, 1]²")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
