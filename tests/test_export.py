"""SavedModel export: raw-pixel signature, parity with model.keras, loadable by TensorFlow alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from imgclf.export import PARITY_TOLERANCE, main


def test_export_records_parity_within_tolerance(tiny_run: Path):
    exports = json.loads((tiny_run / "exports.json").read_text())
    parity = exports["saved_model"]["parity"]
    assert parity["n_images"] > 0
    assert parity["max_abs_diff"] <= PARITY_TOLERANCE
    assert parity["top1_agreement"] == 1.0


def test_saved_model_runs_in_a_process_that_never_imports_imgclf(tiny_run: Path):
    code = f"""
import sys, json, numpy as np, tensorflow as tf
m = tf.saved_model.load({str(tiny_run / "saved_model")!r})
f = m.signatures["serving_default"]
x = np.random.default_rng(0).uniform(0, 255, size=(3, 32, 32, 3)).astype("float32")
p = f(pixels=tf.constant(x))["probabilities"].numpy()
assert not any(k.startswith("imgclf") for k in sys.modules)
print(json.dumps(p.tolist()))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    probs = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_export_cli_writes_a_checked_saved_model(tiny_run: Path, tmp_path: Path, capsys):
    import keras
    import tensorflow as tf

    out = tmp_path / "exported"
    assert main([str(tiny_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    assert json.loads((out / "labels.json").read_text()) == json.loads(
        (tiny_run / "labels.json").read_text()
    )
    model = keras.saving.load_model(tiny_run / "model.keras", safe_mode=True, compile=False)
    x = np.random.default_rng(1).uniform(0, 255, size=(5, 32, 32, 3)).astype("float32")
    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    exported = served(pixels=tf.constant(x))["probabilities"].numpy()
    np.testing.assert_allclose(exported, model.predict_on_batch(x), atol=PARITY_TOLERANCE)


def test_export_of_a_non_run_fails_cleanly(tmp_path: Path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
