"""`imgclf-lab lecun1989`: "33 years ago and now". LeCun et al. (1989), "Backpropagation applied
to handwritten zip code recognition", rebuilt from Keras layers and trained on offline digits,
then the modern changes added one at a time (a cumulative ablation, as in the course's notes).

The 1989 net: 16x16 grey input in [-1, 1]; H1, 12 feature maps of 5x5 filters with stride 2
(8x8); H2, 12 maps of 5x5 filters with stride 2 (4x4); H3, 30 units; 10 outputs; every unit the
paper's scaled tanh 1.7159 tanh(2x/3); weights uniform in +-2.4 / sqrt(fan-in); mean squared
error against +-1 targets; plain SGD; each layer's input padded by 2 pixels of -1 (the
background) so that 5x5 filters with stride 2 give 8x8 and 4x4. Approximations, said here and
in the docs: H2 reads all 12 H1 maps (the paper wired each H2 map to 8 of them) and each map
shares one bias (the paper gave every unit its own); minibatches of 16 (the paper: one image at
a time) with the per-image rate 0.03 of the notes' reproduction scaled by sqrt(16) (the
square-root rule, Krizhevsky 2014; not an exact equivalent); 23 passes as in the paper.

Data: the paper had 7,291 training and 2,007 test images (USPS zip codes). Offline there are
mnist5k's 5,000 MNIST digits, resized 28x28 -> 16x16 (`images.resize_array`, the decoder's
bilinear) and split stratified with the paper's proportions: 3,920 training, 1,080 test.

Then the data rows: the first and the last recipe on half the training images (offline, the
effect of data measured downwards), and with `--more-data` on the training images plus MNIST's
70,000 digits from Keras (`keras:mnist`: its cache, or a download), every MNIST digit identical
to one of mnist5k's left out, so no test image leaks into training: the notes' "more data" rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from imgclf.config import load_config
from imgclf.data.split import load_pool
from imgclf.images import resize_array
from imgclf.infra.errors import DataError

PAPER_TRAIN, PAPER_TEST = 7291, 2007
BATCH = 16


@dataclass(frozen=True)
class Recipe:
    """One row of the ablation: what differs from the 1989 net."""

    label: str
    loss: str = "mse"  # mse (tanh outputs, +-1 targets) | crossentropy (softmax)
    optimizer: str = "sgd"  # sgd | adamw (cosine-decayed learning rate)
    shift: bool = False  # random shifts of up to 1 pixel
    dropout: float = 0.0  # before H3
    activation: str = "scaled_tanh"  # scaled_tanh | relu
    epochs: int = 23


def recipes(epochs: int = 23, long_epochs: int = 60) -> list[Recipe]:
    """The cumulative ablation, the 1989 recipe first."""
    base = Recipe("1989: scaled tanh, MSE on +-1 targets, SGD", epochs=epochs)
    ce = replace(base, label="+ softmax and cross-entropy", loss="crossentropy")
    adam = replace(ce, label="+ AdamW, cosine-decayed rate", optimizer="adamw")
    shift = replace(adam, label="+ random 1-pixel shifts", shift=True)
    drop = replace(shift, label="+ dropout 0.25 before H3", dropout=0.25)
    relu = replace(drop, label="+ ReLU instead of tanh", activation="relu")
    longer = replace(relu, label=f"+ {long_epochs} epochs (augmented data needs more)",
                     epochs=long_epochs)  # fmt: skip
    return [base, ce, adam, shift, drop, relu, longer]


def _pool(source: str) -> Any:
    return load_pool(load_config(None, [f"data.source={source}"]).data)


def _to16(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28, 1] -> float32 [N, 16, 16, 1] in [-1, 1] (the decoder's resize)."""

    small = np.stack([resize_array(img, (16, 16)) for img in images])
    return small.astype(np.float32) / 127.5 - 1.0


def digits16(seed: int, limit: int | None = None) -> tuple[np.ndarray, ...]:
    """mnist5k at 16x16 in [-1, 1] (float32 [N, 16, 16, 1]), split stratified in the paper's
    proportions: (x_train, y_train, x_test, y_test). `limit` caps the images (quick mode)."""
    x, labels, train, test = _split(_pool("mnist5k"), seed, limit)
    return x[train], labels[train], x[test], labels[test]


