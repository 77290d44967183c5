"""The search itself: KerasTuner's oracles (Bayesian optimisation with a Gaussian process,
random search, Hyperband; O'Malley et al., KerasTuner, 2019) choose the values, and every trial
is a real imgclf run (`imgclf.train.train`) under the runs root, named `<search>-trial-<id>`,
so the app's Compare page and `imgclf-compare` show the trials like any runs.

    objective      metrics.json `validation` of the trial's final model (accuracy, or loss):
                   the validation split only; the test split never takes part in choosing
    the search     <out>/search.json   every trial: its values, run, validation and test figures
                   <out>/best.yaml     the best trial's whole config (`imgclf-train --config`
                                       trains it again, with the same result on the same machine)
                   <out>/keras_tuner/  KerasTuner's own state: running the same command again
                                       resumes the search (an interrupted trial's run resumes)
    Hyperband      trains each candidate for the epochs Hyperband gives (`train.epochs`), from
                   scratch each time (it does not continue a smaller trial's weights)

Trials with the same `data.*` section (and seed) share one loaded and decoded copy of the data
in this process, and folder data keeps its decoded cache on disk between processes.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imgclf import runs
from imgclf.config import dump_config, load_config
from imgclf.infra.errors import ConfigError, UserError
from imgclf.tuning.space import Dimension

SEARCH = "search.json"
BEST = "best.yaml"
STATE = "keras_tuner"
ALGORITHMS = ("bayesian", "random", "hyperband")
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min"}


@dataclass
class Search:
    """One search: the base recipe (file and overrides), the dimensions, where it writes."""

    config: str | None
    overrides: list[str]
    dims: list[Dimension]
    out: Path
    runs_root: Path
    objective: str = "val_accuracy"
    verbose: bool = True
    fingerprint: str = ""  # what the search is (space, recipe, algorithm, objective)
    last_failure: str = ""  # the last failed trial's reason
    trials: list[dict[str, Any]] = field(default_factory=list)
    _data: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.out.name

    def load_record(self) -> None:
        """The trials of an earlier start of this search; UserError when `out` holds a search
        of another space, recipe, algorithm or objective (it would silently mix them)."""
        path = self.out / SEARCH
        record = runs.read_json(path) if path.is_file() else {}
        if record and record.get("fingerprint") != self.fingerprint:
            raise UserError(
                f"{self.out} holds a search of another space, recipe, algorithm or objective; "
                "give a new --out, or delete that folder to start it again"
            )
        self.trials = record.get("trials", [])

    def run_trial(self, trial_id: str, values: dict[str, Any]) -> dict[str, float]:
        """Train (or resume, or read back) the run of one trial; its validation figures."""
        from imgclf.train import train

        # Hyperband's own entries (tuner/epochs, tuner/initial_epoch, tuner/bracket, ...):
        # only the epochs are a config key; each candidate trains from scratch.
        searched = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        if "tuner/epochs" in values:
            searched["train.epochs"] = int(values["tuner/epochs"])
        overrides = [*self.overrides, *(f"{k}={v}" for k, v in searched.items())]
        run = self.runs_root / f"{self.name}-trial-{trial_id}"
        # The recipe's own name stays (one MLflow experiment for the whole search); the run
        # folder carries the trial's.
        config = load_config(self.config, overrides)
        began = time.perf_counter()
        state = runs.read_state(run) if runs.in_run(run) else None
        # A complete run of this config finished before an interruption reached KerasTuner's
        # record; an interrupted one continues; anything else starts afresh.
        same = state is not None and _same(run, config)
        if not same and (run / runs.CONFIG).exists():
            raise SearchStopped(
                f"{run} exists and holds another config (another search's trial?); give this "
                "search another --out name, or move that run"
            )
        done = same and state.complete
        if not done and not (same and state.state == runs.INTERRUPTED and _resumed(run)):
            if run.exists():  # a trial that failed or never got going: its own leftovers
                shutil.rmtree(run)
            train(config, out=run, verbose=0, splits=self._splits(config))
        figures = runs.read_json(run / runs.METRICS)
        self._record(trial_id, values, run, figures, time.perf_counter() - began)
        validation = figures["validation"]
        if validation["accuracy"] is None:
            raise UserError(f"{run}: no validation images, nothing to compare trials on")
        return {"val_accuracy": validation["accuracy"], "val_loss": validation["loss"]}

    def _splits(self, config: Any) -> Any:
        """The loaded data of `config`, shared by trials with the same data section and seed."""
        from imgclf.data import load_data

        key = f"{config.seed}:{config.data.model_dump_json()}"
        if key not in self._data:
            self._data = {key: load_data(config)}  # one copy at a time: bounded memory
        return self._data[key]

    def _record(self, trial_id: str, values: dict, run: Path, figures: dict, seconds: float):
        row = {
            "trial": trial_id,
            "values": {k: _plain(v) for k, v in values.items() if not k.startswith("tuner/")},
            "epochs": values.get("tuner/epochs"),
            "run": str(run),
            "val_accuracy": figures["validation"]["accuracy"],
            "val_loss": figures["validation"]["loss"],
            "test_accuracy": figures["test"]["accuracy"],  # reported, never used to choose
            "seconds": round(seconds, 1),
        }
        self.trials = [t for t in self.trials if t["trial"] != trial_id] + [row]
        record = {"objective": self.objective, "fingerprint": self.fingerprint}
        runs.write_json(self.out / SEARCH, {**record, "trials": self.trials})
        self._write_best()
        if self.verbose:
            shown = ", ".join(f"{k}={v}" for k, v in row["values"].items())
            shown += f", {row['epochs']} epochs (Hyperband)" if row["epochs"] else ""
            print(
                f"trial {trial_id}: {shown} -> val_accuracy {row['val_accuracy']:.4f}, "
                f"val_loss {row['val_loss']:.4f} ({row['seconds']:.0f} s)",
                flush=True,
            )

    def best(self) -> dict[str, Any] | None:
        """The best trial so far by the objective (ties: the earlier trial)."""
        if not self.trials:
            return None
        sign = 1 if OBJECTIVES[self.objective] == "max" else -1
        return max(self.trials, key=lambda t: (sign * t[self.objective], -int(t["trial"])))

    def _write_best(self) -> None:
        best = self.best()
        config = (Path(best["run"]) / runs.CONFIG).read_text(encoding="utf-8")
        header = (
            f"# The best trial of imgclf-tune search {self.name} (trial {best['trial']}, "
            f"{self.objective} {best[self.objective]:.4f} on validation); its run: {best['run']}\n"
        )
        runs.write_text(self.out / BEST, header + config)


def _plain(value: Any) -> Any:
    """A trial's value as JSON: a choice's YAML text as its value, NumPy floats as floats."""
    if isinstance(value, str):
        return yaml.safe_load(value)
    return float(value) if isinstance(value, float) else value


def _same(run: Path, config: Any) -> bool:
    """Whether `run` was started with exactly `config` (its config.yaml)."""
    try:
        return (run / runs.CONFIG).read_text(encoding="utf-8") == dump_config(config)
    except OSError:
        return False


def _resumed(run: Path) -> bool:
    """Continue an interrupted trial's run; False when it cannot be resumed (then it is
    trained again from the start). An error while it trains fails the trial."""
    from imgclf.train import resume_run
    from imgclf.training.resume import check_resumable

    try:
        check_resumable(run)
    except UserError:
        return False
    resume_run(run, verbose=0)
    return True


class SearchStopped(UserError):
    """A problem no other trial can avoid: the search stops, in one line."""


def make_oracle(algorithm: str, dims: list[Dimension], objective: str, trials: int, cfg: Any):
    """The KerasTuner oracle of `algorithm` over `dims` (no other entries allowed)."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for dim in dims:
        if dim.kind == "choice":
            hp.Choice(dim.key, list(dim.values), ordered=False)
        elif dim.kind == "int" and dim.log:  # KerasTuner's log ints take no additive step
            hp.Int(dim.key, int(dim.low), int(dim.high), sampling="log")
        elif dim.kind == "int":
            hp.Int(dim.key, int(dim.low), int(dim.high), step=int(dim.step or 1))
        else:
            hp.Float(dim.key, dim.low, dim.high, step=dim.step,
                     sampling="log" if dim.log else "linear")  # fmt: skip
    common = {
        "objective": kt.Objective(objective, OBJECTIVES[objective]),
        "seed": cfg.seed,
        "hyperparameters": hp,
        "allow_new_entries": False,
        "tune_new_entries": False,
        "max_consecutive_failed_trials": 3,
    }
    if algorithm == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(max_trials=trials, **common)
    if algorithm == "random":
        return kt.oracles.RandomSearchOracle(max_trials=trials, **common)
    if cfg.model.pretrained:
        raise ConfigError(
            "--algorithm hyperband varies train.epochs, and a transfer recipe trains "
            "transfer.head_epochs and fine_tune_epochs: use --algorithm bayesian or random"
        )
    if cfg.train.epochs < 3:
        raise ConfigError("--algorithm hyperband needs train.epochs of 3 or more (its maximum)")
    return kt.oracles.HyperbandOracle(max_epochs=cfg.train.epochs, factor=3, **common)


