"""Bounded forward passes after training (forward, confidence.split_outputs): nothing after
the last epoch runs the model on more images at once than the configured batch, and the outputs
computed once per split give the calibration, OOD detector and evaluation that separate passes
for each consumer give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from imgclf import runs
from imgclf.config import load_config


def test_inference_batch_follows_the_largest_activation():
    import keras

    from imgclf.forward import ACTIVATION_BUDGET, MAX_BATCH, activation_sizes, inference_batch_size

    small = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3)])
    assert inference_batch_size(small) == MAX_BATCH
    big = keras.Sequential([keras.Input((224, 224, 3)), keras.layers.Conv2D(96, 3, padding="same")])
    largest, total = activation_sizes(big)
    assert largest == total == 224 * 224 * 96
    batch = inference_batch_size(big)
    assert batch < MAX_BATCH and batch * largest * 16 <= ACTIVATION_BUDGET
    assert inference_batch_size(big, 5) == 5  # train.eval_batch_size fixes it


@pytest.mark.slow  # trains and exports
def test_everything_after_training_runs_in_bounded_batches(
    folder_dataset: Path, tmp_path, monkeypatch
):
    """The end of a run (confidence fit, evaluation, samples, the SavedModel and its parity
    checks) never hands a model more than train.eval_batch_size images: every eager call,
    `predict` and `predict_on_batch` of a Keras model, and every call of the reloaded
    SavedModel's signatures, is recorded while finish_run runs."""
    import types

    import keras

    from imgclf.export import saved_model
    from imgclf.forward import Forward
    from imgclf.train import train
    from imgclf.training import finish

    seen: list[int] = []
    recording = [False]
    real_call, real_predict = keras.Model.__call__, keras.Model.predict
    real_on_batch = keras.Model.predict_on_batch

    def batch_of(x) -> int | None:
        x = x[0] if isinstance(x, list | tuple) else x
        n = getattr(x, "shape", (None,))[0]
        return n if isinstance(n, int) else None  # symbolic (tracing): no concrete batch

    def call(self, *args, **kwargs):
        if recording[0] and args and batch_of(args[0]) is not None:
            seen.append(batch_of(args[0]))
        return real_call(self, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        if recording[0]:
            seen.append(len(x))
        return real_predict(self, x, *args, **kwargs)

    def on_batch(self, x, *args, **kwargs):
        if recording[0]:
            seen.append(len(x))
        return real_on_batch(self, x, *args, **kwargs)

    real_reload = saved_model.reload

    def reload(*args, **kwargs):  # the reloaded SavedModel: its signatures, recorded
        loaded = real_reload(*args, **kwargs)

        def recorded(signature):
            def run(**inputs):
                if recording[0]:
                    seen.extend(int(t.shape[0]) for t in inputs.values())
                return signature(**inputs)

            return run

        signatures = {name: recorded(fn) for name, fn in loaded.signatures.items()}
        return types.SimpleNamespace(signatures=signatures, loaded=loaded)

    real_finish = finish.finish_run

    def recorded_finish(*args, **kwargs):
        Forward.largest, recording[0] = 0, True
        try:
            return real_finish(*args, **kwargs)
        finally:
            recording[0] = False

    monkeypatch.setattr(keras.Model, "__call__", call)
    monkeypatch.setattr(keras.Model, "predict", predict)
    monkeypatch.setattr(keras.Model, "predict_on_batch", on_batch)
    monkeypatch.setattr(finish, "finish_run", recorded_finish)
    monkeypatch.setattr(saved_model, "reload", reload)
    config = load_config(
        None,
        [*tiny_overrides(folder_dataset), "train.epochs=1", "train.export=true",
         "train.eval_batch_size=4"],
    )  # fmt: skip
    run = train(config, out=tmp_path / "run", verbose=0)
    assert runs.read_state(run).complete
    metrics = runs.read_json(run / runs.METRICS)
    assert metrics["test"]["n"] > 4 and metrics["counts"]["train"] > 4  # else nothing to bound
    assert 0 < Forward.largest <= 4  # compiled passes ran, in batches of at most 4
    assert seen and max(seen) <= 4  # eager calls, predict(_on_batch), the SavedModel's calls
    assert runs.read_json(run / runs.EXPORTS)["saved_model"]["parity"]["n_images"] > 4
    stages = metrics["resources"]["stages"]
    assert {"prepare", "train", "confidence", "evaluation", "export"} <= set(stages)
    assert all(s["wall_s"] >= 0 and s["cpu_s"] >= 0 for s in stages.values())
    assert not (run / runs.PROGRESS).exists()  # the estimate is over, and not in the manifest
    assert "Cost of this run" in (run / runs.MODEL_CARD).read_text()


@pytest.fixture(scope="module")
def trained(folder_dataset: Path):
    """A tiny model after one epoch, its config and splits (not a run: nothing written)."""
    import keras

    from imgclf.data import load_data
    from imgclf.models import build_model
    from imgclf.training.backend import make_training_data
    from imgclf.training.optim import compile_model

    config = load_config(None, [*tiny_overrides(folder_dataset), "train.epochs=1"])
    splits = load_data(config)
    keras.utils.set_random_seed(0)
    model = build_model(config, len(splits.class_names))
    compile_model(model, config.train, 4)
    train_ds, val_ds = make_training_data(splits, config, 8)
    model.fit(train_ds, validation_data=val_ds, epochs=2, verbose=0, shuffle=False)
    return model, config, splits


@pytest.mark.slow  # trains and exports
def test_shared_outputs_give_the_per_consumer_calibration_ood_and_evaluation(trained):
    from imgclf.confidence import calibration, graph, ood
    from imgclf.confidence.fit import fit_confidence
    from imgclf.confidence.split_outputs import run_outputs
    from imgclf.evaluate import evaluate

    model, config, splits = trained
    outputs = run_outputs(model, splits, 3, ood.MAX_FIT_IMAGES, config.seed)
    shared = fit_confidence(model, outputs, len(splits.class_names), config)

    # Each consumer on its own, as before: its own eager pass through the feature model.
    def features(split):
        return np.asarray(graph.feature_model(model)(np.asarray(split.x, np.float32)))

    val_f, test_f, train_f = features(splits.val), features(splits.test), features(splits.train)
    alone = calibration.calibrate(
        graph.logits_of(model, val_f), splits.val.y, graph.logits_of(model, test_f), splits.test.y
    )
    assert shared.calibration["temperature"] == pytest.approx(alone["temperature"], rel=1e-4)
    assert shared.calibration["after"]["ece"] == pytest.approx(alone["after"]["ece"], abs=1e-5)
    stats = ood.fit(train_f, splits.train.y, len(splits.class_names))
    stats = ood.with_threshold(stats, stats.score(val_f), config.train.ood_quantile)
    assert shared.stats.threshold == pytest.approx(stats.threshold, rel=1e-4)
    np.testing.assert_allclose(shared.stats.centres, stats.centres, rtol=1e-3, atol=1e-4)
    # Evaluation from the shared test logits is the model's own output on the test images.
    direct = np.asarray(model(np.asarray(splits.test.x, np.float32), training=False))
    np.testing.assert_allclose(outputs["test"].probabilities(), direct, atol=1e-5)
    metrics, _ = evaluate(model, splits.test.x, splits.test.y, splits.class_names, k=2)
    assert metrics["test"]["accuracy"] == pytest.approx(
        float((outputs["test"].probabilities().argmax(1) == splits.test.y).mean())
    )


@pytest.mark.slow  # trains and exports
def test_a_detector_that_cannot_be_fitted_is_skipped_not_a_traceback(trained):
    """Features that never vary (a dead network): the covariance cannot be factorised, and the
    run says so instead of losing everything after training."""
    import dataclasses

    from imgclf.confidence.fit import fit_confidence
    from imgclf.confidence.split_outputs import run_outputs

    model, config, splits = trained
    outputs = run_outputs(model, splits, 8, 100, config.seed)
    flat = {
        name: dataclasses.replace(out, features=np.ones_like(out.features))
        for name, out in outputs.items()
    }
    result = fit_confidence(model, flat, len(splits.class_names), config)
    assert result.stats is None and "skipped" in result.ood
    assert "covariance" in result.ood["skipped"] or "barely vary" in result.ood["skipped"]
    assert result.calibration is not None  # calibration is not lost with it
    # Features that are not finite (a diverged model): skipped too, with the reason.
    nan = {
        name: dataclasses.replace(out, features=np.full_like(out.features, np.nan))
        for name, out in outputs.items()
    }
    diverged = fit_confidence(model, nan, len(splits.class_names), config)
    assert diverged.stats is None and "NaN" in diverged.ood["skipped"]
