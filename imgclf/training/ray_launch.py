"""`imgclf-train --ray N`: the run on N workers of a Ray cluster, through Ray Train's
`TensorflowTrainer` (the `[ray]` extra), which starts N worker processes and sets each one's
`TF_CONFIG`; each runs `imgclf.train.train` with `train.distribute: multiworker`, so the
training is imgclf's multi-worker loop (docs/distributed.md), and only the chief (worker 0)
writes the run directory.

    imgclf-train --ray 2 --config configs/photos_transfer.yaml data.path=/shared/photos

`RAY_ADDRESS` (Ray's own variable) names a running cluster; without it a local one is started
with N CPUs. The run directory is chosen here, before the workers start, so every worker and
this process agree on it; on a cluster of several machines it must be a path the chief's
machine can write (a shared disk, to read it from here), and `data.path` a path every worker
can read (docs/distributed.md: the data layout each worker needs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from imgclf import runs
from imgclf.infra.errors import ConfigError, UserError


def require_ray() -> None:
    """ConfigError naming the extra when Ray Train cannot be imported."""
    try:
        import ray.train.tensorflow  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"--ray needs Ray Train ({exc}); install it with pip install 'imgclf[ray]'"
        ) from None


def _worker_loop(settings: dict[str, Any]) -> None:
    """What each Ray worker runs: the config, validated again here, trained multi-worker."""
    from imgclf.config import Config
    from imgclf.training.cluster import is_chief
    from imgclf.training.distribute import make_strategy

    config = Config.model_validate(settings["config"])
    # Ray starts a worker in a folder of its own: relative paths (data.path, tracking folders)
    # mean what they meant where imgclf-train was typed, when that folder exists here.
    with contextlib.suppress(OSError):
        os.chdir(settings["cwd"])
    # First: before any other TensorFlow work of this process.
    make_strategy("multiworker", config.train.collective_timeout)
    train = settings["train"]  # imgclf.train.train (pickled by reference)
    # The chief speaks for the run; the other workers' lines would repeat it.
    verbose = settings["verbose"] if is_chief() else 0
    train(config, out=settings["out"], verbose=verbose, resume=settings["resume"])


def launch(
    train: Any, config: Any, workers: int, out: str | Path | None, runs_root: Path,
    verbose: int | str, resume: bool = False,
) -> Path:  # fmt: skip
    """Train `config` with `train` (imgclf.train.train) on `workers` Ray workers (see the module
    docstring); returns the run directory (the chief's), pointed at by `runs_root`/latest when
    it lies there. With `resume`, `out` is an interrupted multi-worker run (its config already
    checked by `resume.check_resumable`) that every worker continues. Raises ConfigError (no
    Ray, fewer than 1 worker, a run to resume that was not multi-worker) or UserError with the
    first line of a worker's error."""
    require_ray()
    if workers < 1:
        raise ConfigError(f"--ray {workers}: give the number of workers, at least 1")
    if resume:
        run_dir = Path(out).resolve()
        if config.train.distribute != "multiworker":
            raise ConfigError(
                f"--ray --resume {out}: the run trained in one process "
                f"(train.distribute={config.train.distribute}); resume it without --ray"
            )
    else:
        config = _as_multiworker(config)
        run_dir = runs.new_run_dir(config.name, out, runs_root).resolve()  # empty: train fills it
    error = _fit(train, config, workers, run_dir, verbose, resume)
    if error is not None:
        _failed(run_dir, f"the Ray run failed: {_first_line(error)}", workers)
    if Path(runs_root).resolve() in run_dir.parents:
        runs.point_latest(run_dir)
    return run_dir


def _as_multiworker(config: Any) -> Any:
    """`config` with train.distribute=multiworker, validated again: a refusal (e.g.
    learning_rate auto) is one line now, not a worker's error later."""
    from imgclf.config import build_config

    values = config.model_dump(mode="python")
    values["train"]["distribute"] = "multiworker"
    return build_config(values)


def _fit(
    train: Any, config: Any, workers: int, run_dir: Path, verbose: int | str, resume: bool
) -> BaseException | None:
    """Ray Train's TensorflowTrainer over `workers` workers, each running `_worker_loop`; the
    error it ended with, or None."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    try:
        if ray.is_initialized():
            pass
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=bool(verbose))
        else:  # a local cluster: a CPU per worker (+1 for Ray Train v1's trainer actor)
            ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=bool(verbose))
    except Exception as exc:  # an unreachable address, a socket path, a full /tmp
        if not resume:
            run_dir.rmdir()  # still empty: nothing of the run was written
        raise UserError(f"cannot start or reach Ray: {_first_line(exc)}") from None
    storage = tempfile.mkdtemp(prefix="imgclf-ray-")  # Ray's own results and logs
    trainer = TensorflowTrainer(
        _worker_loop,
        train_loop_config={
            "config": config.model_dump(mode="json"), "out": str(run_dir), "train": train,
            "cwd": os.getcwd(), "resume": resume,
            "verbose": 2 if verbose else 0,
        },
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=run_dir.name, storage_path=storage),
    )  # fmt: skip
    try:
        return trainer.fit().error
    except Exception as exc:  # Ray wraps a worker's error: its first line, never the trace
        return exc
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def _failed(run_dir: Path, reason: str, workers: int) -> None:
    """UserError `reason`, after the run directory is left honest: removed when nothing was
    written (a config or data error); a run whose chief was killed (still `running` on disk) is
    marked interrupted, resumable with `--ray N --resume RUN`; else the chief said why."""
    # A worker's own advice names the command without Ray: this one replaces it.
    reason = reason.split("; the run is left interrupted")[0]
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
    elif (run_dir / runs.STATE).is_file() and (run_dir / runs.CONFIG).is_file():
        killed = runs.read_json(run_dir / runs.STATE).get("state") == runs.RUNNING
        if killed:
            runs.set_state(run_dir, runs.INTERRUPTED, reason)  # its chief was killed
        # Only a run cut short can go on (not one the chief refused to resume, say).
        if killed or "WorkerLost" in (runs.read_state(run_dir).reason or ""):
            reason += f"; continue it with imgclf-train --ray {workers} --resume {run_dir}"
    raise UserError(reason)


def _first_line(exc: BaseException) -> str:
    """The first line of the error a worker raised (the lowest rank's, from Ray Train's
    WorkerGroupError), else of the innermost cause (Ray's wrappers add pages of context)."""
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        exc = failures[min(failures)]
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0].rstrip('.')}" if text else type(exc).__name__
