"""task: multilabel (imgclf.data.multilabel, imgclf.training.multilabel): a CSV of label sets,
a split that keeps every label in every split, sigmoid outputs, thresholds chosen on
validation, and imgclf-predict naming every label present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf import runs
from imgclf.config import load_config
from imgclf.data import load_data
from imgclf.data.multilabel import iterative_split, label_sets, multimnist_arrays
from imgclf.infra.errors import ConfigError
from imgclf.predict import cli
from imgclf.predict.predictor import Predictor
from imgclf.train import train
from imgclf.training.multilabel import choose_thresholds


def test_label_sets_and_multimnist() -> None:
    names, hot = label_sets(["beach|people", "beach", "people|sunset"])
    assert names == ["beach", "people", "sunset"]
    np.testing.assert_array_equal(hot, [[1, 1, 0], [1, 0, 0], [0, 1, 1]])
    images, targets = multimnist_arrays()
    assert images.shape == (5000, 28, 56) and targets.shape == (5000, 10)
    assert set(np.unique(targets.sum(1))) == {1.0, 2.0}  # one or two digits per picture


def test_the_split_keeps_every_label_in_every_split() -> None:
    _, targets = multimnist_arrays()
    train_idx, val, test = iterative_split(targets, 0.15, 0.15, seed=0)
    assert len(np.intersect1d(train_idx, val)) == len(np.intersect1d(val, test)) == 0
    assert len(train_idx) + len(val) + len(test) == len(targets)
    share = targets.mean(0)
    for part in (train_idx, val, test):
        assert (targets[part].sum(0) > 0).all()
        np.testing.assert_allclose(targets[part].mean(0), share, atol=0.02)  # stratified


def test_thresholds_maximise_f1_per_label() -> None:
    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.4, 0.8], [0.1, 0.3]])
    targets = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    np.testing.assert_allclose(choose_thresholds(probs, targets), [0.6, 0.7])


def test_multilabel_needs_a_multilabel_source() -> None:
    with pytest.raises(ConfigError, match="multimnist or csv"):
        load_config(None, ["task=multilabel", "data.source=digits"])
    with pytest.raises(ConfigError, match="set task=multilabel"):
        load_config(None, ["data.source=multimnist"])


def _halves(left: bool, right: bool, rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(0, 40, (16, 16), dtype=np.uint8)
    image[:, :8] += 200 * left
    image[:, 8:] += 200 * right
    return image


@pytest.fixture(scope="module")
def label_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of 90 pictures whose left half, right half or both are bright: `left`, `right`,
    `left|right`."""
    root = tmp_path_factory.mktemp("multilabel")
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(90):
        left, right = [(True, False), (False, True), (True, True)][i % 3]
        Image.fromarray(_halves(left, right, rng)).save(root / f"{i}.png")
        rows.append(f"{i}.png,{'|'.join(n for n, on in (('left', left), ('right', right)) if on)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_a_multilabel_run_decides_on_validation_and_names_both_labels(
    label_csv: Path, tmp_path: Path, capsys
) -> None:
    config = load_config(None, [
        "task=multilabel", "data.source=csv", f"data.path={label_csv}", "data.image_size=[16,16]",
        "data.val_fraction=0.2", "data.test_fraction=0.2", "model.name=mlp", "model.hidden=[16]",
        "train.epochs=12", "train.learning_rate=0.01", "train.batch_size=8",
        "train.diagnostics=false", "augment.rotation=0", "augment.zoom=0", "augment.translate=0",
    ])  # fmt: skip
    splits = load_data(config)
    assert splits.class_names == ["left", "right"]
    for split in (splits.train, splits.val, splits.test):
        assert (split.targets.sum(0) > 0).all()
    run = train(config, out=tmp_path / "run", verbose=0, splits=splits)
    metrics = json.loads((run / runs.METRICS).read_text())
    predictor = Predictor.from_path(run)
    val_probs = predictor.predict_arrays(splits.val.x)
    expected = choose_thresholds(val_probs, splits.val.targets)  # validation, never test
    np.testing.assert_allclose(predictor.thresholds, expected, atol=1e-6)
    assert metrics["multilabel"]["map_macro"] > 0.9
    assert np.allclose(predictor.predict_arrays(splits.test.x).sum(1), 1) is False  # sigmoids
    _every_export_agrees(run, predictor, splits.test.x)
    both = tmp_path / "both.png"
    Image.fromarray(_halves(True, True, np.random.default_rng(9))).save(both)
    assert cli.main([str(run), str(both), "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert sorted(entry["label"] for entry in record["labels"]) == ["left", "right"]


def _every_export_agrees(run: Path, predictor: Predictor, images: np.ndarray) -> None:
    """The SavedModel (written at the end of training), TFLite and ONNX answer every
    per-label probability as the run does, and decide with the run's thresholds."""
    from imgclf.export import onnx, tflite

    tflite.export_run(run)
    onnx.export_run(run)
    expected = predictor.predict_arrays(images)
    for artifact in (runs.SAVED_MODEL, runs.TFLITE, runs.ONNX):
        exported = Predictor.from_path(run / artifact)
        probs = exported.predict_arrays(images)
        np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5)
        assert [exported.present(p) is not None for p in probs[:1]] == [True]
        same = [[n for n, _ in exported.present(p)] for p in probs]
        assert same == [[n for n, _ in predictor.present(p)] for p in expected]