def _split(pool: Any, seed: int, limit: int | None) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """(x 16x16, labels, train indices, test indices) of `pool`, stratified in the paper's
    proportions and seeded."""
    rng = np.random.default_rng(seed)
    share = PAPER_TRAIN / (PAPER_TRAIN + PAPER_TEST)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(pool.labels == c))
        if limit:
            idx = idx[: limit // 10]
        cut = round(len(idx) * share)
        train += list(idx[:cut])
        test += list(idx[cut:])
    return _to16(pool.images), pool.labels, rng.permutation(train), rng.permutation(test)


def half(data: tuple[np.ndarray, ...], seed: int) -> tuple[np.ndarray, ...]:
    """The same split with half of each class's training images (the test images unchanged)."""
    x, y, x_test, y_test = data
    rng = np.random.default_rng(seed + 1)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[: (y == c).sum() // 2] for c in range(10)]
    )
    keep = np.sort(keep)
    return x[keep], y[keep], x_test, y_test


def with_more_digits(
    data: tuple[np.ndarray, ...], ours: np.ndarray, limit: int | None = None
) -> tuple[tuple[np.ndarray, ...], int]:
    """(data with MNIST's digits added to the training images, how many were left out as
    copies). MNIST comes through the `keras:mnist` source (Keras' cache, or a download; raises
    DataError offline without it). mnist5k is drawn from MNIST, so every MNIST digit identical
    (pixel for pixel at 28x28) to one of `ours` (mnist5k's uint8 images) is left out: no test
    image may leak into training, and no training image counts twice. DataError when some of
    `ours` are not found in MNIST that way: then copies could not be recognised, and the test
    images could leak."""

    x, y, x_test, y_test = data
    mnist = _pool("keras:mnist")
    seen = {img.tobytes() for img in ours}
    theirs = [img.tobytes() for img in mnist.images]
    found = len(seen.intersection(theirs))
    if found < len(seen):
        raise DataError(
            f"only {found} of mnist5k's {len(seen)} digits were found pixel for pixel in Keras' "
            "MNIST, so its copies of the test images cannot be left out of training: "
            "--more-data stops here (nothing was trained)"
        )
    fresh = np.array([b not in seen for b in theirs])
    idx = np.flatnonzero(fresh)[:limit] if limit else np.flatnonzero(fresh)
    extra = _to16(mnist.images[idx])
    grown = (np.concatenate([x, extra]), np.concatenate([y, mnist.labels[idx]]), x_test, y_test)
    return grown, int((~fresh).sum())


def _activation(name: str) -> Any:
    import keras

    if name == "relu":
        return "relu"
    return lambda z: 1.7159 * keras.ops.tanh(2.0 * z / 3.0)


def build(recipe: Recipe, seed: int) -> Any:
    """The 1989 net with `recipe`'s changes (H1 8x8x12, H2 4x4x12, H3 30, 10 outputs)."""
    import keras

    act = _activation(recipe.activation)

    def init(fan_in: int, n: int) -> Any:
        limit = 2.4 / np.sqrt(fan_in)
        return keras.initializers.RandomUniform(-limit, limit, seed=seed + n)

    def pad(name: str) -> Any:  # 2 pixels of the background, -1, on every side
        return keras.layers.Lambda(
            lambda t: keras.ops.pad(t, [[0, 0], [2, 2], [2, 2], [0, 0]], constant_values=-1.0),
            name=name,
        )

    inputs = keras.Input((16, 16, 1))
    h = inputs
    if recipe.shift:  # +-1 pixel of 16; the border is the background value -1
        h = keras.layers.RandomTranslation(1 / 16, 1 / 16, fill_mode="constant",
                                           fill_value=-1.0, seed=seed)(h)  # fmt: skip
    h = keras.layers.Conv2D(12, 5, strides=2, activation=act, kernel_initializer=init(25, 1),
                            name="H1")(pad("pad1")(h))  # fmt: skip
    h = pad("pad2")(h)
    h = keras.layers.Conv2D(12, 5, strides=2, activation=act,
                            kernel_initializer=init(25 * 12, 2), name="H2")(h)  # fmt: skip
    h = keras.layers.Flatten()(h)
    if recipe.dropout:
        h = keras.layers.Dropout(recipe.dropout, seed=seed)(h)
    h = keras.layers.Dense(30, activation=act, kernel_initializer=init(192, 3), name="H3")(h)
    out_act = act if recipe.loss == "mse" else None  # logits for cross-entropy
    outputs = keras.layers.Dense(10, activation=out_act, kernel_initializer=init(30, 4),
                                 name="out")(h)  # fmt: skip
    return keras.Model(inputs, outputs, name="lecun1989")


def _compile(model: Any, recipe: Recipe, steps: int) -> None:
    import keras

    if recipe.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(0.03 * np.sqrt(BATCH))  # batch 1's 0.03, scaled
    else:
        rate = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=steps)
        optimizer = keras.optimizers.AdamW(rate, weight_decay=1e-4)
    if recipe.loss == "mse":
        model.compile(optimizer=optimizer, loss="mse")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=optimizer, loss=loss)


