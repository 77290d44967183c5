"""`imgclf-export --format openvino` (`imgclf.export.openvino`): the run's ONNX file run by
Intel's OpenVINO runtime, checked like every export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_command

from imgclf import runs


def test_openvino_runs_the_onnx_export_like_the_run(exported: dict[str, Path], tmp_path: Path):
    """At float32 inference precision OpenVINO gives model.keras' probabilities (the check that
    is required); at its CPU default (bf16 where the processor has it) the figures are
    recorded beside it."""
    run = tmp_path / "run"
    shutil.copytree(exported["grey"], run)
    done = run_command("imgclf-export", run, "--format", "openvino")
    assert done.returncode == 0, done.stderr
    record = json.loads((run / runs.EXPORTS).read_text())["openvino"]
    assert record["runtime"].startswith("openvino ") and record["path"] == runs.ONNX
    assert record["parity"]["top1_agreement"] == 1.0
    assert record["parity"]["max_abs_diff"] <= 1e-4
    assert record["default_precision"]["parity"]["n_images"] == record["parity"]["n_images"]
    assert "(reported, not required)" in done.stdout


def test_a_run_without_an_onnx_file_is_told_how_to_make_one(exported, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(exported["rgb"], run)
    (run / runs.ONNX).unlink()
    done = run_command("imgclf-export", run, "--format", "openvino")
    assert done.returncode == 2
    hint = f"run imgclf-export {run} --format onnx"
    assert done.stderr == f"error: {run} has no {runs.ONNX}; {hint}\n"


def test_without_the_extras_the_error_names_the_install(exported, tmp_path: Path, monkeypatch):
    """Without the `mediapipe` or `openvino` package (hidden here), `--format mediapipe`, `web`
    and `openvino` stop before any work with the pip command."""
    import sys

    for package, formats, extra in (
        ("mediapipe", ("mediapipe", "web"), "imgclf[mediapipe]"),
        ("openvino", ("openvino",), "imgclf[openvino]"),
    ):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, package, None)  # `import package` raises ImportError
            for fmt in formats:
                done = run_command("imgclf-export", exported["rgb"], "--format", fmt)
                assert done.returncode == 2, (fmt, done.stderr)
                assert done.stderr.count("\n") == 1 and f"pip install '{extra}'" in done.stderr
