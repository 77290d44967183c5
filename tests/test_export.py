"""Exports (SavedModel, TFLite, ONNX): parity with model.keras, each loadable in its own runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgclf.export.cli import main
from imgclf.export.parity import PARITY_TOLERANCE


def test_export_records_parity_within_tolerance(tiny_run: Path):
    exports = json.loads((tiny_run / "exports.json").read_text())
    parity = exports["saved_model"]["parity"]
    assert parity["n_images"] > 0
    assert parity["max_abs_diff"] <= PARITY_TOLERANCE
    assert parity["top1_agreement"] == 1.0


@pytest.mark.slow
def test_saved_model_runs_in_a_process_that_never_imports_imgclf(tiny_run: Path, tmp_path: Path):
    """Both signatures answer in a process that imports only TensorFlow and NumPy, with the
    top-1 of model.keras on every test image: raw pixels, and PNG files decoded in the graph."""
    from imgclf.config import load_config
    from imgclf.data import load_data
    from imgclf.evaluate import predict_proba
    from imgclf.images import png_bytes
    from imgclf.models.saving import load_run_model

    test = load_data(load_config(tiny_run / "config.yaml")).test
    np.save(tmp_path / "pixels.npy", test.x.astype("float32"))
    files = []
    for i, data in enumerate(png_bytes(x) for x in test.x):
        files.append(tmp_path / f"test{i}.png")
        files[-1].write_bytes(data)
    code = f"""
