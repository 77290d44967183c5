"""Runs that survive faults and fail closed: a training killed (SIGKILL) at named moments leaves
no run any reader trusts, and `--resume` finishes it with the uninterrupted run's metrics;
tampered runs are refused in one line; every edge of input gets a one-line answer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from conftest import run_command, tiny_overrides, write_folder_dataset

from imgclf import runs
from imgclf.infra.faults import FAULT_ENV

# Diagnostics on: their forward pass draws dropout masks too, which a resume must restore.
FAST = [
    "model.name=mlp", "train.epochs=3", "train.early_stopping.patience=0",
    "train.diagnostics=auto",
]  # fmt: skip


def _train(*args: str, fault: str | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    command = [sys.executable, "-m", "imgclf.train", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, **kwargs)


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
    reference = _train_here(*overrides, out=tmp_path / "reference")
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
    assert ("fine_tune" in phases) == (len(kills) == 2)  # each phase was cut
    _resume_here(cut)
    assert _test_metrics(cut) == _test_metrics(whole)
    history = [(run / runs.HISTORY).read_text().splitlines() for run in (cut, whole)]
    assert len(history[0]) == len(history[1]) == 1 + 4


@pytest.mark.slow  # a fresh process
def test_sigterm_leaves_an_interrupted_run_and_names_the_resume_command(
    folder_dataset: Path, tmp_path: Path
):
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    command = [sys.executable, "-m", "imgclf.train", *tiny_overrides(folder_dataset),
               "model.name=mlp", "train.epochs=500", "train.early_stopping.patience=0",
               "--out", str(run)]  # fmt: skip
    # 500 epochs and no early stop: still training when the signal comes (a tiny run that
    # stopped early could finish first, and exit 0, before SIGTERM lands).
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    while not (run / runs.HISTORY).exists():  # training has begun
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 130
    assert f"imgclf-train --resume {run}" in err.strip().splitlines()[-1]
    state = runs.read_state(run)
    assert state.state == runs.INTERRUPTED and "SIGTERM" in state.reason


# --------------------------------------------------------------------------------------------
# Tampering: nothing unverified is trusted


@pytest.fixture
def copied_run(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "copy"
    shutil.copytree(tiny_run, run)
    return run


def _predict(run: Path, *images: Path) -> subprocess.CompletedProcess[str]:
    """imgclf-predict in a fresh process: its one spawned smoke test (special files)."""
    command = [sys.executable, "-m", "imgclf.predict", str(run), *map(str, images)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("damage", ["delete manifest", "model.keras", "labels.json", "state"])
def test_a_tampered_run_is_refused_in_one_line(copied_run: Path, damage: str):
    from imgclf.export.cli import main as export_main
    from imgclf.predict.predictor import Predictor

    if damage == "delete manifest":
        (copied_run / runs.MANIFEST).unlink()
        named = runs.MANIFEST
    elif damage == "state":
        runs.set_state(copied_run, runs.FAILED, "ValueError: x")
        named = "failed"
    else:
        data = bytearray((copied_run / damage).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copied_run / damage).write_bytes(bytes(data))
        named = damage
    with pytest.raises(runs.IntegrityError if damage != "state" else runs.RunNotComplete) as err:
        Predictor.from_path(copied_run)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert export_main([str(copied_run)]) == 2


def test_the_predict_cli_refuses_a_run_without_manifest_with_exit_2(copied_run: Path):
    (copied_run / runs.MANIFEST).unlink()
    sample = sorted((copied_run / runs.SAMPLES).glob("*.png"))[0]
    result = run_command("imgclf-predict", copied_run, sample)
    assert result.returncode == 2
    assert "manifest.json missing" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_stale_temporaries_of_a_dead_writer_go_at_the_next_write(tmp_path: Path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    debris = [tmp_path / f".model.{dead}.0123abcd.tmp.keras", tmp_path / f".saved_model.old-{dead}"]
    debris[0].write_text("half")
    debris[1].mkdir()
    mine = tmp_path / f".x.{os.getpid()}.89abcdef.tmp.json"  # a live writer's: kept
    mine.write_text("in progress")
    runs.write_json(tmp_path / "metrics.json", {"ok": 1})
    assert not any(p.exists() for p in debris) and mine.exists()


# --------------------------------------------------------------------------------------------
# Every edge of input, one line


def test_a_non_utf8_file_name_trains_and_is_reported_as_escaped_text(tmp_path: Path):
    from imgclf.config import load_config
    from imgclf.train import train

    data = write_folder_dataset(tmp_path / "data", per_class=12)
    folder = os.fsencode(data / "circle")
    readable = os.fsdecode(os.path.join(folder, b"\xff0.png"))  # e.g. from a Latin-1 archive
    shutil.copyfile(data / "circle" / "img_00.png", readable)
    Path(os.fsdecode(os.path.join(folder, b"\xfe1.png"))).write_bytes(b"not an image")
    overrides = [*tiny_overrides(data), *FAST, "train.epochs=1"]
    run = train(load_config(None, overrides), out=tmp_path / "run", verbose=0)
    assert runs.read_state(run).complete
    report = json.loads((run / runs.DATA_REPORT).read_text(encoding="utf-8"))
    assert report["skipped"] == [{"file": "circle/\\xfe1.png", "reason": "not an image"}]
    assert sum(report["totals"].values()) == 37  # the readable odd name is in the data
    assert "\\udc" not in (run / runs.METRICS).read_text(encoding="utf-8")


@pytest.mark.slow  # a fresh process
def test_predict_refuses_special_files_at_once_and_classifies_the_rest(
    tiny_run: Path, tmp_path: Path
):
    good = sorted((tiny_run / runs.SAMPLES).glob("*.png"))[0]
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    device = tmp_path / "zero.png"
    device.symlink_to("/dev/zero")
    huge = tmp_path / "huge.png"
    with huge.open("wb") as fh:
        fh.truncate(201 * 2**20)  # sparse: 201 MB long, nothing on disk
    short = Path(tempfile.mkdtemp(prefix="s"))  # a socket's path must be short
    sock_path = short / "sock.png"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:  # a FIFO would block a plain read; /dev/zero would never end
        result = _predict(tiny_run, good, fifo, loop, device, sock_path, huge)
    finally:
        server.close()
        shutil.rmtree(short)
    assert result.returncode == 1 and good.name in result.stdout
    errors = result.stderr.strip().splitlines()
    assert f"error: {fifo}: not a regular file (a FIFO)" in errors
    assert f"error: {loop}: symlink loop" in errors
    assert f"error: {device}: not a regular file (a device)" in errors
    assert f"error: {sock_path}: not a regular file (a socket)" in errors
    assert f"error: {huge}: file larger than 200 MB" in errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "is empty"),
        (b"train:\n  epochs: 3\n  epochs: 4\n", "duplicate key 'epochs'"),
        (b"name: caf\xe9\n", "is not UTF-8 text"),
        (b"train:\n  ? [epochs]\n  : 3\n", "a key must be a plain name"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path: Path, text: bytes, message: str):
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    result = run_command("imgclf-train", "--config", path, "--print-config")
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path):
    from imgclf.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  <<: {epochs: 2, learning_rate: 0.01}\n  epochs: 3\n")
    config = load_config(path)  # a merged key given again is an override, not a duplicate
    assert (config.train.epochs, config.train.learning_rate) == (3, 0.01)


def test_a_batch_larger_than_the_training_split_is_refused(folder_dataset: Path, tmp_path: Path):
    out = tmp_path / "run"
    overrides = [*tiny_overrides(folder_dataset), "train.batch_size=100000"]
    result = run_command("imgclf-train", *overrides, "--out", out)
    assert result.returncode == 2
    assert "train.batch_size=100000 is larger than the 21 training images" in result.stderr
    assert not out.exists()


def test_tiny_classes_are_refused_or_marked_not_tested(tmp_path: Path):
    from imgclf.config import load_config
    from imgclf.data import load_data
    from imgclf.infra.errors import DataError
    from imgclf.train import train

    data = write_folder_dataset(tmp_path / "data", per_class=12)
    for extra in sorted((data / "circle").iterdir())[2:]:
        extra.unlink()  # 2 circles: too few for train, val and test
    overrides = [*tiny_overrides(data), *FAST, "train.epochs=1"]
    with pytest.raises(DataError, match=r"'circle' \(2 images\).*at least 3 images") as err:
        load_data(load_config(None, overrides))
    assert "allow_untested_classes" in str(err.value) and "\n" not in str(err.value)
    config = load_config(None, [*overrides, "data.allow_untested_classes=true"])
    run = train(config, out=tmp_path / "run", verbose=0)
    metrics = json.loads((run / runs.METRICS).read_text())
    assert metrics["per_class"]["circle"] == {
        "precision": None, "recall": None, "f1": None, "support": 0,
    }  # fmt: skip
    assert (
        "| circle | not tested | not tested | not tested | 0 |"
        in (run / runs.MODEL_CARD).read_text()
    )


def test_the_app_shows_a_broken_run_in_one_line_and_keeps_the_others(
    monkeypatch, app_runs: Path, tmp_path: Path
):
    from streamlit.testing.v1 import AppTest

    from imgclf.ui import catalog

    root = tmp_path / "runs"
    shutil.copytree(app_runs, root, ignore=shutil.ignore_patterns(".jobs"))
    good, broken = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    (broken / runs.MANIFEST).unlink()  # complete, but unverifiable
    cut = root / "cut"
    shutil.copytree(good, cut)
    runs.set_state(cut, runs.RUNNING)  # and its trainer is long gone: interrupted
    state = json.loads((cut / runs.STATE).read_text())
    state["pid"] = 2**22 + 1
    (cut / runs.STATE).write_text(json.dumps(state))
    monkeypatch.setenv(catalog.RUNS_ENV, str(root))
    at = AppTest.from_file(str(Path(__file__).parents[1] / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert at.sidebar.selectbox(key="run").value != str(cut)  # never selected by default
    at.sidebar.selectbox(key="run").set_value(str(broken)).run()
    assert not at.exception and "manifest.json missing" in at.error[0].value
    at.sidebar.selectbox(key="run").set_value(str(cut)).run()
    assert "interrupted" in at.warning[0].value and "--resume" in at.warning[0].value
    at.sidebar.selectbox(key="run").set_value(str(good)).run()
    assert not at.exception and not at.error


@pytest.mark.slow
def test_a_kill_during_an_export_leaves_the_run_usable_and_the_file_refused(copied_run: Path):
    from imgclf.predict.predictor import Predictor

    env = {**os.environ, FAULT_ENV: "export"}
    command = [sys.executable, "-m", "imgclf.export", str(copied_run), "--format", "tflite"]
    killed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert (copied_run / runs.TFLITE).is_file()  # in place, but the manifest never listed it
    with pytest.raises(runs.IntegrityError, match="an export that did not finish"):
        Predictor.from_path(copied_run / runs.TFLITE)
    assert Predictor.from_path(copied_run).class_names  # the run itself is still complete
    from imgclf.export.cli import main as export_main

    assert export_main([str(copied_run), "--format", "tflite"]) == 0  # again, in this process
    assert Predictor.from_path(copied_run / runs.TFLITE).kind == "tflite"
    assert [p.name for p in copied_run.iterdir() if p.name.startswith(".")] == []


def test_export_out_never_replaces_a_users_folder(tiny_run: Path, tmp_path: Path, capsys):
    from imgclf.export.cli import main as export_main

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    assert export_main([str(tiny_run), "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty and is not an imgclf SavedModel" in err[0]
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]  # untouched


def test_a_reused_process_id_does_not_keep_a_dead_run_running(tmp_path: Path):
    runs.set_state(tmp_path, runs.RUNNING)  # this process: alive
    assert runs.read_state(tmp_path).state == runs.RUNNING
    record = json.loads((tmp_path / runs.STATE).read_text())
    for field, other in (("start", (record["start"] or 0) + 1), ("boot", "another-boot")):
        # The same id, now another process's (started later, or before a reboot).
        (tmp_path / runs.STATE).write_text(json.dumps({**record, field: other}))
        assert runs.read_state(tmp_path).state == runs.INTERRUPTED


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
