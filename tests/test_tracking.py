"""Tracking (imgclf/training/tracking.py): a transfer run with `train.tensorboard` and
`train.mlflow` (a folder store), interrupted in its second phase and resumed, read back with
TensorBoard's and MLflow's own readers; a tracking server that is down; the start-up errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_overrides

from imgclf import runs
from imgclf.infra import faults
from imgclf.training import tracking, tracking_uri


def _interrupt_at_epoch(n: int):
    """faults.point stand-in: Ctrl+C right after history.csv has epoch `n`'s row (before the
    tracking callbacks and the epoch's backup see it)."""
    seen = {"epoch": 0}
    real = faults.point

    def point(name: str) -> None:
        if name == "epoch":
            seen["epoch"] += 1
            if seen["epoch"] == n:
                raise KeyboardInterrupt
        real(name)

    return point


@pytest.fixture(scope="module")
def tracked(folder_dataset: Path, tiny_run: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(run, MLflow folder): head 2 epochs + fine-tune 2 epochs, Ctrl+C after the first
    fine-tune epoch's row, then `resume_run` to the end. Epochs 1-4 once each."""
    from imgclf.config import load_config
    from imgclf.train import RunInterrupted, resume_run, train

    base = tmp_path_factory.mktemp("tracking")
    store, run = base / "mlruns", base / "runs" / "tracked"
    config = load_config(
        None,
        [*tiny_overrides(folder_dataset), "name=tracked", f"model.weights={tiny_run}",
         "transfer.head_epochs=2", "transfer.fine_tune_epochs=2",
         "train.early_stopping.patience=0", "train.tensorboard=true", f"train.mlflow={store}"],
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(faults, "point", _interrupt_at_epoch(3))
        with pytest.raises(RunInterrupted):
            train(config, out=run, verbose=0)
    assert runs.read_state(run).state == runs.INTERRUPTED
    resume_run(run, verbose=0)
    return run, store


def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TF2 scalar summary in every event file of `folder`, by
    TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0}).Reload()
    return [(e.step, float(make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def test_tensorboard_has_one_point_per_epoch_across_phases_and_resume(tracked):
    run, _ = tracked
    history = runs.read_history(run / runs.HISTORY)
    assert [r.phase for r in history] == ["head", "head", "fine_tune", "fine_tune"]
    board = run / runs.TENSORBOARD
    loss = _scalars(board / "train", "epoch_loss")
    assert [step for step, _ in loss] == [1, 2, 3, 4]
    assert [v for _, v in loss] == pytest.approx([r.loss for r in history], rel=1e-4)
    rates = _scalars(board / "train", "epoch_learning_rate")
    assert [v for _, v in rates] == pytest.approx([r.learning_rate for r in history], rel=1e-4)
    assert [s for s, _ in rates] == [1, 2, 3, 4]
    val = _scalars(board / "validation", "epoch_accuracy")
    assert [s for s, _ in val] == [1, 2, 3, 4]
    # The event files are artifacts of the run like any other: listed in its manifest.
    listed = runs.read_json(run / runs.MANIFEST)["files"]
    assert any(name.startswith(f"{runs.TENSORBOARD}/") for name in listed)


def test_mlflow_holds_params_epochs_test_metrics_and_artifacts(tracked):
    from mlflow import MlflowClient

    run, store = tracked
    record = runs.read_json(run / runs.TRACKING)["mlflow"]
    assert record["tracking_uri"] == f"sqlite:///{store / tracking_uri.STORE_DB}"
    client = MlflowClient(record["tracking_uri"])
    experiment = client.get_experiment_by_name("tracked")
    (found,) = client.search_runs([experiment.experiment_id])  # the resume continued it
    assert found.info.run_id == record["run_id"] and found.info.run_name == run.name
    assert found.info.status == "FINISHED"
    config = runs.read_config(run)
    assert float(found.data.params["train.learning_rate"]) == config["train"]["learning_rate"]
    assert found.data.params["transfer.head_epochs"] == "2"
    history = runs.read_history(run / runs.HISTORY)
    val = client.get_metric_history(found.info.run_id, "val_accuracy")
    assert [m.step for m in val] == [1, 2, 3, 4]
    assert [m.value for m in val] == pytest.approx([r.val_accuracy for r in history], rel=1e-4)
    rates = client.get_metric_history(found.info.run_id, "learning_rate")
    assert [m.step for m in rates] == [1, 2, 3, 4]
    test = runs.read_json(run / runs.METRICS)["test"]
    assert found.data.metrics["test_accuracy"] == pytest.approx(test["accuracy"])
    assert found.data.metrics["test_loss"] == pytest.approx(test["loss"])
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert runs.MODEL_CARD in artifacts
    plots = {a.path for a in client.list_artifacts(found.info.run_id, runs.PLOTS)}
    assert runs.CURVES_PLOT in plots
    assert (store / tracking_uri.STORE_ARTIFACTS).is_dir()  # artifacts beside the database


def test_the_app_says_how_to_open_both(tracked):
    run, store = tracked
    (_, board_command), (mlflow_what, mlflow_command) = tracking.open_commands(run)
    assert board_command == f"tensorboard --logdir {run.resolve() / runs.TENSORBOARD}"
    record = runs.read_json(run / runs.TRACKING)["mlflow"]
    assert mlflow_command == f"mlflow ui --backend-store-uri sqlite:///{store / 'mlflow.db'}"
    assert record["run_id"] in mlflow_what and record["experiment_id"] in mlflow_what


def test_the_curves_page_shows_the_commands(monkeypatch, tracked):
    from streamlit.testing.v1 import AppTest

    from imgclf.ui import catalog

    run, _ = tracked
    monkeypatch.setenv(catalog.RUNS_ENV, str(run.parent))
    app = Path(__file__).resolve().parents[1] / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120).run()
    at.sidebar.radio(key="page").set_value("Training curves").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [c.value for c in at.code]
    assert shown == [command for _, command in tracking.open_commands(run)]


def test_a_tracking_server_that_is_down_costs_one_warning_not_the_run(
    folder_dataset: Path, tmp_path: Path, capfd
):
    from imgclf.config import load_config
    from imgclf.train import train

    uri = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
    config = load_config(
        None,
        [*tiny_overrides(folder_dataset), "model.name=mlp", "train.epochs=1",
         f"train.mlflow={uri}"],
    )  # fmt: skip
    start = time.perf_counter()
    run = train(config, out=tmp_path / "run", verbose=0)
    assert time.perf_counter() - start < 60  # MLflow's own retries would take minutes
    assert runs.read_state(run).complete
    assert not (run / runs.TRACKING).exists()
    warnings = [ln for ln in capfd.readouterr().err.splitlines() if "MLflow" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: MLflow tracking at {uri}")
    assert "([Errno 111] Connection refused); the run goes on without MLflow" in warnings[0]


def test_a_server_that_fails_mid_run_warns_once_then_is_left_alone(capsys):
    class Failing:
        calls = 0

        def log_batch(self, *args, **kwargs):
            Failing.calls += 1
            raise ConnectionError("connection reset by peer")

    mlrun = tracking.MlflowRun(Failing(), "http://tracker:5000", "abc")
    row = runs.HistoryRow(1, "train", loss=1.0, val_accuracy=0.5, learning_rate=0.01)
    mlrun.log_epoch(row)
    mlrun.log_epoch(row)
    mlrun.finish(Path("/nonexistent"))
    assert Failing.calls == 1 and mlrun.failed
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "http://tracker:5000" in line and "connection reset by peer" in line


def test_uri_forms():
    assert tracking_uri.store("/data/ml")[0] == "sqlite:////data/ml/mlflow.db"
    assert tracking_uri.store("/data/ml")[1] == "file:///data/ml/artifacts"
    assert tracking_uri.store("sqlite:////x/y.db") == ("sqlite:////x/y.db", "file:///x/artifacts")
    assert tracking_uri.store("http://host:5000") == ("http://host:5000", None)
    assert tracking_uri.scheme("postgresql+psycopg2://u@h/db") == "postgresql"
    assert tracking_uri.scheme("C:\\runs\\ml") == ""
    assert "pass" not in tracking_uri.shown("http://user:pass@host:5000")


def test_start_up_errors_are_one_line_before_tensorflow_loads(folder_dataset: Path):
    """A scheme MLflow does not know, the retired file store, and the [track] extra missing:
    exit 2, one line each, and neither TensorFlow nor MLflow imported."""
    tiny = [*tiny_overrides(folder_dataset)]
    code = (
        "import sys; from imgclf.train import main\n"
        f"tiny = {tiny!r}\n"
        "codes = [main([*tiny, 'train.mlflow=ftp://host/x']),\n"
        "         main([*tiny, 'train.mlflow=file:///tmp/mlruns'])]\n"
        "sys.modules['mlflow'] = None; sys.modules['tensorboard'] = None\n"
        "codes += [main([*tiny, 'train.mlflow=/tmp/ml']),\n"
        "          main([*tiny, 'train.tensorboard=true'])]\n"
        "print(*codes, 'tensorflow' in sys.modules, sys.modules.get('mlflow') is not None)"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_FILE_STORE"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.stdout.split() == ["2", "2", "2", "2", "False", "False"], result.stderr
    scheme, file_store, no_mlflow, no_board = result.stderr.strip().splitlines()
    assert "MLflow knows no tracking store 'ftp'" in scheme
    assert "MLFLOW_ALLOW_FILE_STORE" in file_store
    assert no_mlflow == "error: train.mlflow needs mlflow: run `pip install 'imgclf[track]'`"
    assert no_board == (
        "error: train.tensorboard needs tensorboard: run `pip install 'imgclf[track]'`"
    )


def test_a_run_that_fails_ends_its_mlflow_run_failed(folder_dataset: Path, tmp_path: Path):
    from mlflow import MlflowClient

    from imgclf.config import load_config
    from imgclf.train import train
    from imgclf.training.phases import TrainingDiverged

    store = tmp_path / "mlruns"
    config = load_config(None, [
        *tiny_overrides(folder_dataset), f"train.mlflow={store}", "train.learning_rate=10",
        "model.batch_norm=false", "train.optimizer=sgd",
    ])  # fmt: skip
    with pytest.raises(TrainingDiverged):  # the loss becomes NaN at rate 10 without BN
        train(config, out=tmp_path / "run", verbose=0)
    record = runs.read_json(tmp_path / "run" / runs.TRACKING)["mlflow"]
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    assert client.get_run(record["run_id"]).info.status == "FAILED"
