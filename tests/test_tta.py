"""Test-time augmentation (imgclf.models.tta): off, nothing changes; on, the probabilities are
the mean over the views, reported next to the plain test figures, carried by the SavedModel
(parity-checked) and by Predictor and imgclf-predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from imgclf import runs
from imgclf.confidence.graph import scored_model
from imgclf.confidence.ood import load_run_stats
from imgclf.config import load_config
from imgclf.forward import Forward
from imgclf.models.saving import load_run_model
from imgclf.models.tta import run_mode, tta_model
from imgclf.predict import cli
from imgclf.predict.predictor import Predictor
from imgclf.train import train


def _images(n: int = 6, size: int = 32) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, size, size, 3)).astype(np.float32)


def test_tta_off_answers_exactly_as_before(tiny_run: Path) -> None:
    assert run_mode(tiny_run) == "none"  # the key's default (and a run from before it)
    model, stats = load_run_model(tiny_run), load_run_stats(tiny_run)
    before = Forward(scored_model(model, stats), 8)(_images())
    now = Predictor.from_path(tiny_run).predict_outputs(_images())
    for key, value in before.items():
        np.testing.assert_array_equal(np.asarray(value), now[key])


def test_the_views_are_the_image_its_mirror_and_four_corner_crops(tiny_run: Path) -> None:
    import keras

    model = load_run_model(tiny_run)
    x = _images()
    plain = np.asarray(model(x, training=False))
    mirror = np.asarray(model(x[:, :, ::-1], training=False))
    flip = np.asarray(tta_model(model, "flip")(x, training=False))
    np.testing.assert_allclose(flip, (plain + mirror) / 2, rtol=0, atol=1e-6)
    d = round(32 * 0.1)  # 90% corner crops, resized back to 32×32
    crops = [x[:, :-d, :-d], x[:, :-d, d:], x[:, d:, :-d], x[:, d:, d:]]
    resized = [np.asarray(keras.ops.image.resize(c, (32, 32), "bilinear")) for c in crops]
    views = [plain, mirror, *(np.asarray(model(r, training=False)) for r in resized)]
    six = np.asarray(tta_model(model, "flip+crops")(x, training=False))
    np.testing.assert_allclose(six, np.mean(views, axis=0), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def tta_run(folder_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = [*tiny_overrides(folder_dataset), "predict.tta=flip", "train.export=true"]
    out = tmp_path_factory.mktemp("tta") / "run"
    return train(load_config(None, overrides), out=out, verbose=0)


def test_a_tta_run_reports_both_and_every_reader_agrees(tta_run: Path) -> None:
    metrics = json.loads((tta_run / runs.METRICS).read_text())
    tta = metrics["test_tta"]
    assert (tta["tta"], tta["views"], tta["n"]) == ("flip", 2, metrics["test"]["n"])
    assert tta["accuracy_without_tta"] == pytest.approx(metrics["test"]["accuracy"])
    assert tta["gain"] == pytest.approx(tta["accuracy"] - tta["accuracy_without_tta"])
    record = json.loads((tta_run / runs.EXPORTS).read_text())["saved_model"]
    assert record["tta"] == "flip" and record["parity"]["top1_agreement"] == 1.0
    x = _images()
    run = Predictor.from_path(tta_run).predict_arrays(x)  # the run's predict.tta
    exported = Predictor.from_path(tta_run / runs.SAVED_MODEL).predict_arrays(x)
    plain = Predictor.from_path(tta_run, tta="none").predict_arrays(x)
    np.testing.assert_allclose(exported, run, rtol=0, atol=1e-5)
    assert np.abs(plain - run).max() > 1e-4  # the SavedModel averages the views in its graph


def test_every_export_of_a_tta_run_answers_with_its_views(tta_run: Path) -> None:
    from imgclf.export import onnx, tflite

    tflite.export_run(tta_run)  # converted from the SavedModel, which carries the views
    onnx.export_run(tta_run)  # traced from the same graph
    exports = json.loads((tta_run / runs.EXPORTS).read_text())
    x = _images()
    run = Predictor.from_path(tta_run).predict_arrays(x)
    for kind, name in (("tflite", runs.TFLITE), ("onnx", runs.ONNX)):
        assert exports[kind]["tta"] == "flip"
        answered = Predictor.from_path(tta_run / name).predict_arrays(x)
        np.testing.assert_allclose(answered, run, rtol=0, atol=1e-4)


def test_tta_on_an_export_is_refused_in_one_line(tta_run: Path, capsys) -> None:
    sample = sorted((tta_run / runs.SAMPLES).glob("*.png"))[0]
    # even "none": the export carries the run's views, and cannot take them off
    assert cli.main([str(tta_run / runs.SAVED_MODEL), str(sample), "--tta", "none"]) == 2
    err = capsys.readouterr().err
    assert "applies to a run directory" in err and "Traceback" not in err
    assert cli.main([str(tta_run), str(sample), "--tta", "none", "--format", "json"]) == 0
