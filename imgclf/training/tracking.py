"""Tracking a run outside its folder too: TensorBoard event files (`train.tensorboard`) and an
MLflow tracking store (`train.mlflow`), both optional (`pip install 'imgclf[track]'`).

TensorBoard: Keras' own `keras.callbacks.TensorBoard` writes <run>/tensorboard/{train,
validation}/: each epoch's loss, accuracy and learning rate (no histograms, graph or profile).
MLflow: `mlflow.MlflowClient` with an explicit run id (no global active run): the flattened
config as params, each epoch's history.csv row as metrics, at the end metrics.json's test
figures, the model card and the PNG plots (FAILED or KILLED instead when the run fails or is
interrupted: `end_run`); the URI's checks are `tracking_uri`'s. Both count epochs as
history.csv does (from 1, on across the phases of a transfer run and after `--resume`). A
plain folder as `train.mlflow` is a SQLite store in it (mlflow.db, artifacts/ beside it);
other URIs are used as given. The MLflow
run id and URI are kept in the run's tracking.json: `--resume` continues the same MLflow run,
and the app's Curves page shows how to open it (`open_commands`).

A tracking server never stops a run: the first failed call warns in one line (the URI and the
error) and the run goes on without MLflow. So that an unreachable server answers at once,
imgclf's MLflow calls run with MLFLOW_HTTP_REQUEST_MAX_RETRIES and MLFLOW_HTTP_REQUEST_TIMEOUT
set to PROBE_LIMITS (opening the run) and CALL_LIMITS (later calls) unless the environment sets
them; MLflow's defaults (7 retries, 120 s each) would stall a run for minutes. Only the chief
of a multi-worker run tracks.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf import runs
from imgclf.infra.bounded import clip
from imgclf.infra.errors import require_packages
from imgclf.training.tracking_uri import check_uri, scheme, shown, store

if TYPE_CHECKING:
    import keras

    from imgclf.schema import Config

INSTALL = "pip install 'imgclf[track]'"
PROBE_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
CALL_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
_PARAMS_PER_CALL = 100  # MLflow's limit per log_batch
_LIVE: dict[str, Tracker] = {}  # run directory -> its tracker, from its first phase to its end


def preflight(config: Config) -> None:
    """What tracking needs, checked before TensorFlow loads: the `[track]` extra, and an
    MLflow URI it can use. Raises UserError / ConfigError (one line)."""
    if config.train.tensorboard:
        require_packages("train.tensorboard", INSTALL, "tensorboard")
    if config.train.mlflow is not None:
        check_uri(config.train.mlflow)
        require_packages("train.mlflow", INSTALL, "mlflow")


def flat_params(config: Config) -> dict[str, str]:
    """The config as MLflow params: dotted keys (`train.learning_rate`), each value a string
    (JSON for everything but strings: `[32, 64]`, `null`, `true`)."""

    def walk(tree: dict[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value if isinstance(value, str) else json.dumps(value)

    return dict(walk(config.model_dump(mode="json"), ""))


@contextlib.contextmanager
def _limits(values: dict[str, str]) -> Iterator[None]:
    """MLflow's HTTP retry and timeout settings as `values` for the block, except those the
    environment sets; restored after."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _json(path: Path) -> dict[str, Any]:
    """A JSON object of the run ({} when missing, unreadable or not an object)."""
    try:
        data = runs.read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def reason(exc: BaseException) -> str:
    """What went wrong, short: the operating system's words when the network failed
    (`[Errno 111] Connection refused`), else the error's first 200 characters."""
    text = f"{type(exc).__name__}: {exc}"
    found = re.search(r"\[Errno -?\d+\] [^\"'()]+", text)
    return found.group(0).strip() if found else clip(text, 200)


def _warn(uri: str, exc: BaseException) -> None:
    why = f"MLflow tracking at {shown(uri)} failed ({reason(exc)})"
    print(f"warning: {why}; the run goes on without MLflow", file=sys.stderr, flush=True)


