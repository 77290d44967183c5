"""Run directories that cannot be trusted are refused: tampered files, a missing manifest, a failed
or interrupted run, stale temporaries of a dead writer, a reused process id (`imgclf.runs`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_command

from imgclf import runs


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


def test_a_reused_process_id_does_not_keep_a_dead_run_running(tmp_path: Path):
    runs.set_state(tmp_path, runs.RUNNING)  # this process: alive
    assert runs.read_state(tmp_path).state == runs.RUNNING
    record = json.loads((tmp_path / runs.STATE).read_text())
    for field, other in (("start", (record["start"] or 0) + 1), ("boot", "another-boot")):
        # The same id, now another process's (started later, or before a reboot).
        (tmp_path / runs.STATE).write_text(json.dumps({**record, field: other}))
        assert runs.read_state(tmp_path).state == runs.INTERRUPTED
