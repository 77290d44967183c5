"""task: multilabel (imgclf.data.multilabel, imgclf.training.multilabel): a CSV of label sets,
a split that keeps every label in every split, sigmoid outputs, thresholds chosen on
validation, and imgclf-predict naming every label present."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf import runs
from imgclf.config import load_config
from imgclf.data import load_data
from imgclf.data.multilabel import iterative_split, label_sets, multimnist_arrays
from imgclf.infra.errors import ConfigError, UserError
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
    with pytest.raises(ConfigError, match="multimnist, csv"):
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
    `left|right`; one picture in ten has its `right` label wrong (so no model is right on every
    validation image with a margin, and a temperature can be fitted)."""
    root = tmp_path_factory.mktemp("multilabel")
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(90):
        left, right = [(True, False), (False, True), (True, True)][i % 3]
        Image.fromarray(_halves(left, right, rng)).save(root / f"{i}.png")
        right = right != (i % 10 == 3 and left)  # a wrong label (never an empty set)
        rows.append(f"{i}.png,{'|'.join(n for n, on in (('left', left), ('right', right)) if on)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def _label_folder(root: Path, n: int = 60, seed: int = 1) -> Path:
    """left/ and right/ label folders; every third picture is bright on both halves and sits in
    both folders (a hard link for even i, a copy for odd i)."""
    import os
    import shutil

    rng = np.random.default_rng(seed)
    for name in ("left", "right"):
        (root / name).mkdir(parents=True)
    for i in range(n):
        left, right = [(True, False), (False, True), (True, True)][i % 3]
        first = root / ("left" if left else "right") / f"p{i}.png"
        Image.fromarray(_halves(left, right, rng)).save(first)
        if left and right:
            (os.link if i % 2 == 0 else shutil.copyfile)(first, root / "right" / f"p{i}.png")
    return root


def test_a_photo_in_several_label_folders_is_one_image_with_those_labels(tmp_path: Path) -> None:
    from imgclf.audit import audit

    root = _label_folder(tmp_path / "photos")
    overrides = ["task=multilabel", "data.source=folder", f"data.path={root}",
                 "data.image_size=[16,16]", "data.val_fraction=0.2",
                 "data.test_fraction=0.2"]  # fmt: skip
    splits = load_data(load_config(None, overrides))
    assert splits.class_names == ["left", "right"]
    targets = np.concatenate([s.targets for s in (splits.train, splits.val, splits.test)])
    assert len(targets) == 60  # 80 files, 20 of them a second copy of a two-label picture
    assert int((targets.sum(1) == 2).sum()) == 20
    assert splits.report["several_labels"]["images"] == 20
    for split in (splits.train, splits.val, splits.test):
        for file, row in zip(split.files, split.targets, strict=True):
            i = int(Path(file).stem[1:])  # the picture's own truth, from its name
            assert row.tolist() == [float(i % 3 != 1), float(i % 3 != 0)]
    report = audit(overrides)
    assert report["duplicates"]["conflicting_groups"] == 0  # a label set, not a conflict
    assert report["duplicates"]["several_labels"] == 20
    single = audit([o for o in overrides if not o.startswith("task=")])
    assert single["duplicates"]["conflicting_groups"] == 20  # single-label: they are conflicts


def test_one_hot_columns_read_as_label_sets(label_csv: Path, tmp_path: Path) -> None:
    lines = label_csv.read_text().splitlines()[1:]
    rows = ["path,left,right"]
    for line in lines:
        path, labels = line.split(",")
        rows.append(f"{path},{int('left' in labels)},{'yes' if 'right' in labels else ''}")
    one_hot = label_csv.parent / "one_hot.csv"
    one_hot.write_text("\n".join(rows) + "\n")
    common = ["task=multilabel", "data.source=csv", "data.image_size=[16,16]",
              "data.val_fraction=0.2", "data.test_fraction=0.2"]  # fmt: skip
    sets = load_data(load_config(None, [*common, f"data.path={label_csv}"]))
    hot = load_data(load_config(None, [*common, f"data.path={one_hot}"]))
    assert hot.class_names == sets.class_names == ["left", "right"]
    for a, b in ((sets.train, hot.train), (sets.val, hot.val), (sets.test, hot.test)):
        assert a.files == b.files
        np.testing.assert_array_equal(a.targets, b.targets)
    from imgclf.audit import audit

    assert audit([*common, f"data.path={one_hot}"])["classes"]  # the audit reads it too
    (label_csv.parent / "bad.csv").write_text("path,left,right\n0.png,1,maybe\n")
    with pytest.raises(UserError, match="line 2: column 'right' holds 'maybe'"):
        load_data(load_config(None, [*common, f"data.path={label_csv.parent / 'bad.csv'}"]))


ML_OVERRIDES = [
    "task=multilabel", "data.source=csv", "data.image_size=[16,16]", "data.val_fraction=0.2",
    "data.test_fraction=0.2", "model.name=cnn", "model.filters=[4]", "model.hidden=[8]",
    "train.epochs=12", "train.learning_rate=0.01", "train.batch_size=8", "train.diagnostics=false",
    "augment.rotation=0", "augment.zoom=0", "augment.translate=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def ml_run(label_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """(a multi-label run on the left/right CSV, its splits), trained once for this module."""
    config = load_config(None, [*ML_OVERRIDES, f"data.path={label_csv}"])
    splits = load_data(config)
    run = train(config, out=tmp_path_factory.mktemp("ml") / "run", verbose=0, splits=splits)
    return run, splits


def test_a_multilabel_run_decides_on_validation_and_names_both_labels(
    ml_run, tmp_path: Path, capsys
) -> None:
    from imgclf.confidence import graph
    from imgclf.confidence.multilabel import fit_label_temperature

    run, splits = ml_run
    assert splits.class_names == ["left", "right"]
    for split in (splits.train, splits.val, splits.test):
        assert (split.targets.sum(0) > 0).all()
    metrics = json.loads((run / runs.METRICS).read_text())
    predictor = Predictor.from_path(run)
    val_probs = predictor.predict_arrays(splits.val.x)
    expected = choose_thresholds(val_probs, splits.val.targets)  # validation, never test
    np.testing.assert_allclose(predictor.thresholds, expected, atol=1e-6)
    assert metrics["multilabel"]["map_macro"] > 0.9
    assert np.allclose(predictor.predict_arrays(splits.test.x).sum(1), 1) is False  # sigmoids
    # Calibrated: the temperatures are folded into model.keras, so on its own validation
    # logits the best temperature of every label is now 1.
    cal = metrics["calibration"]
    assert {"before", "after"} <= set(cal)  # test ECE and NLL either side
    assert len(cal["kept_as_trained"]) < len(splits.class_names)  # something was fitted
    features = graph.feature_model(predictor.model).predict(splits.val.x, verbose=0)
    logits = graph.logits_of(predictor.model, features)
    for k, name in enumerate(splits.class_names):
        if name not in cal["kept_as_trained"]:
            refit = fit_label_temperature(logits[:, k], splits.val.targets[:, k])
            assert refit == pytest.approx(1.0, abs=0.01), (name, refit)
    assert "threshold" in metrics["ood"]  # one out-of-distribution flag per image
    assert predictor.has_ood
    _every_export_agrees(run, predictor, splits.test.x)
    both = tmp_path / "both.png"
    Image.fromarray(_halves(True, True, np.random.default_rng(9))).save(both)
    assert cli.main([str(run), str(both), "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert sorted(entry["label"] for entry in record["labels"]) == ["left", "right"]
    assert "ood" in record
    _deployed_savedmodel_decides_alike(run, predictor, tmp_path, both)
    from imgclf.export.cli import main as export_main

    assert export_main([str(run), "--format", "mediapipe"]) == 2  # a top-k is no label set
    assert "no MediaPipe or web export" in capsys.readouterr().err


def test_the_app_shows_every_label_of_a_two_label_image(ml_run, monkeypatch, tmp_path) -> None:
    """The Classify page names both labels of a two-label picture as chips with their
    probabilities, the results table lists them, and every page renders the run."""
    import shutil

    from streamlit.testing.v1 import AppTest

    from imgclf.ui import catalog

    run, _ = ml_run
    root = tmp_path / "runs"
    shutil.copytree(run, root / "ml")
    monkeypatch.setenv(catalog.RUNS_ENV, str(root))
    app = str(Path(__file__).resolve().parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=120).run()
    for page in ("Evaluation", "Data", "Training curves", "Model", "Train", "Classify"):
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        if page == "Evaluation":  # the thresholds, one row per label
            table = at.dataframe[0].value
            assert list(table["label"]) == ["left", "right"]
            assert table["threshold"].between(0, 1).all()
    picture = io.BytesIO()
    Image.fromarray(_halves(True, True, np.random.default_rng(9))).save(picture, format="PNG")
    at.file_uploader[0].set_value([("both.png", picture.getvalue(), "image/png")]).run()
    assert not at.exception
    (chips,) = [m.value for m in at.markdown if "badge[" in m.value]
    assert ":blue-badge[left" in chips and ":blue-badge[right" in chips
    row = at.dataframe[0].value.iloc[0]
    assert row["label"] in ("left|right", "right|left")


def _deployed_savedmodel_decides_alike(run: Path, predictor, tmp_path: Path, both: Path) -> None:
    """saved_model/ copied away from its run keeps the thresholds (thresholds.json): a
    Predictor on it names the same label set as the run's."""
    import shutil

    deployed = tmp_path / "deploy" / "saved_model"
    shutil.copytree(run / runs.SAVED_MODEL, deployed)
    alone = Predictor.from_path(deployed)
    np.testing.assert_allclose(alone.thresholds, predictor.thresholds)
    (mine,) = predictor.predict_files([both])[0]
    (theirs,) = alone.predict_files([both])[0]
    assert sorted(mine.label.split("|")) == sorted(theirs.label.split("|")) == ["left", "right"]


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


def test_positive_weights_balance_each_label_in_the_loss() -> None:
    import keras

    from imgclf.training.losses import WeightedBinaryCrossentropy, positive_weights

    targets = np.array([[1, 0], [0, 0], [0, 1], [0, 1]], np.float32)
    np.testing.assert_allclose(positive_weights(targets), [3.0, 1.0])  # negatives / positives
    probs = np.array([[0.8, 0.3], [0.1, 0.6], [0.4, 0.9], [0.2, 0.7]], np.float32)
    plain = keras.losses.BinaryCrossentropy(label_smoothing=0.1)(targets, probs)
    unit = WeightedBinaryCrossentropy([1.0, 1.0], label_smoothing=0.1)(targets, probs)
    np.testing.assert_allclose(float(unit), float(plain), rtol=1e-5)  # weights 1: Keras' BCE
    w = np.array([3.0, 1.0])
    expected = -np.mean(w * targets * np.log(probs) + (1 - targets) * np.log(1 - probs))
    weighted = WeightedBinaryCrossentropy(list(w))(targets, probs)
    np.testing.assert_allclose(float(weighted), expected, rtol=1e-5)


def test_two_phase_transfer_trains_a_multilabel_head(ml_run, tmp_path: Path) -> None:
    """A multi-label run from a run's backbone (model.weights): the head phase on cached
    features keeps each image's label set, the fine-tune phase follows, and the rare label's
    positives are weighted (train.class_weight=balanced)."""
    import csv

    run, splits = ml_run
    config = load_config(None, [
        *ML_OVERRIDES, f"data.path={splits.report['path']}", f"model.weights={run}",
        "transfer.head_epochs=15", "transfer.fine_tune_epochs=2", "train.learning_rate=0.05",
        "train.class_weight=balanced",
        "train.early_stopping.patience=0",
    ])  # fmt: skip
    out = train(config, out=tmp_path / "transfer", verbose=0, splits=splits)
    with (out / runs.HISTORY).open() as fh:
        phases = [row["phase"] for row in csv.DictReader(fh)]
    assert phases == ["head"] * 15 + ["fine_tune"] * 2
    metrics = json.loads((out / runs.METRICS).read_text())
    assert metrics["task"] == "multilabel" and metrics["phases"][0]["cached_features"] is True
    assert metrics["multilabel"]["map_macro"] > 0.9  # the source run's features still work
    predictor = Predictor.from_path(out)
    assert predictor.thresholds is not None
    assert not np.allclose(predictor.predict_arrays(splits.test.x).sum(1), 1)  # sigmoids


def test_single_label_runs_are_unchanged(tiny_run: Path, tmp_path: Path) -> None:
    """The single-label path is the one it was: the session's tiny run trained again from its
    own config.yaml with `task: single` spelled out gives the same weights bit for bit, a
    softmax head, categorical cross-entropy on one-hot rows, and no multi-label section.
    (Checked once against the code before task: multilabel existed, in the closing note.)"""
    import keras

    from imgclf.models.saving import load_run_model
    from imgclf.training.optim import make_loss

    config = load_config(tiny_run / runs.CONFIG, ["task=single", "train.export=false"])
    again = train(config, out=tmp_path / "again", verbose=0)
    before, after = load_run_model(tiny_run), load_run_model(again)
    for a, b in zip(before.get_weights(), after.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert after.get_layer("probabilities").activation.__name__ == "softmax"
    assert isinstance(make_loss(config.train), keras.losses.CategoricalCrossentropy)
    splits = load_data(config)
    assert splits.train.targets is None
    metrics = json.loads((again / runs.METRICS).read_text())
    assert "multilabel" not in metrics and "temperature" in metrics["calibration"]


def test_the_builder_files_one_photo_under_several_classes(tmp_path: Path) -> None:
    from imgclf.data.builder import DatasetBuilder

    photo, other = io.BytesIO(), io.BytesIO()
    Image.fromarray(_halves(True, True, np.random.default_rng(2))).save(photo, format="PNG")
    Image.fromarray(_halves(True, False, np.random.default_rng(3))).save(other, format="PNG")
    single = DatasetBuilder(tmp_path / "single")
    assert single.add("beach", "a.png", photo.getvalue()).status == "added"
    assert single.add("people", "a.png", photo.getvalue()).status == "duplicate"
    several = DatasetBuilder(tmp_path / "several", several=True)
    first = several.add("beach", "a.png", photo.getvalue())
    second = several.add("people", "b.png", photo.getvalue())
    assert (first.status, second.status) == ("added", "added")
    a, b = tmp_path / "several" / first.path, tmp_path / "several" / second.path
    assert a.stat().st_ino == b.stat().st_ino  # a hard link: one photo, two labels
    assert several.add("people", "c.png", photo.getvalue()).status == "duplicate"
    # The first copy rewritten under the builder's feet: the new label gets the bytes it was
    # given, never a link to whatever the old file now holds.
    a.unlink()
    a.write_bytes(other.getvalue())
    third = several.add("sunset", "d.png", photo.getvalue())
    assert (tmp_path / "several" / third.path).read_bytes() == photo.getvalue()
    assert a.read_bytes() == other.getvalue()


def test_rare_label_sets_share_their_first_label_in_the_ood_mixture() -> None:
    from imgclf.training import multilabel

    common = [[1, 1, 0]] * multilabel.MIN_SET_IMAGES + [[0, 0, 1]] * multilabel.MIN_SET_IMAGES
    rare = [[0, 1, 1], [1, 0, 1]]  # one image each: no centre of their own
    codes, groups = multilabel.label_set_codes(np.array(common + rare, np.float32))
    n = multilabel.MIN_SET_IMAGES
    assert groups == 4 and len(set(codes[:n])) == 1 and len(set(codes[n : 2 * n])) == 1
    assert codes[-2] != codes[-1] and codes[-2] not in codes[:-2]  # first labels 1 and 0


def test_a_train_and_test_folder_layout_takes_validation_from_train(tmp_path: Path) -> None:
    root = tmp_path / "presplit"
    _label_folder(root / "train", 60)
    _label_folder(root / "test", 15, seed=2)
    config = load_config(None, ["task=multilabel", "data.source=folder", f"data.path={root}",
                                "data.image_size=[16,16]", "data.val_fraction=0.2"])  # fmt: skip
    splits = load_data(config)
    assert all(f.startswith("test/") for f in splits.test.files) and len(splits.test) == 15
    assert all(f.startswith("train/") for f in splits.train.files + splits.val.files)
    assert 10 <= len(splits.val) <= 14 and (splits.val.targets.sum(0) > 0).all()  # ~20%
