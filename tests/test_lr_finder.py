"""The learning-rate range test (imgclf.training.lr_finder): it puts the model back exactly, its
curve has the range test's shape, `train.learning_rate: auto` uses it per phase, and
`imgclf-train --find-lr` writes the curve and prints the suggestion."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_command, tiny_overrides

from imgclf import runs
from imgclf.config import load_config
from imgclf.train import train
from imgclf.training import lr_finder


def _toy(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs per class in 8 dimensions, 3 classes: linearly separable."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 480)
    x = rng.normal(size=(480, 8)).astype("float32") + 3.0 * np.eye(3, 8, dtype="float32")[y]
    return x, np.eye(3, dtype="float32")[y]


def _model():
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _batches(x: np.ndarray, y: np.ndarray, size: int = 32) -> list:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _sweep(model, x, y, steps: int = 100) -> lr_finder.Sweep:
    import keras

    return lr_finder.range_test(
        model,
        _batches(x, y),
        lambda rate: keras.optimizers.Adam(rate),
        lambda opt: model.compile(optimizer=opt, loss="categorical_crossentropy"),
        steps=steps,
    )


def test_the_sweep_puts_weights_and_optimizer_back_exactly() -> None:
    import keras

    x, y = _toy()
    model = _model()
    optimizer = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    model.train_on_batch(x[:32], y[:32])  # the optimiser has state (moments, iterations)
    weights = [w.copy() for w in model.get_weights()]  # batch-norm statistics included
    state = [np.array(v) for v in optimizer.variables]
    sweep = _sweep(model, x, y)
    assert len(sweep.rates) > 20  # it did train (and change things) before putting them back
    assert model.optimizer is optimizer
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(state, optimizer.variables, strict=True):
        np.testing.assert_array_equal(before, np.array(after))
    # and the next real step is the one a model without the sweep would take
    twin = _model()
    twin.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    twin.set_weights(weights)
    twin.train_on_batch(x[:32], y[:32])  # builds the twin's state
    for var, value in zip(twin.optimizer.variables, state, strict=True):
        var.assign(value)
    twin.set_weights(weights)
    model.train_on_batch(x[32:64], y[32:64])
    twin.train_on_batch(x[32:64], y[32:64])
    for a, b in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_the_curve_falls_then_diverges_and_the_suggestion_sits_on_the_fall() -> None:
    x, y = _toy()
    sweep = _sweep(_model(), x, y)
    rates = np.asarray(sweep.rates)
    ratios = rates[1:] / rates[:-1]  # an exponential sweep: a constant ratio per step
    np.testing.assert_allclose(ratios, (lr_finder.END_LR / lr_finder.START_LR) ** (1 / 99))
    assert rates[0] == pytest.approx(lr_finder.START_LR)
    assert abs(sweep.losses[0] - math.log(3)) < 0.7  # untrained: about ln(classes)
    assert sweep.stopped_early  # Adam at rate ~1-10 blows the loss up
    smoothed = np.asarray(sweep.smoothed)
    best = int(np.argmin(smoothed))
    assert smoothed[best] < 0.5 * smoothed[0]  # the fall
    assert smoothed[-1] > lr_finder.DIVERGE * smoothed[best] * 0.999  # the stopping rule
    assert sweep.suggestion == pytest.approx(rates[best] / 10)
    at = int(np.searchsorted(rates, sweep.suggestion))
    assert smoothed[at] < smoothed[0]  # the suggested rate already learns
    assert 1e-5 < sweep.suggestion < 1.0


def test_a_curve_too_short_to_read_is_refused() -> None:
    with pytest.raises(lr_finder.UserError, match="diverged after 3 steps"):
        lr_finder.suggest([1e-7, 2e-7, 4e-7], [1.0, 9.0, 50.0])


def _rows(run: Path) -> list[dict]:
    with (run / runs.HISTORY).open() as fh:
        return list(csv.DictReader(fh))


def test_auto_finds_a_rate_for_each_phase_of_a_transfer_run(
    folder_dataset: Path, tiny_run: Path, tmp_path: Path, monkeypatch
) -> None:
    overrides = [
        *tiny_overrides(folder_dataset), f"model.weights={tiny_run}", "train.learning_rate=auto",
        "train.schedule=constant", "transfer.head_epochs=1", "transfer.fine_tune_epochs=1",
    ]  # fmt: skip
    run = train(load_config(None, overrides), out=tmp_path / "run", verbose=0)
    found = {s["phase"]: s for s in runs.read_json(run / runs.LR_FINDER)["phases"]}
    assert sorted(found) == ["fine_tune", "head"]
    phases = json.loads((run / runs.METRICS).read_text())["phases"]
    rows = _rows(run)
    for report, row in zip(phases, rows, strict=True):
        rate = found[report["phase"]]["suggestion"]
        assert report["learning_rate"] == pytest.approx(rate)
        assert report["learning_rate_from"] == "lr_finder"
        assert float(row["learning_rate"]) == pytest.approx(rate, rel=1e-5)  # what trained
    assert (run / runs.LR_FINDER_PLOT).stat().st_size > 1000
    assert "learning_rate: auto" in (run / runs.CONFIG).read_text()  # what was asked
    _curves_page_shows_the_sweeps(monkeypatch, run, found)


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def _curves_page_shows_the_sweeps(monkeypatch, run: Path, found: dict) -> None:
    from streamlit.testing.v1 import AppTest

    from imgclf.ui import catalog

    monkeypatch.setenv(catalog.RUNS_ENV, str(run.parent))
    app = Path(__file__).resolve().parents[1] / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120).run()
    at.sidebar.radio(key="page").set_value("Training curves").run()
    assert not at.exception, [e.value for e in at.exception]
    specs = [c.proto.spec for c in _walk(at.main) if getattr(c, "type", "") == "vega_lite_chart"]
    for phase, sweep in found.items():
        title = f"{phase} phase: suggested {sweep['suggestion']:.2g}"
        assert sum(title in spec for spec in specs) == 1, title


def test_find_lr_on_the_command_line(folder_dataset: Path, tmp_path: Path) -> None:
    done = run_command(
        "imgclf-train", "--find-lr", "--out", tmp_path / "lr", *tiny_overrides(folder_dataset)
    )
    assert done.returncode == 0, done.stderr
    record = runs.read_json(tmp_path / "lr" / runs.LR_FINDER)
    rate = record["phases"][0]["suggestion"]
    assert f"train.learning_rate={rate:.2g}" in done.stdout
    assert (tmp_path / "lr" / runs.LR_FINDER_PLOT).is_file()
    assert not runs.is_run_dir(tmp_path / "lr")  # no model: not listed as a run


def test_a_curve_that_never_falls_is_flat() -> None:
    rates = list(np.geomspace(1e-7, 10, 50))
    rising = lr_finder.Sweep("fine_tune", rates, [1.0] * 50, list(np.linspace(1.0, 3.0, 50)))
    assert rising.flat  # its minimum is the first step: minimum/10 would pick 1e-8
    valley = list(np.concatenate([np.linspace(2.0, 0.5, 35), np.linspace(0.5, 3.0, 15)]))
    assert not lr_finder.Sweep("head", rates, valley, valley).flat
