"""Trustworthy confidence (imgclf.confidence): the temperature is
fitted on validation only and folded into the model, calibrated probabilities keep the argmax,
every artifact agrees with the run on them and on the OOD score, and an image unlike the
training data is flagged in Predictor, imgclf-predict and the app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import Done, built_once, run_command, tiny_overrides
from PIL import Image

from imgclf import runs
from imgclf.confidence import calibration, graph, ood

# ---------------------------------------------------------------- the maths (no TensorFlow)


def _sampled(n: int, k: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits [n, k] and labels drawn from softmax(logits / temperature): data whose best
    temperature is `temperature`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, (n, k))
    p = calibration.softmax(logits, temperature)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return logits, labels


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    for true_t in (0.5, 2.5):
        logits, labels = _sampled(4000, 5, true_t, seed=1)
        assert calibration.fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.1)


def test_calibrate_fits_on_validation_only_and_reports_test_before_and_after():
    val_logits, val_labels = _sampled(3000, 4, 3.0, seed=2)
    test_logits, test_labels = _sampled(2000, 4, 3.0, seed=3)
    report = calibration.calibrate(val_logits, val_labels, test_logits, test_labels)
    assert report["temperature"] == calibration.fit_temperature(val_logits, val_labels)
    # Other test labels change the figures, never the temperature.
    other = calibration.calibrate(val_logits, val_labels, test_logits, (test_labels + 1) % 4)
    assert other["temperature"] == report["temperature"]
    assert other["after"]["nll"] != report["after"]["nll"]
    # Over-confident logits (the labels were drawn at T = 3): scaling cuts ECE and NLL.
    assert report["after"]["ece"] < 0.5 * report["before"]["ece"]
    assert report["after"]["nll"] < report["before"]["nll"]
    assert report["n_val"] == 3000 and report["n_test"] == 2000


def test_reliability_bins_and_scores_match_their_definitions():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    rel = calibration.reliability(probs, labels)
    assert sum(b["count"] for b in rel["bins"]) == 4
    conf, correct = probs.max(1), (probs.argmax(1) == labels)
    # 15 equal-width bins: 0.9 -> bin 13, 0.8 -> 12, 0.7 -> 10, 0.55 -> 8; one image each.
    expected = np.mean(np.abs(correct - conf))
    assert rel["ece"] == pytest.approx(expected)
    assert calibration.brier(probs, labels) == pytest.approx(
        ((probs - np.eye(2)[labels]) ** 2).sum(1).mean()
    )
    assert calibration.nll(probs, labels) == pytest.approx(-np.log(probs[range(4), labels]).mean())


def test_the_ood_score_is_the_mahalanobis_distance_to_the_nearest_class_mean():
    rng = np.random.default_rng(0)
    cov = np.array([[4.0, 1.0], [1.0, 1.0]])
    a = rng.multivariate_normal([0, 0], cov, 3000)
    b = rng.multivariate_normal([10, 0], cov, 3000)
    stats = ood.fit(np.r_[a, b], np.r_[np.zeros(3000), np.ones(3000)].astype(int), 2)
    point = np.array([[3.0, 2.0]])
    inv = np.linalg.inv(cov)
    want = min(np.sqrt(d @ inv @ d) for d in (point[0] - [0, 0], point[0] - [10, 0]))
    assert stats.score(point)[0] == pytest.approx(want, rel=0.05)  # estimated cov, not exact


# ------------------------------------------------------------------------ a tiny digit run


@pytest.fixture(scope="session")
def digit_run(tmp_path_factory) -> Path:
    """A real tiny run on scikit-learn's digits (30 per class for training), with export;
    trained once for both workers."""
    from imgclf.config import load_config
    from imgclf.train import train

    overrides = [
        "name=digits-conf",
        "data.source=digits",
        "data.max_per_class=30",
        "model.filters=[8,16]",
        "model.hidden=[32]",
        "train.epochs=4",
        "train.diagnostics=false",
        "train.export=true",
    ]
    config = load_config(None, overrides)
    return built_once(
        tmp_path_factory, "digits-conf", lambda out: train(config, out=out, verbose=0)
    )


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 1200×900 colour photo (scikit-image's astronaut, stretched) as JPEG."""
    import skimage.data

    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    Image.fromarray(skimage.data.astronaut()).resize((1200, 900)).save(path, quality=90)
    return path


def _test_images(run: Path) -> tuple[np.ndarray, np.ndarray]:
    from imgclf.config import load_config
    from imgclf.data import load_data

    test = load_data(load_config(run / runs.CONFIG)).test
    return np.asarray(test.x), np.asarray(test.y)


