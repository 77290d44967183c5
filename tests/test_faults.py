"""Runs that survive faults and fail closed: a training killed (SIGKILL, SIGTERM, Ctrl+C) at
named moments leaves no run any reader trusts, and `--resume` finishes it with the uninterrupted
run's metrics. (Tampered runs: test_runs.py; bad input: the test file of the module that reads
it.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import forked
import pytest
from conftest import run_command, tiny_overrides, write_folder_dataset

from imgclf import runs
from imgclf.infra.faults import FAULT_ENV

# Diagnostics on: their forward pass draws dropout masks too, which a resume must restore.
FAST = [
    "model.name=mlp", "train.epochs=3", "train.early_stopping.patience=0",
    "train.diagnostics=auto",
]  # fmt: skip


def _env(fault: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    return {**env, FAULT_ENV: fault} if fault else env


def _train(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """`imgclf-train *args` in its own process (forked with TensorFlow already imported)."""
    return forked.run("imgclf-train", *args, env=_env(fault))


def _train_here(*overrides: str, out: Path) -> Path:
    """An uninterrupted run, trained in this process (no second TensorFlow import)."""
    from imgclf.config import load_config
    from imgclf.train import train

    return train(load_config(None, list(overrides)), out=out, verbose=0)


def _resume_here(run: Path) -> None:
    from imgclf.train import resume_run

    resume_run(run, verbose=0)


def _assert_nothing_trusts(run: Path) -> None:
    from imgclf.predict.predictor import Predictor
    from imgclf.ui import catalog

    for path in run.rglob("*.json"):  # every file present is whole (atomic writes)
        if not any(part.startswith(".") for part in path.relative_to(run).parts):
            json.loads(path.read_text())
    if (run / runs.MODEL).exists():
        assert zipfile.is_zipfile(run / runs.MODEL)
    assert runs.read_state(run).state == runs.INTERRUPTED
    (entry,) = [e for e in catalog.list_runs(run.parent) if e.path == run]
    assert entry.state == runs.INTERRUPTED and "imgclf-train --resume" in entry.refusal()
    with pytest.raises(runs.RunNotComplete, match=r"interrupted.*--resume"):
        Predictor.from_path(run)


def _test_metrics(run: Path) -> dict:
    return json.loads((run / runs.METRICS).read_text())["test"]


def _kill_at_each(overrides: list[str], run: Path, faults: list[str], check) -> None:
    """Start a new run killed (SIGKILL) at faults[0], then `--resume` it killed at each next
    fault, calling `check(run)` after every kill."""
    for fault in faults:
        args = ["--resume", str(run)] if run.exists() else [*overrides, "--out", str(run)]
        killed = _train(*args, fault=fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr[-2000:])
        check(run)


# Every moment the issue names, in the order training reaches them. A new run is killed at
# the first; each `--resume` is killed at the next, so one run meets them all (and is resumed
# five times) before the last resume finishes it.
MOMENTS = ["setup", "epoch:1", "model", "saved_model", "manifest"]


@pytest.mark.slow
def test_a_kill_at_each_moment_leaves_nothing_trusted_and_resume_finishes_it(
    folder_dataset: Path, tmp_path: Path
):
    overrides = [*tiny_overrides(folder_dataset), *FAST, "train.export=true"]
    # The reference needs only its metrics, which are computed before the export.
    reference = _train_here(*overrides, "train.export=false", out=tmp_path / "reference")
    run = tmp_path / "run"
    _kill_at_each(overrides, run, MOMENTS, _assert_nothing_trusts)
    _resume_here(run)
    assert runs.read_state(run).state == runs.COMPLETE
    assert _test_metrics(run) == _test_metrics(reference)  # bit for bit: no augmentation
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no debris left


def _transfer(folder_dataset: Path, tiny_run: Path, cached: str) -> list[str]:
    return [
        *tiny_overrides(folder_dataset), f"model.weights={tiny_run}",
        "transfer.head_epochs=2", "transfer.fine_tune_epochs=2",
        "train.early_stopping.patience=0", f"transfer.cache_features={cached}",
        "train.diagnostics=auto",
    ]  # fmt: skip


@pytest.mark.slow
def test_resume_of_a_transfer_run_in_either_phase_gives_the_same_metrics(
    folder_dataset: Path, tiny_run: Path, tmp_path: Path
):
    """Killed in the head phase (on cached features) after its second epoch's row, before that
    epoch's backup: the resume continues from the first epoch's backup and is killed again in
    fine-tuning (trained through Keras' fit) after that phase's first epoch; resumed to the end.
    (The epoch failpoint fires before the epoch's backup, so each kill loses an epoch. A kill
    at a step backup is test_step_backups_after_a_resume_keep_counting_epochs.)"""
    kills = ["epoch:2", "epoch:2"]
    transfer = _transfer(folder_dataset, tiny_run, "auto")
    whole = _train_here(*transfer, out=tmp_path / "whole")
    cut = tmp_path / "cut"

    def interrupted(run: Path) -> None:
        assert runs.read_state(run).state == runs.INTERRUPTED

    _kill_at_each(transfer, cut, kills, interrupted)
    phases = [row.phase for row in runs.read_history(cut / runs.HISTORY)]
    assert "head" in phases and "fine_tune" in phases  # each phase was cut
    _resume_here(cut)
    assert _test_metrics(cut) == _test_metrics(whole)
    history = [(run / runs.HISTORY).read_text().splitlines() for run in (cut, whole)]
    assert len(history[0]) == len(history[1]) == 1 + 4


@pytest.mark.slow  # a process of its own
def test_sigterm_leaves_an_interrupted_run_and_names_the_resume_command(
    folder_dataset: Path, tmp_path: Path
):
    run = tmp_path / "run"
    args = [*tiny_overrides(folder_dataset), "model.name=mlp", "train.epochs=500",
            "train.early_stopping.patience=0", "--out", str(run)]  # fmt: skip
    # 500 epochs and no early stop: still training when the signal comes (a tiny run that
    # stopped early could finish first, and exit 0, before SIGTERM lands).
    proc, log = forked.start("imgclf-train", *args, env=_env(None))
    while not (run / runs.HISTORY).exists():  # training has begun
        assert proc.is_alive(), log.read_text()
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join()
    err = log.read_text()
    log.unlink()
    assert proc.exitcode == 130, err[-2000:]
    assert f"imgclf-train --resume {run}" in err.strip().splitlines()[-1]
    state = runs.read_state(run)
    assert state.state == runs.INTERRUPTED and "SIGTERM" in state.reason


# --------------------------------------------------------------------------------------------
# Tampering: nothing unverified is trusted


# --------------------------------------------------------------------------------------------
# Every edge of input, one line


@pytest.mark.slow
def test_a_kill_during_an_export_leaves_the_run_usable_and_the_file_refused(copied_run: Path):
    from imgclf.predict.predictor import Predictor

    killed = forked.run("imgclf-export", copied_run, "--format", "tflite", env=_env("export"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (copied_run / runs.TFLITE).is_file()  # in place, but the manifest never listed it
    with pytest.raises(runs.IntegrityError, match="an export that did not finish"):
        Predictor.from_path(copied_run / runs.TFLITE)
    assert Predictor.from_path(copied_run).class_names  # the run itself is still complete
    from imgclf.export.cli import main as export_main

    assert export_main([str(copied_run), "--format", "tflite"]) == 0  # again, in this process
    assert Predictor.from_path(copied_run / runs.TFLITE).kind == "tflite"
    assert [p.name for p in copied_run.iterdir() if p.name.startswith(".")] == []


def test_resume_refuses_a_run_whose_data_changed(tmp_path: Path, monkeypatch):
    from imgclf.infra import faults
    from imgclf.train import RunInterrupted

    def ctrl_c(name: str) -> None:
        if name == "epoch":
            raise KeyboardInterrupt

    data = write_folder_dataset(tmp_path / "data", per_class=10)
    run = tmp_path / "run"
    monkeypatch.setattr(faults, "point", ctrl_c)  # Ctrl+C after the first epoch
    with pytest.raises(RunInterrupted):
        _train_here(*tiny_overrides(data), *FAST, out=run)
    assert runs.read_state(run).state == runs.INTERRUPTED
    extra = sorted((data / "circle").iterdir())[0]
    shutil.copy(extra, extra.with_name("added.png"))  # one more image: another split
    resumed = run_command("imgclf-train", "--resume", run)
    assert resumed.returncode == 2
    assert "its data has changed since it started" in resumed.stderr
    assert runs.read_state(run).state == runs.INTERRUPTED  # left as it was, still resumable


@pytest.mark.slow
def test_step_backups_after_a_resume_keep_counting_epochs(folder_dataset: Path, tmp_path: Path):
    from imgclf.training.resume import Resume

    run = tmp_path / "run"
    args = [*tiny_overrides(folder_dataset), *FAST, "train.epochs=4", "train.batch_size=4",
            "train.backup_every=2", "--out", str(run)]  # fmt: skip
    assert _train(*args, fault="backup:4").returncode == -signal.SIGKILL  # inside epoch 2
    first = Resume(run).backup_epoch("train")
    assert first >= 1
    again = _train("--resume", str(run), fault="backup:1")  # killed at its first backup
    assert again.returncode == -signal.SIGKILL
    assert Resume(run).backup_epoch("train") >= first  # not back to epoch 0
    _resume_here(run)
    rows = runs.read_history(run / runs.HISTORY)
    assert [row.epoch for row in rows] == [1, 2, 3, 4]


def test_a_ctrl_c_during_setup_leaves_no_half_made_run(folder_dataset: Path, tmp_path, monkeypatch):
    from imgclf.config import load_config
    from imgclf.infra import faults
    from imgclf.train import train

    def interrupt(name: str) -> None:
        if name == "setup":
            raise KeyboardInterrupt

    monkeypatch.setattr(faults, "point", interrupt)
    config = load_config(None, [*tiny_overrides(folder_dataset), *FAST])
    new, given = tmp_path / "new", tmp_path / "given"
    given.mkdir()  # an empty folder the user made for --out
    for out in (new, given):
        with pytest.raises(KeyboardInterrupt):
            train(config, out=out, verbose=0)
    assert not new.exists()  # made by the run: removed
    assert given.is_dir() and list(given.iterdir()) == []  # the user's: kept, empty


def test_a_kill_between_complete_and_the_tidy_step_is_tidied_by_the_next_command(
    tiny_run: Path, tmp_path: Path, monkeypatch
):
    """Killed in the instant after `complete`: `.resume/` (the full weights and optimizer
    state) stayed for good and `latest` still named the run before. The next imgclf-train (any
    command, here --print-config) removes the folder and moves `latest`."""
    import os
    import shutil

    from conftest import run_command

    root = tmp_path / "runs"
    old, new = root / "old", root / "new"
    shutil.copytree(tiny_run, old)
    shutil.copytree(tiny_run, new)
    runs.set_state(new, runs.COMPLETE)  # completed after `old`
    os.utime(old / runs.STATE, (1, 1))
    (new / runs.RESUME).mkdir()
    (new / runs.RESUME / "weights.h5").write_bytes(b"x" * 1000)
    runs.point_latest(old)
    monkeypatch.chdir(tmp_path)  # runs/ is the default runs root
    assert run_command("imgclf-train", "--print-config").returncode == 0
    assert not (new / runs.RESUME).exists()
    assert (root / runs.LATEST).resolve() == new.resolve()
    assert runs.tidy_completed(root) == []  # nothing left to do


@pytest.mark.slow
def test_a_write_the_file_system_refuses_mid_training_is_one_line_and_exit_2(
    folder_dataset: Path, tmp_path: Path
):
    """A full disk while the weights backup is written: h5py left the file open, printed two
    "Exception ignored" tracebacks when it was freed, and HDF5 then crashed the interpreter at
    exit (139). The suite cannot fill a disk, so the child gets a file-size limit (RLIMIT_FSIZE:
    every write past 1 MB fails with EFBIG, as a full tmpfs fails with ENOSPC; both checked by
    hand, 2026-12-06): the first backup of a 2.4 MB model fails the same way."""
    run = tmp_path / "run"
    args = [*tiny_overrides(folder_dataset), "model.filters=[32,64]", "model.hidden=[128]"]
    limited = (
        "import resource, sys; from imgclf.train import main; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY)); "
        "sys.exit(main(sys.argv[1:]))"
    )
    done = forked.run(limited, *args, "--out", run, "-q")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout
    assert lines[-1].startswith("error: a file larger than this process may write"), lines
    assert "Traceback" not in done.stdout and "Exception ignored" not in done.stdout
    state = runs.read_state(run)
    assert state.state == "failed" and "Errno 27" in state.reason


def test_a_memory_limit_too_small_for_tensorflow_is_one_line_before_it_loads(tmp_path: Path):
    """Under `ulimit -v 2000000` TensorFlow's import failed at a different point each try
    (an abort with no message, a SystemError traceback, a MemoryError); the commands now check
    the limit first. (Set here in a forked child, where TensorFlow is already mapped: the
    check does not depend on it.)"""
    limited = (
        "import resource, sys; from imgclf.train import main; "
        "resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, resource.RLIM_INFINITY)); "
        "sys.exit(main(sys.argv[1:]))"
    )
    done = forked.run(limited, "data.source=digits", "--out", tmp_path / "run")
    assert done.returncode == 2, done.stdout
    assert done.stdout.strip().splitlines()[-1] == (
        "error: this process may map at most 2.0 GB of memory (ulimit -v); TensorFlow needs "
        "about 4 GB of address space, most of it reserved rather than used: raise the limit "
        "(ulimit -v unlimited)"
    )
    assert not (tmp_path / "run").exists()