def train_one(recipe: Recipe, data: tuple[np.ndarray, ...], seed: int) -> dict[str, Any]:
    """Train `recipe` and measure it: test and train error (%), seconds."""
    import keras

    x, y, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = build(recipe, seed)
    steps = recipe.epochs * -(-len(x) // BATCH)
    _compile(model, recipe, steps)
    target = (
        np.where(np.eye(10)[y] > 0, 1.0, -1.0).astype(np.float32) if recipe.loss == "mse" else y
    )
    start = time.perf_counter()
    model.fit(x, target, batch_size=BATCH, epochs=recipe.epochs, verbose=0, shuffle=True)
    seconds = time.perf_counter() - start

    def error(images: np.ndarray, labels: np.ndarray) -> float:
        scores = model.predict(images, batch_size=1024, verbose=0)
        return float((scores.argmax(1) != labels).mean() * 100)

    return {
        "recipe": recipe.label,
        "training images": len(x),
        "epochs": recipe.epochs,
        "test error %": round(error(x_test, y_test), 2),
        "train error %": round(error(x, y), 2),
        "seconds": round(seconds, 1),
    }


def run(
    quick: bool = False, seed: int = 0, more_data: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ablation, then the data rows: (table rows, summary). The data rows train the first
    and the last recipe on half the training images (offline: the effect of data, measured
    downwards) and, with `more_data`, on the training images plus MNIST's (the notes' rows)."""
    limit = 600 if quick else None
    pool = _pool("mnist5k")
    x, labels, train, test = _split(pool, seed, limit)
    data = (x[train], labels[train], x[test], labels[test])
    if more_data:  # loaded first: offline without Keras' cache it stops before any training
        more, copies = with_more_digits(data, pool.images, limit=2 * len(train) if quick else None)
    plan = recipes(1, 2) if quick else recipes()
    rows = [train_one(r, data, seed) for r in plan]
    first, last = plan[0], plan[-1]
    error_1989, error_modern = rows[0]["test error %"], rows[-1]["test error %"]
    halved = half(data, seed)
    rows += [train_one(replace(r, label=f"{tag}, half the training images"), halved, seed)
             for r, tag in ((first, "1989"), (last, "all changes"))]  # fmt: skip
    if more_data:
        rows += [train_one(replace(r, label=f"{tag} + MNIST's digits (more data)"), more, seed)
                 for r, tag in ((first, "1989"), (last, "all changes"))]  # fmt: skip
    summary = {
        "quick": quick,
        "seed": seed,
        "data": f"mnist5k resized to 16x16: {len(data[0])} training, {len(data[2])} test images "
        f"(the paper: {PAPER_TRAIN} and {PAPER_TEST} USPS digits)",
        "batch": BATCH,
        "ablation_rows": len(plan),
        "more_data": (
            f"MNIST's digits from Keras (keras:mnist) added to the training images: "
            f"{len(more[0]) - len(data[0])} added, {copies} left out as copies of mnist5k's"
            if more_data
            else "not requested: `--more-data` adds MNIST's 70,000 digits through Keras (its "
            "cache, or a download); the half-data rows show the effect of data instead"
        ),
        "modern_over_1989": round(error_modern / error_1989, 3) if error_1989 else None,
        "notes_table": {"1989 reproduction": 4.14, "modern changes": 2.09,
                        "1989 + more data": 3.05, "modern + more data": 1.31},
    }  # fmt: skip
    return rows, summary


def draw(path: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """lecun1989.png: test and train error per cumulative change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["recipe"] for r in rows]
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.5))
    ax.barh(y + 0.2, [r["test error %"] for r in rows], 0.4, label="test error %")
    ax.barh(y - 0.2, [r["train error %"] for r in rows], 0.4, label="train error %")
    ax.set_yticks(y, labels)
    ax.axvline(4.14, color="grey", linestyle=":", label="the notes' 1989 reproduction (4.14%)")
    n_ablation = summary.get("ablation_rows", len(rows))
    if n_ablation < len(rows):  # the data rows below: the same recipes, other training sets
        ax.axhline(len(rows) - n_ablation - 0.5, color="black", linewidth=0.8)
    ax.set_xlabel("error %")
    fig.suptitle("LeCun et al. 1989, then the modern changes one at a time (cumulative)")
    fig.text(0.01, 0.01, summary["data"], fontsize=7)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