def test_temperature_is_fitted_on_the_validation_split(monkeypatch, tmp_path, folder_dataset):
    """Spy on the real fit: the logits it gets are the validation images', nothing else."""
    from imgclf.config import load_config
    from imgclf.data import load_data
    from imgclf.models.names import PROBABILITIES
    from imgclf.models.saving import load_run_model
    from imgclf.train import train

    seen, folded = [], []
    real, real_fold = calibration.fit_temperature, calibration.fold_temperature

    def spy(logits, labels):
        seen.append(np.asarray(labels).copy())
        return real(logits, labels)

    def fold_spy(model, temperature):
        folded.append(model.get_layer(PROBABILITIES).get_weights())
        real_fold(model, temperature)

    monkeypatch.setattr(calibration, "fit_temperature", spy)
    monkeypatch.setattr(calibration, "fold_temperature", fold_spy)
    config = load_config(None, tiny_overrides(folder_dataset))
    run = train(config, out=tmp_path / "r", verbose=0)
    splits = load_data(config)
    (labels,) = seen
    assert np.array_equal(labels, splits.val.y)  # the validation labels, in order
    # model.keras holds the trained output layer divided by T, folded exactly once.
    (before,) = folded
    t = runs.read_json(run / runs.METRICS)["calibration"]["temperature"]
    saved = load_run_model(run).get_layer(PROBABILITIES).get_weights()
    for w_saved, w_trained in zip(saved, before, strict=True):
        assert np.allclose(w_saved, w_trained / t, rtol=1e-6, atol=1e-7)
    metrics = runs.read_json(run / runs.METRICS)
    assert metrics["calibration"]["temperature"] == pytest.approx(real(*_val_logits(run, splits)))
    assert metrics["calibration"]["n_val"] == len(splits.val.y)
    assert metrics["calibration"]["n_test"] == metrics["test"]["n"]


def _val_logits(run: Path, splits) -> tuple[np.ndarray, np.ndarray]:
    """The run's raw validation logits, from model.keras with the temperature taken out."""
    from imgclf.evaluate import predict_proba
    from imgclf.models.saving import load_run_model

    model = load_run_model(run)
    t = runs.read_json(run / runs.METRICS)["calibration"]["temperature"]
    features = predict_proba(graph.feature_model(model), np.asarray(splits.val.x))
    return graph.logits_of(model, features) * t, splits.val.y


@pytest.mark.slow  # trains the digits run (fixture)
def test_calibrated_probabilities_sum_to_one_and_keep_the_argmax(digit_run: Path):
    from imgclf.evaluate import predict_proba
    from imgclf.models.saving import load_run_model
    from imgclf.predict.predictor import Predictor

    images, labels = _test_images(digit_run)
    metrics = runs.read_json(digit_run / runs.METRICS)
    t = metrics["calibration"]["temperature"]
    assert t != pytest.approx(1.0, abs=1e-3)  # else this test could not tell
    probs = Predictor.from_path(digit_run).predict_arrays(images)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    model = load_run_model(digit_run)
    raw = calibration.softmax(
        graph.logits_of(model, predict_proba(graph.feature_model(model), images)) * t
    )
    assert np.array_equal(probs.argmax(1), raw.argmax(1))
    assert np.allclose(probs, calibration.softmax(np.log(raw), t), atol=1e-5)
    # The figures in metrics.json are what the calibrated model gives on the test split.
    assert metrics["test"]["loss"] == pytest.approx(metrics["calibration"]["after"]["nll"], 1e-4)
    assert metrics["calibration"]["before"]["nll"] == pytest.approx(calibration.nll(raw, labels))
    assert (digit_run / runs.RELIABILITY_PLOT).stat().st_size > 0
    card = (digit_run / runs.MODEL_CARD).read_text()
    assert f"T = {t:.3f}" in card and "Out-of-distribution warning" in card


@pytest.mark.slow  # trains the digits run (fixture)
def test_every_artifact_agrees_with_the_run_on_calibrated_probabilities_and_ood(
    digit_run: Path, photo: Path
):
    from imgclf.export import onnx, tflite
    from imgclf.predict.predictor import Predictor

    tflite.export_run(digit_run)
    onnx.export_run(digit_run)
    images, _ = _test_images(digit_run)
    reference = Predictor.from_path(digit_run)
    noise = np.random.default_rng(1).integers(0, 256, (4, 28, 28, 1)).astype(np.float32)
    _, photo_pixels, _ = reference.decode_files([photo])
    batch = np.concatenate([images[:60].astype(np.float32), noise, photo_pixels])
    want = reference.predict_outputs(batch)
    threshold = reference.ood_threshold
    exports = runs.read_json(digit_run / runs.EXPORTS)
    for artifact in (runs.SAVED_MODEL, runs.TFLITE, runs.ONNX):
        got = Predictor.from_path(digit_run / artifact).predict_outputs(batch)
        assert np.abs(got["probabilities"] - want["probabilities"]).max() < 1e-4, artifact
        assert np.abs(got["ood_score"] - want["ood_score"]).max() < 1e-3 * threshold, artifact
        assert np.array_equal(got["ood"], want["ood"]), artifact
    for key in ("saved_model", "tflite", "onnx"):
        assert exports[key]["ood_parity"]["flag_disagreements"] == 0
    outputs = exports["saved_model"]["signatures"]["serve_bytes"]["outputs"]
    assert {"ood_score", "ood", "status"} <= set(outputs)