@dataclass
class MlflowRun:
    """One MLflow run, logged through `client`; after a failed call it logs nothing more."""

    client: Any
    uri: str
    run_id: str
    failed: bool = False

    @contextlib.contextmanager
    def guarded(self, limits: dict[str, str] = CALL_LIMITS) -> Iterator[None]:
        """Run the block; on any error warn (one line) and log nothing more (`failed`)."""
        try:
            with _limits(limits):
                yield
        except Exception as exc:  # a network neighbour's answer never ends the run
            self.failed = True
            _warn(self.uri, exc)

    def log_epoch(self, row: runs.HistoryRow) -> None:
        """The figures of one history.csv row, at step = its epoch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(row.get(key)), now, row.epoch)
            for key in EPOCH_METRICS
            if row.get(key) is not None
        ]
        if metrics and not self.failed:
            with self.guarded():
                self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path) -> None:
        """The test figures of metrics.json (numbers only, as `test_<name>`), the model card
        and the PNG plots; then the run is FINISHED."""
        from mlflow.entities import Metric

        test = _json(run_dir / runs.METRICS).get("test")
        now = int(time.time() * 1000)
        figures = [
            Metric(f"test_{k}", float(v), now, 0)
            for k, v in (test if isinstance(test, dict) else {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if self.failed:
            return
        with self.guarded():
            if figures:
                self.client.log_batch(self.run_id, metrics=figures)
            if (run_dir / runs.MODEL_CARD).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / runs.MODEL_CARD))
            for plot in sorted((run_dir / runs.PLOTS).glob("*.png")):
                self.client.log_artifact(self.run_id, str(plot), runs.PLOTS)
            self.client.set_terminated(self.run_id, "FINISHED")


def _experiment_id(client: Any, name: str, artifacts: str | None) -> str:
    """The id of experiment `name`, made (with `artifacts` as its location) if it is new."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except Exception:  # made meanwhile by another run
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def open_mlflow(run_dir: Path, config: Config, create: bool = True) -> MlflowRun | None:
    """The run's MLflow run: the one its tracking.json names (a resumed run), else, with
    `create`, a new one (experiment: the config's `name`; run name: the run folder's) with
    the config as params, then recorded in tracking.json. None when the store fails (warned)."""
    record = _json(run_dir / runs.TRACKING).get("mlflow")
    record = record if isinstance(record, dict) else {}
    uri, artifacts = store(config.train.mlflow)
    resumed = all(isinstance(record.get(k), str) for k in ("tracking_uri", "run_id"))
    if resumed:
        uri = record["tracking_uri"]
    elif not create:
        return None
    mlrun = MlflowRun(None, uri, record["run_id"] if resumed else "")
    experiment = record.get("experiment_id")
    with mlrun.guarded(PROBE_LIMITS):
        from mlflow import MlflowClient

        if scheme(config.train.mlflow) == "" and not resumed:  # a folder store: make it
            Path(config.train.mlflow).expanduser().mkdir(parents=True, exist_ok=True)
        mlrun.client = MlflowClient(tracking_uri=uri)
        if resumed:  # also the probe: the run still exists
            mlrun.client.update_run(mlrun.run_id, status="RUNNING")
        else:
            experiment = _experiment_id(mlrun.client, config.name, artifacts)
            made = mlrun.client.create_run(experiment, run_name=run_dir.resolve().name)
            mlrun.run_id = made.info.run_id
            _log_params(mlrun, config)
    if mlrun.failed:
        return None
    if not resumed:
        entry = {"tracking_uri": uri, "experiment": config.name, "experiment_id": experiment,
                 "run_id": mlrun.run_id}  # fmt: skip
        runs.write_json(run_dir / runs.TRACKING, {"mlflow": entry})
    return mlrun


def _log_params(mlrun: MlflowRun, config: Config) -> None:
    from mlflow.entities import Param

    params = [Param(key, value) for key, value in flat_params(config).items()]
    for start in range(0, len(params), _PARAMS_PER_CALL):
        mlrun.client.log_batch(mlrun.run_id, params=params[start : start + _PARAMS_PER_CALL])


@dataclass
class Tracker:
    """What one run tracks: TensorBoard's folder and the MLflow run (each None when off)."""

    tensorboard: Path | None = None
    mlflow: MlflowRun | None = None
    history: Any = field(default=None, repr=False)  # the run's history.csv callback

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """A phase's callbacks (new ones per `fit`), to follow the history.csv callback."""
        board = self.tensorboard
        made = [] if board is None else [tensorboard_callback(board, self.history)]
        return made + ([] if self.mlflow is None else [mlflow_callback(self.mlflow, self.history)])


def start(runner: Any) -> Tracker:
    """The tracker of the run `runner` (a phases.PhaseRunner) trains, as its config asks
    (nothing on a worker other than the chief)."""
    p, tcfg = runner.prepared, runner.config.train
    tracker = Tracker(history=runner.history)
    if p.chief and tcfg.tensorboard:
        tracker.tensorboard = p.run_dir / runs.TENSORBOARD
    if p.chief and tcfg.mlflow is not None:
        tracker.mlflow = open_mlflow(p.run_dir, runner.config)
    _LIVE[str(p.run_dir.resolve())] = tracker
    return tracker


