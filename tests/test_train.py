"""train() end to end on a tiny folder dataset: every run-directory file, honest metrics."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, run_command, tiny_overrides, write_folder_dataset

from imgclf import runs
from imgclf.config import load_config
from imgclf.train import train

RUN_FILES = (
    "config.yaml", "labels.json", "data_report.json", "history.csv", "model.keras",
    "metrics.json", "plots/curves.png", "plots/confusion.png", "saved_model/saved_model.pb",
    "saved_model/labels.json", "model_card.md", "exports.json",
)  # fmt: skip


def test_run_directory_holds_the_whole_contract(tiny_run: Path):
    for name in RUN_FILES:
        assert (tiny_run / name).is_file(), name
    assert json.loads((tiny_run / "labels.json").read_text()) == list(CLASSES)
    # config.yaml is exactly what ran: loading it gives the same config back.
    config = load_config(tiny_run / "config.yaml")
    assert config.name == "tiny" and config.train.epochs == 2
    assert not list(tiny_run.rglob(".*tmp*")), "temporary files left behind"
    # train.diagnostics=auto: on for a small model
    for name in ("diagnostics.json", "plots/gradients.png", "plots/activations.png"):
        assert (tiny_run / name).is_file(), name


def test_metrics_are_computed_on_the_held_out_test_split(tiny_run: Path):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    report = json.loads((tiny_run / "data_report.json").read_text())
    test = metrics["test"]
    assert set(test) >= {"loss", "accuracy", "top_k_accuracy", "k"}
    assert test["k"] == len(CLASSES)  # top_k capped at the number of classes
    assert metrics["counts"] == report["totals"]
    assert test["n"] == report["totals"]["test"] == sum(report["counts"]["test"].values())
    assert set(metrics["per_class"]) == set(CLASSES)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == test["n"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(test["accuracy"])
    for name, row in zip(CLASSES, matrix, strict=True):
        assert metrics["per_class"][name]["support"] == row.sum()
    # The per-image checks ran on the training split before fitting (data.audit).
    assert report["label_issues"]["method"].startswith("confident learning")
    assert "flagged" in report["outliers"]


def test_history_has_one_row_per_epoch(tiny_run: Path):
    with (tiny_run / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert row["phase"] == "train"
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
            assert float(row[key]) >= 0, key


def test_model_keras_loads_in_safe_mode_and_reproduces_metrics(tiny_run: Path):
    import keras

    from imgclf.data import load_data
    from imgclf.evaluate import evaluate

    model = keras.saving.load_model(tiny_run / "model.keras", safe_mode=True, compile=False)
    splits = load_data(load_config(tiny_run / "config.yaml"))
    metrics, _ = evaluate(model, splits.test.x, splits.test.y, splits.class_names, k=5)
    recorded = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(recorded["test"]["accuracy"])
    assert metrics["test"]["loss"] == pytest.approx(recorded["test"]["loss"], rel=1e-5)


@pytest.mark.slow
def test_training_learns_the_tiny_task(tmp_path: Path):
    """Not a smoke test: with a few more epochs the tiny CNN must beat chance clearly."""
    data = write_folder_dataset(tmp_path / "data", per_class=20, seed=3)
    config = load_config(None, [*tiny_overrides(data), "train.epochs=8", "model.dropout=0"])
    run = train(config, out=tmp_path / "run", verbose=0)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.8  # chance is 1/3


@pytest.mark.slow
def test_same_seed_gives_the_same_run(tmp_path: Path, folder_dataset: Path):
    overrides = [*tiny_overrides(folder_dataset), "model.name=mlp", "train.epochs=1",
                 "augment.flip=horizontal"]  # fmt: skip
    a = train(load_config(None, overrides), out=tmp_path / "a", verbose=0)
    b = train(load_config(None, overrides), out=tmp_path / "b", verbose=0)

    def losses(run: Path) -> list[tuple[str, ...]]:
        with (run / "history.csv").open() as fh:
            return [(r["loss"], r["accuracy"], r["val_loss"]) for r in csv.DictReader(fh)]

    assert losses(a) == losses(b)
    metrics_a = json.loads((a / "metrics.json").read_text())
    metrics_b = json.loads((b / "metrics.json").read_text())
    assert metrics_a["test"] == metrics_b["test"]


@pytest.mark.slow
def test_training_on_a_folder_with_bad_files_reports_exactly_them(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=8)
    (data / "circle" / "zero.jpg").write_bytes(b"")
    (data / "vstripes" / "fake.PNG").write_text("plain text")
    config = load_config(
        None, [*tiny_overrides(data), "model.name=mlp", "train.epochs=1", "train.diagnostics=false"]
    )
    run = train(config, out=tmp_path / "run", verbose=0)
    assert not (run / "diagnostics.json").exists()  # switched off
    report = json.loads((run / "data_report.json").read_text())
    assert sorted(s["file"] for s in report["skipped"]) == ["circle/zero.jpg", "vstripes/fake.PNG"]
    assert (run / "model.keras").is_file()


def test_atomic_path_keeps_the_old_artifact_when_writing_fails(tmp_path: Path):
    target = tmp_path / "model.keras"
    target.write_text("good")
    with pytest.raises(RuntimeError), runs.atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("disk full")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    folder = tmp_path / "saved_model"
    folder.mkdir()
    (folder / "a").write_text("old")
    with runs.atomic_path(folder) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["b"]


@pytest.mark.slow
def test_cli_trains_and_prints_the_run_directory_last(tmp_path: Path, folder_dataset: Path):
    out = tmp_path / "cli-run"
    overrides = [*tiny_overrides(folder_dataset), "model.name=mlp", "train.epochs=2"]
    # Without the test session's TF_CPP_MIN_LOG_LEVEL: what a user's shell has.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "imgclf.train", "--out", str(out), *overrides],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)
    # TensorFlow's C++ start-up lines are filtered out of stderr (imgclf.infra.console).
    noise = [ln for ln in result.stderr.splitlines() if ln[:5] in ("I0000", "W0000", "E0000")]
    assert noise == [] and "absl::InitializeLog" not in result.stderr, result.stderr[-2000:]
    # Not a terminal: one summary line per epoch, no progress bar redraws.
    assert "Epoch 2/2" in result.stdout and "\r" not in result.stdout
    assert sum("/step" in line for line in result.stdout.splitlines()) == 2
    assert (out / "model.keras").is_file()


def test_missing_folder_and_used_out_answer_before_tensorflow_loads(tmp_path: Path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("taken")
    missing = tmp_path / "missing"
    code = (
        "import sys; from imgclf.train import main\n"
        f"a = main(['data.source=folder', 'data.path={missing}'])\n"
        f"b = main(['--out', {str(tmp_path / 'used')!r}])\n"
        "print(a, b, 'tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.stdout.split() == ["2", "2", "False"], result.stderr
    first, second = result.stderr.strip().splitlines()
    assert first == (
        f"error: data.path: {missing} not found; expected a folder with one sub-folder of "
        "images per class"
    )
    assert "exists and is not empty" in second


def test_console_filter_drops_only_tensorflows_start_up_lines():
    from imgclf.infra.console import filter_lines, is_noise

    noise = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"I0000 00:00:1795999563.483563    5763 port.cc:153] oneDNN custom operations are on.",
        b"E0000 00:00:1795999938.682336    9354 cuda_platform.cc:52] failed call to cuInit: ...",
        b"W0000 00:00:1795999938.682336    9354 node_def_util.cc:682] NodeDef mentions ...",
    ]
    kept = [
        b"error: data.path: x not found",
        b"Traceback (most recent call last):",
        b"F0000 00:00:1795999938.682336    9354 fatal.cc:1] a fatal error is always shown",
        b"I0000 is how my file is called",
        b"test: accuracy 0.9000",
    ]
    assert all(is_noise(line) for line in noise)
    assert not any(is_noise(line) for line in kept)
    # TensorFlow's one two-line message: its second line has no prefix, and goes too.
    guard = b"I0000 00:00:1796003491.641571 6915 cpu_feature_guard.cc:227] This TensorFlow binary"
    lines = [guard, b"To enable the following instructions: AVX2 FMA, in other operations", b"ok"]
    assert filter_lines(lines) == ([b"ok"], False)
    assert filter_lines([b"To enable the following instructions: is my own line"])[0] != []


def test_data_errors_stop_before_a_run_directory_is_made(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "imgclf.train", "--out", str(tmp_path / "r"),
         *tiny_overrides(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "not found" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "r").exists()


def test_a_batch_larger_than_the_training_split_is_refused(folder_dataset: Path, tmp_path: Path):
    out = tmp_path / "run"
    overrides = [*tiny_overrides(folder_dataset), "train.batch_size=100000"]
    result = run_command("imgclf-train", *overrides, "--out", out)
    assert result.returncode == 2
    assert "train.batch_size=100000 is larger than the 21 training images" in result.stderr
    assert not out.exists()


def test_a_loss_that_becomes_nan_ends_the_run_at_that_epoch_with_its_reason(tmp_path: Path):
    """A real Keras fit whose loss turns NaN in its second epoch (a NaN target from then on):
    the divergence guard, placed after history.csv's callback as every phase places it, stops
    it there with one line naming the epoch, the phase and its learning rate. (Keras'
    TerminateOnNaN would stop quietly and the run would end `complete` on NaN weights.)"""
    import keras

    from imgclf.infra.errors import UserError
    from imgclf.training.phases import TrainingDiverged, divergence_guard, history_callback
    from imgclf.training.transfer import plan_phases

    (phase,) = plan_phases(load_config(None, ["train.learning_rate=0.5"]))
    history = history_callback(tmp_path / runs.HISTORY)

    def batches():  # two steps per epoch; from the second epoch on, the targets are NaN
        for step in range(10):
            target = np.nan if step >= 2 else 0.0
            yield np.ones((4, 2), "float32"), np.full((4, 1), target, "float32")

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(TrainingDiverged) as stopped:
        model.fit(
            batches(), epochs=5, steps_per_epoch=2, verbose=0,
            callbacks=[history, divergence_guard(history, phase)],
        )  # fmt: skip
    assert isinstance(stopped.value, UserError)  # one line on the command line, exit 2
    rows = runs.read_history(tmp_path / runs.HISTORY)
    assert len(rows) == 2 and np.isfinite(rows[0].loss) and np.isnan(rows[1].loss)
    assert "epoch 2 (train phase, learning rate 0.5)" in str(stopped.value)
    assert "lower train.learning_rate (e.g. 0.05)" in str(stopped.value)


def test_an_unwritable_destination_is_one_line_before_any_work(tiny_run: Path, tmp_path: Path):
    """A destination that cannot be written (a file in the way here; a read-only file system
    or a missing permission give their own reason the same way) is refused by imgclf-train
    and imgclf-export before any work, in one line, exit 2, instead of a traceback at the end."""
    import shutil

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run_command("imgclf-train", "--out", blocker / "run", "train.epochs=1")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert (
        line
        == f"error: cannot write under {blocker} (Not a directory): choose a folder you can write"
    )
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    done = run_command("imgclf-export", run, "--out", blocker / "saved")
    assert done.returncode == 2 and done.stderr.splitlines() == [line]


def test_class_names_that_sanitise_alike_get_distinct_file_names():
    """`x y`, `x_y` and `x?y` all became `x_y` in sample and worst-prediction file names, so a
    wrong prediction (true `x y`, predicted `x_y`) was named like a right one."""
    from imgclf.training.finish import safe_names

    names = safe_names(["x y", "x_y", "x?y", "cat", "dog/1"])
    assert names == {"x y": "x_y-0", "x_y": "x_y-1", "x?y": "x_y-2", "cat": "cat",
                     "dog/1": "dog_1"}  # fmt: skip
    assert len(set(names.values())) == len(names)


def test_the_end_of_run_line_shows_top_k_only_below_the_number_of_classes():
    """A 4-class run printed "top-4 1.0000": always true, so it says nothing."""
    from imgclf.training.finish import summary_lines

    test = {"accuracy": 0.9, "top_k_accuracy": 1.0, "loss": 0.3, "n": 40}
    four = {"per_class": {key: {} for key in "abcd"}, "calibration": None, "ood": None}
    assert "top-" not in summary_lines({**four, "test": {**test, "k": 4}}, None)
    ten = {**four, "per_class": {key: {} for key in "abcdefghij"}}
    assert "top-5 1.0000" in summary_lines({**ten, "test": {**test, "k": 5}}, None)