@pytest.mark.slow  # trains the digits run (fixture)
def test_uniform_noise_and_a_colour_photo_score_above_the_threshold(digit_run: Path, photo: Path):
    from imgclf.predict.predictor import Predictor

    predictor = Predictor.from_path(digit_run)
    noise = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1)).astype(np.float32)
    out = predictor.predict_outputs(noise)
    assert out["ood"].all() and (out["ood_score"] > predictor.ood_threshold).all()
    (p,), failures = predictor.predict_files([photo])
    assert not failures and p.ood and p.ood_score > predictor.ood_threshold
    metrics = runs.read_json(digit_run / runs.METRICS)["ood"]
    # The threshold is the validation quantile: about 5% of validation images are above it.
    assert metrics["val_false_alarm_rate"] <= 0.1
    assert metrics["threshold"] == pytest.approx(predictor.ood_threshold)


def _predict_cli(*args: str) -> Done:
    return run_command("imgclf-predict", *args)


@pytest.mark.slow  # trains the digits run (fixture)
def test_imgclf_predict_prints_the_ood_column_and_a_warning_line(digit_run: Path, photo: Path):
    sample = sorted((digit_run / runs.SAMPLES).glob("*.png"))[0]
    done = _predict_cli(str(digit_run), str(photo), str(sample), "--format", "json")
    assert done.returncode == 0, done.stderr
    records = {Path(r["image"]).name: r for r in json.loads(done.stdout)}
    assert records["photo.jpg"]["ood"] is True
    assert records[sample.name]["ood"] is False  # a test image of the run's own data
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "photo.jpg" in warnings[0]
    assert "doesn't look like the training data" in warnings[0]
    table = _predict_cli(str(digit_run), str(photo))
    header, row = table.stdout.splitlines()[:2]
    assert "ood" in header.split() and " !" in row  # the score column marks it


@pytest.mark.slow  # trains the digits run (fixture)
def test_a_tampered_or_deleted_ood_file_is_refused_in_one_line(digit_run: Path, tmp_path: Path):
    import shutil

    changed, deleted = tmp_path / "changed", tmp_path / "deleted"
    shutil.copytree(digit_run, changed)
    data = bytearray((changed / runs.OOD).read_bytes())
    data[-20] ^= 0xFF
    (changed / runs.OOD).write_bytes(bytes(data))
    shutil.copytree(digit_run, deleted)
    (deleted / runs.OOD).unlink()  # must not silently switch the warning off
    for copy in (changed, deleted):
        done = _predict_cli(str(copy), str(sorted((copy / runs.SAMPLES).glob("*.png"))[0]))
        assert done.returncode == 2, copy.name
        assert "Traceback" not in done.stderr
        (line,) = [x for x in done.stderr.splitlines() if x.startswith("error")]
        assert runs.OOD in line


def test_ood_statistics_that_do_not_fit_together_are_refused(tmp_path: Path):
    path = tmp_path / "ood.npz"
    np.savez(path, whiten=np.eye(3), shift=np.zeros(4), centres=np.zeros((2, 3)), threshold=1.0)
    with pytest.raises(ValueError, match="shapes"):
        ood.OODStats.load(path)
    np.savez(path, whiten=np.full((3, 3), np.nan), shift=np.zeros(3), centres=np.zeros((2, 3)),
             threshold=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="NaN"):
        ood.OODStats.load(path)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(Exception):  # noqa: B017  (load_run_stats turns any of them into one line)
        ood.OODStats.load(path)


def test_a_capped_fit_sample_keeps_every_class():
    from imgclf.confidence.split_outputs import stratified_subset

    labels = np.r_[np.zeros(10_000, int), np.ones(30, int), np.full(5, 2)]
    keep = stratified_subset(labels, 1_000, seed=0)
    counts = np.bincount(labels[keep])
    assert counts[1] == 30 and counts[2] == 5  # rare classes kept whole (under 50)
    assert 900 <= counts[0] <= 1_000 and len(np.unique(keep)) == len(keep)