import sys, json, numpy as np, tensorflow as tf
m = tf.saved_model.load({str(tiny_run / "saved_model")!r})
pixels = np.load({str(tmp_path / "pixels.npy")!r})
raw = m.signatures["serving_default"](pixels=tf.constant(pixels))
files = [open(f, "rb").read() for f in {[str(f) for f in files]!r}]
enc = m.signatures["serve_bytes"](images=tf.constant(files))
assert not any(k.startswith("imgclf") for k in sys.modules)
print(json.dumps({{k: v.numpy().tolist() if v.dtype != tf.string else [x.decode() for x in
                   v.numpy()] for out, name in ((raw, "raw"), (enc, "bytes"))
                   for k, v in ((f"{{name}}_{{key}}", out[key]) for key in out)}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    labels = json.loads((tiny_run / "labels.json").read_text())
    want = predict_proba(load_run_model(tiny_run), test.x.astype("float32")).argmax(axis=1)
    for name in ("raw", "bytes"):
        probs = np.array(out[f"{name}_probabilities"])
        assert probs.shape == (len(test.x), len(labels))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert list(probs.argmax(axis=1)) == list(want)
        assert out[f"{name}_label"] == [labels[i] for i in want]


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(tiny_run: Path):
    result = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir",
         str(tiny_run / "saved_model"), "--all"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "signature_def['serving_default']" in result.stdout
    assert "signature_def['serve_bytes']" in result.stdout
    assert "dtype: DT_STRING" in result.stdout and "label" in result.stdout


def test_parity_covers_the_bytes_signature(tiny_run: Path):
    parity = json.loads((tiny_run / "exports.json").read_text())["saved_model"]["parity"]
    assert parity["serve_bytes_max_abs_diff"] <= PARITY_TOLERANCE
    assert parity["serve_bytes_top1_agreement"] == 1.0


@pytest.mark.slow  # a whole export
def test_export_cli_writes_a_checked_saved_model(tiny_run: Path, tmp_path: Path, capsys):
    import shutil

    import keras
    import tensorflow as tf

    run = tmp_path / "run"  # the export is recorded in the run: never in the shared one
    shutil.copytree(tiny_run, run)
    out = tmp_path / "exported"
    assert main([str(run), "--out", str(out)]) == 0
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


@pytest.mark.slow
def test_serving_dir_gets_numbered_versions_and_never_a_failed_one(
    tiny_run: Path, tmp_path: Path, monkeypatch
):
    import shutil

    import imgclf.export.parity as export

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    serving = tmp_path / "models" / "shapes"
    assert main([str(run), "--serving-dir", str(serving)]) == 0
    assert main([str(run), "--serving-dir", str(serving)]) == 0
    assert sorted(p.name for p in serving.iterdir()) == ["1", "2"]  # nothing hidden left over
    assert (serving / "2" / "saved_model.pb").is_file()
    record = json.loads((run / "exports.json").read_text())["tf_serving"]
    assert record["version"] == 2 and record["parity"]["top1_agreement"] == 1.0
    # A version that fails its parity check is not left behind (it was written under a hidden
    # temporary name and is removed instead of renamed).
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)
    assert main([str(run), "--serving-dir", str(serving)]) == 1
    assert sorted(p.name for p in serving.iterdir()) == ["1", "2"]


@pytest.mark.slow
def test_tflite_export_is_checked_and_predicts_like_the_run(exported_run: Path):
    from imgclf.predict.predictor import Predictor

    run = exported_run  # imgclf-export --format all, then --format tflite --quantize int8
    exports = json.loads((run / "exports.json").read_text())
    flt, int8 = exports["tflite"], exports["tflite_int8"]
    assert flt["quantized"] is False and int8["quantized"] == "int8"
    assert flt["parity"]["max_abs_diff"] <= PARITY_TOLERANCE
    assert flt["parity"]["top1_agreement"] >= 0.999
    assert flt["test_accuracy"] == flt["keras_test_accuracy"]
    assert "accuracy_drop" in int8 and int8["size_bytes"] < flt["size_bytes"]
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    assert {"model.tflite", "model_int8.tflite"} <= set(manifest)
    samples = sorted((run / "samples").glob("*.png"))
    want, _ = Predictor.from_path(run).predict_files(samples)
    got, _ = Predictor.from_path(run / "model.tflite").predict_files(samples)
    assert [p.label for p in got] == [p.label for p in want]
    np.testing.assert_allclose(
        [p.probabilities for p in got], [p.probabilities for p in want], atol=PARITY_TOLERANCE
    )
    table = (run / "model_card.md").read_text()
    assert "| TFLite float32 | `model.tflite` |" in table and "TFLite int8" in table


@pytest.mark.slow
def test_onnx_export_is_checked_and_runs_without_tensorflow(exported_run: Path, tmp_path: Path):
    """model.onnx passes parity in onnxruntime, carries its class names, is in the manifest and
    the model card, answers in a process that imports only onnxruntime and NumPy, and
    `Predictor` on it agrees with the run; a modified file is refused."""
    import shutil

    from imgclf.infra.errors import UserError
    from imgclf.predict.predictor import Predictor

    run = exported_run  # imgclf-export --format all
    record = json.loads((run / "exports.json").read_text())["onnx"]
    assert record["path"] == "model.onnx" and record["quantized"] is False
    assert record["parity"]["max_abs_diff"] <= PARITY_TOLERANCE
    assert record["parity"]["top1_agreement"] >= 0.999
    assert record["test_accuracy"] == record["keras_test_accuracy"]
    assert "model.onnx" in json.loads((run / "manifest.json").read_text())["files"]
    assert "| ONNX (onnxruntime) | `model.onnx` |" in (run / "model_card.md").read_text()

    samples = sorted((run / "samples").glob("*.png"))
    want, _ = Predictor.from_path(run).predict_files(samples)
    onnx_predictor = Predictor.from_path(run / "model.onnx")
    got, _ = onnx_predictor.predict_files(samples)
    assert onnx_predictor.kind == "onnx"
    assert [p.label for p in got] == [p.label for p in want]

    pixels = Predictor.from_path(run).decode_files(samples)[1].astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    script = f"""
import json, sys
import numpy as np, onnxruntime as ort
s = ort.InferenceSession({str(run / "model.onnx")!r}, providers=["CPUExecutionProvider"])
labels = json.loads(s.get_modelmeta().custom_metadata_map["labels"])
(probs,) = s.run(["probabilities"], {{"pixels": np.load({str(tmp_path / "pixels.npy")!r})}})
assert "tensorflow" not in sys.modules and "imgclf" not in sys.modules
print(json.dumps([labels[i] for i in probs.argmax(1)]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [p.label for p in want]

    run = tmp_path / "run"  # the shared run stays as it is
    shutil.copytree(exported_run, run)
    data = bytearray((run / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / "model.onnx").write_bytes(bytes(data))
    try:
        Predictor.from_path(run / "model.onnx")
    except UserError as exc:
        assert "model.onnx" in str(exc)
    else:
        raise AssertionError("a modified model.onnx was loaded")


@pytest.mark.slow
def test_export_all_fills_the_model_card_table(exported_run: Path, tiny_run: Path):
    run = exported_run  # imgclf-export --format all (its output: export-all.out)
    out = (run.parent / "export-all.out").read_text()
    for what in ("saved_model:", "tflite:", "onnx:"):
        assert what in out
    exports = json.loads((run / "exports.json").read_text())
    assert {"saved_model", "tflite", "onnx"} <= set(exports)
    card = (run / "model_card.md").read_text()
    table = card[card.index("## Export") : card.index("## Intended use")]
    for row in ("SavedModel `serving_default`", "`serve_bytes`", "TFLite float32", "ONNX"):
        assert row in table
    # The card's other sections are untouched by the refresh.
    assert card.count("## ") == (tiny_run / "model_card.md").read_text().count("## ")


@pytest.mark.slow  # a whole export
def test_export_of_a_run_whose_path_has_glob_characters(tiny_run: Path, tmp_path: Path):
    """TensorFlow reads a checkpoint path as a glob pattern; `[1]` in a folder name must not
    break export or loading."""
    import shutil

    from imgclf.predict.predictor import Predictor

    run = tmp_path / "runs" / "a[1]"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "saved_model")
    assert main([str(run)]) == 0
    samples = sorted((run / "samples").glob("*.png"))
    want, _ = Predictor.from_path(run).predict_files(samples)
    got, _ = Predictor.from_path(run / "saved_model").predict_files(samples)
    assert [p.label for p in got] == [p.label for p in want]


def test_quantize_without_tflite_is_refused(tiny_run: Path, capsys):
    assert main([str(tiny_run), "--format", "onnx", "--quantize", "int8"]) == 2
    assert "--quantize int8 applies to --format tflite" in capsys.readouterr().err


def test_export_out_never_replaces_a_users_folder(tiny_run: Path, tmp_path: Path, capsys):
    from imgclf.export.cli import main as export_main

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    assert export_main([str(tiny_run), "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty and is not an imgclf SavedModel" in err[0]
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]  # untouched