def fingerprint(search: Search, algorithm: str, base: Any) -> str:
    """What the search is, as a hash: its dimensions, the base recipe, algorithm, objective."""
    import dataclasses
    import hashlib
    import json

    what = [[dataclasses.asdict(d) for d in search.dims], dump_config(base), algorithm]
    return hashlib.sha256(json.dumps([*what, search.objective]).encode()).hexdigest()


def check_base(search: Search, base: Any) -> None:
    """Before any trial: what would fail every trial alike (a missing data folder, a missing
    tracking extra, a search folder that is a file). Raises UserError."""
    from imgclf.training.prepare import preflight

    preflight(base)
    if search.out.exists() and not search.out.is_dir():
        raise UserError(f"--out {search.out} is a file; give a folder for the search")


def run_search(search: Search, algorithm: str, trials: int) -> dict[str, Any] | None:
    """Run (or resume) the search to `trials` trials; returns the best trial's row. Raises
    UserError (one line) when the search cannot start, or stops (three trials in a row failed,
    KerasTuner's rule; a trial run is in the way)."""
    import keras_tuner as kt

    base = load_config(search.config, search.overrides)
    check_base(search, base)
    oracle = make_oracle(algorithm, search.dims, search.objective, trials, base)
    search.fingerprint = fingerprint(search, algorithm, base)

    class Tuner(kt.engine.base_tuner.BaseTuner):
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            try:
                return search.run_trial(trial.trial_id, dict(trial.hyperparameters.values))
            except SearchStopped as exc:
                raise kt.errors.FatalError(str(exc)) from None
            except UserError as exc:  # an impossible combination: a failed trial, one line
                search.last_failure = f"trial {trial.trial_id}: {exc}"
                if search.verbose:
                    print(f"trial {trial.trial_id} failed: {exc}", flush=True)
                raise kt.errors.FailedTrialError(str(exc)) from None

        def save_model(self, *args: Any, **kwargs: Any) -> None:
            """The trial's run directory holds its model."""

        def load_model(self, trial: Any) -> None:
            """Trials are runs: open them with imgclf.runs.Run."""

    search.load_record()
    search.out.mkdir(parents=True, exist_ok=True)
    tuner = Tuner(oracle, directory=str(search.out), project_name=STATE, overwrite=False)
    try:
        tuner.search(verbose=0)
    except kt.errors.FatalError as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:  # KerasTuner: too many consecutive failed trials
        if "consecutive failures" not in str(exc):
            raise
        raise UserError(
            f"the search stopped: three trials in a row failed (last, {search.last_failure})"
        ) from None
    return search.best()