def test_switched_off_there_is_no_temperature_and_no_detector(tmp_path: Path, folder_dataset):
    from imgclf.config import load_config
    from imgclf.predict.predictor import Predictor
    from imgclf.train import train

    overrides = [*tiny_overrides(folder_dataset), "train.calibrate=false", "train.ood=false"]
    run = train(load_config(None, overrides), out=tmp_path / "off", verbose=0)
    metrics = runs.read_json(run / runs.METRICS)
    assert metrics["calibration"] is None and metrics["ood"] is None
    assert not (run / runs.OOD).exists() and not (run / runs.RELIABILITY_PLOT).exists()
    predictor = Predictor.from_path(run)
    assert not predictor.has_ood
    (p,), _ = predictor.predict_files([sorted((run / runs.SAMPLES).glob("*.png"))[0]])
    assert p.ood is None and p.ood_score is None


@pytest.mark.slow  # trains the digits run (fixture)
def test_the_app_shows_the_badge_whatever_the_probability(monkeypatch, digit_run, photo):
    from streamlit.testing.v1 import AppTest

    from imgclf.ui import catalog

    root = digit_run.parent
    monkeypatch.setenv(catalog.RUNS_ENV, str(root))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.run()
    # built-once/ holds every shared run; pick this one (the newest is listed first).
    at.sidebar.selectbox(key="run").set_value(str(digit_run)).run()
    sample = sorted((digit_run / runs.SAMPLES).glob("*.png"))[0]
    at.file_uploader[0].set_value(
        [
            ("photo.jpg", photo.read_bytes(), "image/jpeg"),
            ("digit.png", sample.read_bytes(), "image/png"),
        ]
    ).run()
    assert not at.exception
    texts = [m.value for m in at.markdown]
    badges = [t for t in texts if "Doesn't look like the training data" in t]
    assert len(badges) == 1  # the photo, not the digit
    table = at.dataframe[0].value
    flags = dict(zip(table["image"], table["unlike_training_data"], strict=True))
    assert flags == {"photo.jpg": True, "digit.png": False}
    at.sidebar.radio(key="page").set_value("Evaluation").run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    ood = runs.read_json(digit_run / runs.METRICS)["ood"]
    assert shown["False alarms, validation"] == f"{ood['val_false_alarm_rate']:.1%}"
    assert "Temperature T" in shown


def test_features_too_wide_for_the_detector_skip_it_and_say_why(tmp_path: Path, folder_dataset):
    from imgclf.config import load_config
    from imgclf.predict.predictor import Predictor
    from imgclf.train import train

    # An MLP with no hidden layer: its head reads the raw pixels, 64*64*3 = 12,288 features.
    overrides = [*tiny_overrides(folder_dataset), "model.name=mlp", "model.hidden=[]",
                 "data.image_size=[64,64]"]  # fmt: skip
    run = train(load_config(None, overrides), out=tmp_path / "wide", verbose=0)
    metrics = runs.read_json(run / runs.METRICS)
    assert "12288 features" in metrics["ood"]["skipped"]
    assert ood.MAX_FEATURE_DIM < 12288 and not (run / runs.OOD).exists()
    assert "temperature" in metrics["calibration"]  # calibration does not need the detector
    assert not Predictor.from_path(run).has_ood


