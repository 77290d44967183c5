"""`imgclf-export RUN --benchmark` (`imgclf.export.benchmark`): one table across the run's
artifacts, each run by its own runtime in one process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_command

from imgclf import runs


def test_the_table_has_a_row_per_artifact_measured_in_its_runtime(
    exported, tmp_path: Path, monkeypatch
):
    run = tmp_path / "run"
    shutil.copytree(exported["rgb"], run)
    done = run_command("imgclf-export", run, "--benchmark")
    assert done.returncode == 0, done.stderr
    rows = json.loads((run / runs.EXPORTS).read_text())["benchmark"]["rows"]
    by_name = {r["artifact"]: r for r in rows}
    # The run has model.keras, saved_model/, model.tflite, model_int8.tflite and model.onnx;
    # ONNX is run by onnxruntime and by OpenVINO. Nothing else is exported by --benchmark.
    assert set(by_name) == {
        "Keras (model.keras)", "SavedModel, pixels", "TFLite float32",
        "TFLite int8 (dynamic range)", "ONNX Runtime", "OpenVINO (ONNX, f32)",
    }  # fmt: skip
    assert not (run / runs.MEDIAPIPE).exists()
    for name, row in by_name.items():
        assert row["size_mb"] > 0 and row["latency_ms"] > 0 and row["throughput_ips"] > 0
        if "int8" not in name:  # float artifacts agree with model.keras
            assert row["top1_agreement"] == 1.0 and row["max_abs_diff"] <= 1e-4, name
    lines = done.stdout.splitlines()
    assert lines[0].startswith("| artifact | file | size (MB) |") and len(lines) == 2 + len(rows)

    # The app's Model page shows the same table under Exports.
    from streamlit.testing.v1 import AppTest

    from imgclf.ui import catalog

    monkeypatch.setenv(catalog.RUNS_ENV, str(tmp_path))
    app = str(Path(__file__).resolve().parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=180).run()
    at.sidebar.radio(key="page").set_value("Model").run()
    assert not at.exception, [e.value for e in at.exception]
    (shown,) = [d.value for d in at.dataframe if "artifact" in d.value.columns]
    assert list(shown["artifact"]) == [r["artifact"] for r in rows]