def phase_callbacks(runner: Any) -> list[keras.callbacks.Callback]:
    """The tracking callbacks of a phase's fit; the first phase starts the run's tracker
    (kept in `runner.tracker`)."""
    if runner.tracker is None:
        runner.tracker = start(runner)
    return runner.tracker.callbacks()


def finish_run(run_dir: Path, config: Config) -> None:
    """The end of a run (metrics.json, the model card and plots written): the MLflow run gets
    the test figures and artifacts and is FINISHED. A resumed run whose phases had all ended
    opens its MLflow run here."""
    tracker = _LIVE.pop(str(run_dir.resolve()), None)
    mlrun = tracker.mlflow if tracker is not None else None
    if tracker is None and config.train.mlflow is not None:
        mlrun = open_mlflow(run_dir, config, create=False)
    if mlrun is not None:
        mlrun.finish(run_dir)


def end_run(run_dir: Path, status: str) -> None:
    """A run that failed (`FAILED`) or was interrupted (`KILLED`; resuming it continues the same
    MLflow run, FINISHED at its end): its MLflow run says so instead of RUNNING for ever."""
    tracker = _LIVE.pop(str(Path(run_dir).resolve()), None)
    mlrun = tracker.mlflow if tracker is not None else None
    if mlrun is not None and not mlrun.failed:
        with mlrun.guarded():
            mlrun.client.set_terminated(mlrun.run_id, status)


def tensorboard_callback(log_dir: Path, history: Any) -> keras.callbacks.Callback:
    """Keras' TensorBoard callback, epoch scalars only, at step = the run's epoch (history's
    last row), flushed every epoch (TensorBoard follows a run live; a killed run keeps its
    epochs)."""
    import keras

    class RunTensorBoard(keras.callbacks.TensorBoard):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            step = history.rows[-1].epoch if history.rows else epoch + 1
            super().on_epoch_end(step, logs)
            for writer in self._writers.values():
                writer.flush()

        def on_test_end(self, logs: dict | None = None) -> None:
            # Keras would add `evaluation_*_vs_iterations` at the optimizer's step, which
            # starts again with each phase's optimizer; the epoch scalars hold the same.
            return

    return RunTensorBoard(
        log_dir=str(log_dir), histogram_freq=0, write_graph=False, write_images=False,
        update_freq="epoch", profile_batch=0,
    )  # fmt: skip


def mlflow_callback(mlrun: MlflowRun, history: Any) -> keras.callbacks.Callback:
    """Each epoch's history.csv row to the MLflow run."""
    import keras

    class MlflowEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if history.rows:
                mlrun.log_epoch(history.rows[-1])

    return MlflowEpochs()


def open_commands(run_dir: str | Path) -> list[tuple[str, str]]:
    """(what, command or address) for each tracker the run wrote to: `tensorboard --logdir
    ...`, and the MLflow UI with the run's address (for the app's Curves page)."""
    run_dir = Path(run_dir).resolve()
    found = []
    if (run_dir / runs.TENSORBOARD).is_dir():
        logdir = shlex.quote(str(run_dir / runs.TENSORBOARD))
        found.append(("TensorBoard (loss, accuracy, learning rate per epoch)",
                      f"tensorboard --logdir {logdir}"))  # fmt: skip
    entry = _json(run_dir / runs.TRACKING).get("mlflow")
    entry = entry if isinstance(entry, dict) else {}
    uri, run_id, exp = (entry.get(k) for k in ("tracking_uri", "run_id", "experiment_id"))
    if not all(isinstance(v, str) for v in (uri, run_id, exp)):
        return found
    page = f"#/experiments/{urllib.parse.quote(exp)}/runs/{urllib.parse.quote(run_id)}"
    if scheme(uri) in ("http", "https"):
        found.append((f"MLflow run {run_id} on the tracking server", f"{shown(uri)}/{page}"))
        return found
    env = "MLFLOW_ALLOW_FILE_STORE=true " if scheme(uri) == "file" else ""
    found.append((
        f"MLflow run {run_id}: start the UI, then open http://127.0.0.1:5000/{page}",
        f"{env}mlflow ui --backend-store-uri {shlex.quote(shown(uri))}",
    ))  # fmt: skip
    return found