@pytest.mark.slow  # trains the digits run (fixture)
def test_the_detector_cannot_be_removed_and_exports_never_bless_a_changed_file(
    digit_run: Path, tmp_path: Path
):
    """Deleting ood.npz *and* its manifest entry is still caught (metrics.json, verified,
    records a detector); an export refuses to re-write the manifest over a changed file."""
    import shutil

    from imgclf.export import onnx
    from imgclf.predict.predictor import Predictor

    gone = tmp_path / "gone"
    shutil.copytree(digit_run, gone)
    (gone / runs.OOD).unlink()
    manifest = runs.read_json(gone / runs.MANIFEST)
    del manifest["files"][runs.OOD]
    (gone / runs.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(runs.IntegrityError, match="records an OOD detector"):
        Predictor.from_path(gone)

    edited = tmp_path / "edited"
    shutil.copytree(digit_run, edited)
    metrics = runs.read_json(edited / runs.METRICS)
    del metrics["ood"]
    (edited / runs.METRICS).write_text(json.dumps(metrics))
    before = (edited / runs.MANIFEST).read_bytes()
    with pytest.raises(runs.IntegrityError, match=runs.METRICS):
        onnx.export_run(edited)
    assert (edited / runs.MANIFEST).read_bytes() == before  # nothing re-blessed


@pytest.mark.slow  # trains the digits run (fixture)
def test_training_ends_with_a_calibration_and_ood_line(digit_run: Path):
    from imgclf.training.finish import confidence_summary

    metrics = runs.read_json(digit_run / runs.METRICS)
    line = confidence_summary(metrics)
    assert f"T = {metrics['calibration']['temperature']:.3f}" in line
    assert f"OOD threshold {metrics['ood']['threshold']:.2f}" in line
    assert confidence_summary({"calibration": None, "ood": None}) == ""


def test_a_detector_that_would_be_float32_round_off_is_not_kept():
    """A model that learned nothing (a saturated sigmoid net) gives nearly constant features;
    whitening them scales float32 round-off up to the size of the score itself."""

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    healthy = rng.normal(size=(600, 8)) + labels[:, None] * 3.0
    stuck = 0.5 + 1e-9 * rng.normal(size=(600, 8))  # the same vector for every image
    for features, small in ((healthy, True), (stuck, False)):
        stats = ood.fit(features[:400], labels[:400], 3)
        stats = ood.with_threshold(stats, stats.score(features[400:500]), 0.95)
        error = stats.float32_error(features[500:])
        assert (error <= ood.FLOAT32_LIMIT) is small, error


def test_a_temperature_at_the_end_of_its_range_is_not_used():
    """Every validation label is the model's least likely class: the likelihood improves all
    the way to probabilities of 1/K, T runs to the top of T_RANGE, and the run keeps its own
    probabilities and says why."""
    val_logits = np.random.default_rng(4).normal(0, 4, (6, 3))
    val_labels = val_logits.argmin(axis=1)
    test_logits, test_labels = _sampled(200, 3, 1.0, seed=5)
    assert calibration.fit_temperature(val_logits, val_labels) > 0.99 * calibration.T_RANGE[1]
    report = calibration.calibrate(val_logits, val_labels, test_logits, test_labels)
    assert "temperature" not in report and "after" not in report  # nothing folded, no figures
    assert report["skipped"].startswith("the validation likelihood kept improving up to")
    assert "on 6 validation images" in report["skipped"] and report["n_val"] == 6
    from imgclf.training.finish import confidence_summary

    line = confidence_summary({"calibration": report})
    assert line.startswith("calibration skipped: the validation likelihood kept improving up")


@pytest.mark.parametrize("margin", [5.0, 8.0, 30.0])
def test_a_validation_split_with_no_error_cannot_fit_a_temperature(margin: float):
    """Every validation image right with a margin: sharper is always better on them, so the
    search ends near the bottom of T_RANGE, wherever it stops (0.05 or a little above), and
    that is refused, with its own reason."""
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 4, 40)
    logits = rng.normal(0, 1, (40, 4))
    logits[np.arange(40), labels] += margin
    report = calibration.calibrate(logits, labels, *_sampled(200, 4, 1.0, seed=7))
    assert report["skipped"].startswith("the validation likelihood kept improving down to")
    assert "every one is already right" in report["skipped"]


def test_an_interior_temperature_is_kept():
    logits, labels = _sampled(500, 4, 0.3, seed=8)  # under-confident: the best T is about 0.3
    assert calibration.at_limit(logits, labels, calibration.fit_temperature(logits, labels)) is None
    assert calibration.at_limit(logits, labels, float("nan")).startswith(
        "the temperature fit failed"
    )


def test_too_few_validation_images_skip_the_detector_and_say_why():
    """Two validation images used to set a threshold that flagged 100% of the test images;
    under ood.MIN_THRESHOLD_IMAGES the detector is skipped with its reason, as calibration is
    when it cannot fit, and from that many on it is fitted."""
    from imgclf.confidence.fit import fit_confidence
    from imgclf.confidence.split_outputs import SplitOutputs
    from imgclf.config import load_config

    rng = np.random.default_rng(0)

    def split(n: int) -> SplitOutputs:
        labels = np.arange(n) % 3
        features = (rng.normal(size=(n, 4)) + labels[:, None] * 3).astype("float32")
        return SplitOutputs(np.arange(n), labels, rng.normal(size=(n, 3)), features)

    config = load_config(None)
    for n_val, fitted in ((2, False), (ood.MIN_THRESHOLD_IMAGES, True)):
        outputs = {"train": split(60), "val": split(n_val), "test": split(30)}
        found = fit_confidence(None, outputs, 3, config)
        assert (found.stats is not None) is fitted, n_val
        if not fitted:
            assert f"only {n_val} readable validation image(s)" in found.ood["skipped"]
