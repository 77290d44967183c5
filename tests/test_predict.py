"""Predict: run directory and SavedModel agree; bad files are reported, the rest classified."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from PIL import Image

from imgclf import runs
from imgclf.infra.errors import UserError
from imgclf.predict.cli import main
from imgclf.predict.predictor import Predictor


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images of other sizes and formats than the training data, to go through the decoder."""
    folder = tmp_path_factory.mktemp("to-classify")
    rng = np.random.default_rng(5)
    for i, cls in enumerate(("circle", "hstripes", "vstripes") * 2):
        img = Image.fromarray(make_image(cls, rng, size=64))
        img.save(folder / f"{i}_{cls}.{('png', 'jpg', 'webp')[i % 3]}")
    return folder


def _json(capsys) -> list[dict]:
    return json.loads(capsys.readouterr().out)


def test_run_dir_and_saved_model_agree_on_every_image(tiny_run: Path, images: Path, capsys):
    assert main([str(tiny_run), str(images), "--format", "json"]) == 0
    from_run = _json(capsys)
    assert main([str(tiny_run / "saved_model"), str(images), "--format", "json"]) == 0
    from_saved = _json(capsys)
    assert len(from_run) == 6
    assert [r["label"] for r in from_run] == [r["label"] for r in from_saved]
    for a, b in zip(from_run, from_saved, strict=True):
        assert a["top_k"][0]["probability"] == pytest.approx(b["top_k"][0]["probability"], abs=1e-4)


def test_unreadable_files_are_reported_and_the_rest_classified(
    tiny_run: Path, images: Path, tmp_path: Path, capsys
):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = sorted(images.iterdir())[:2]
    code = main([str(tiny_run), str(good[0]), str(bad), str(tmp_path / "missing.png"),
                 str(good[1]), "--format", "csv"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    rows = captured.out.strip().splitlines()
    # The run has an out-of-distribution detector: its score and flag are columns too.
    assert rows[0] == "image,rank,label,probability,ood_score,ood"
    assert {r.split(",")[0] for r in rows[1:]} == {str(good[0]), str(good[1])}
    assert len(rows) == 1 + 2 * 3  # top-3 per image by default
    err = [line for line in captured.err.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 2
    assert any(str(bad) in line and "corrupt" in line for line in err)
    assert any("missing.png" in line and "not found" in line for line in err)


def test_predictor_api_top_k_and_table(tiny_run: Path, images: Path, capsys):
    predictor = Predictor.from_path(tiny_run)
    assert predictor.image_size == (32, 32) and predictor.channels == 3
    files = sorted(images.iterdir())
    predictions, failures = predictor.predict_files(files, k=2)
    assert not failures
    for p in predictions:
        assert len(p.labels) == 2 and p.probabilities[0] >= p.probabilities[1]
    raw = predictor.predict_files([files[0].read_bytes()], k=1)[0][0]
    assert raw.label == predictions[0].label
    assert main([str(tiny_run), str(files[0]), "--top-k", "1"]) == 0
    assert predictions[0].label in capsys.readouterr().out


def test_not_a_model_is_a_clear_error(tmp_path: Path, capsys):
    with pytest.raises(UserError, match="neither a run directory"):
        Predictor.from_path(tmp_path)
    assert main([str(tmp_path), str(tmp_path)]) == 2


def test_explain_writes_one_gradcam_png_per_image_and_leaves_stdout_alone(
    tiny_run: Path, images: Path, tmp_path: Path, capsys
):
    assert main([str(tiny_run), str(images), "--format", "json"]) == 0
    plain = capsys.readouterr().out
    out = tmp_path / "cams"
    assert main([str(tiny_run), str(images), "--format", "json", "--explain", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == plain  # the predictions are printed exactly as without --explain
    assert "conv2_2_act" in captured.err  # the last conv activation of the tiny cnn
    expected = {f"{p.stem}_gradcam.png" for p in images.iterdir()}
    assert {p.name for p in out.iterdir()} == expected and len(expected) == 6
    for path in out.iterdir():
        with Image.open(path) as img:
            assert img.mode == "RGB" and img.size == (224, 224)  # 32 px model input × 7

    # Another layer by name writes other heatmaps over the same images.
    layer_out = tmp_path / "cams-conv1"
    args = ["--explain", str(layer_out), "--explain-layer", "conv1_2_act"]
    assert main([str(tiny_run), str(images), *args]) == 0
    assert "conv1_2_act" in capsys.readouterr().err
    assert {p.name for p in layer_out.iterdir()} == expected


def test_explain_needs_a_run_directory_and_a_known_layer(
    tiny_run: Path, images: Path, tmp_path: Path, capsys
):
    saved = tiny_run / "saved_model"
    assert main([str(saved), str(images), "--explain", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--explain needs a run directory" in err[0]
    assert not (tmp_path / "a").exists()

    args = ["--explain", str(tmp_path / "b"), "--explain-layer", "flatten"]
    assert main([str(tiny_run), str(images), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing classified before the error
    assert "no 4-D feature map at 'flatten'" in captured.err and "conv2_2_act" in captured.err

    with pytest.raises(SystemExit) as exc:
        main([str(tiny_run), str(images), "--explain-layer", "conv1_2_act"])
    assert exc.value.code == 2
    assert "--explain-layer needs --explain" in capsys.readouterr().err


def test_manifest_lists_every_artifact_with_its_sha256(tiny_run: Path):
    import hashlib

    manifest = json.loads((tiny_run / "manifest.json").read_text())
    files = manifest["files"]
    assert {"model.keras", "labels.json", "config.yaml", "metrics.json", "exports.json"} <= set(
        files
    )
    assert any(name.startswith("saved_model/variables/") for name in files)
    on_disk = {
        p.relative_to(tiny_run).as_posix()
        for p in tiny_run.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "state.json")
    }
    assert set(files) == on_disk  # state.json changes after the manifest: never listed
    model = (tiny_run / "model.keras").read_bytes()
    assert files["model.keras"] == {
        "sha256": hashlib.sha256(model).hexdigest(),
        "size": len(model),
    }


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_artifact_is_refused(tiny_run: Path, tmp_path: Path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    Predictor.from_path(run)  # intact: loads
    _flip_one_byte(run / "model.keras")
    with pytest.raises(UserError, match=r"model\.keras does not match its SHA-256"):
        Predictor.from_path(run)
    variables = next((run / "saved_model" / "variables").glob("variables.data-*"))
    _flip_one_byte(variables)
    with pytest.raises(UserError, match=r"variables\.data-.* does not match its SHA-256"):
        Predictor.from_path(run / "saved_model")
    shutil.copy(tiny_run / "saved_model" / "variables" / variables.name, variables)
    Predictor.from_path(run / "saved_model")  # restored: loads again
    (run / "saved_model" / "assets.extra").write_bytes(b"x")
    with pytest.raises(UserError, match=r"assets\.extra is not listed in manifest\.json"):
        Predictor.from_path(run / "saved_model")


def test_a_model_with_a_lambda_layer_is_refused(tmp_path: Path):
    import keras

    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    run = tmp_path / "lambda-run"
    run.mkdir()
    keras.Model(inputs, keras.layers.Flatten()(outputs)).save(run / "model.keras")
    (run / "labels.json").write_text('["a", "b"]')
    runs.write_manifest(run)  # a complete, verified run: what is refused is the Lambda
    runs.set_state(run, runs.COMPLETE)
    with pytest.raises(UserError, match="contains a Lambda layer"):
        Predictor.from_path(run)


def test_nothing_to_classify_is_exit_2_before_the_model_loads(tiny_run: Path, tmp_path: Path):
    """A missing file and an empty folder, and nothing else: their lines, exit 2, no output and
    no TensorFlow (the model is never loaded)."""
    import subprocess
    import sys

    (tmp_path / "empty").mkdir()
    code = (
        "import sys; from imgclf.predict.cli import main\n"
        f"rc = main([{str(tiny_run)!r}, {str(tmp_path / 'nope.jpg')!r}, "
        f"{str(tmp_path / 'empty')!r}])\n"
        "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED'); sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout.strip() == "TF_NOT_LOADED"  # no table header, no model loaded
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope.jpg'}: file not found",
        f"error: {tmp_path / 'empty'}: folder has no image files",
    ]


def _predict(run: Path, *images: Path) -> subprocess.CompletedProcess[str]:
    """imgclf-predict in a fresh process: its one spawned smoke test (special files)."""
    command = [sys.executable, "-m", "imgclf.predict", str(run), *map(str, images)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


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


def test_csv_cells_that_a_spreadsheet_would_run_are_written_as_text(
    tiny_run: Path, tmp_path: Path, monkeypatch
):
    """A file named `=HYPERLINK(...)` (or a class name like it) in a predictions CSV would run
    as a formula in Excel or LibreOffice (CSV injection, OWASP): such text cells get a `'` in
    front; numbers are written as they are."""
    import csv
    import shutil

    from conftest import run_command

    from imgclf.infra.spreadsheet import safe_cell

    sample = sorted((tiny_run / runs.SAMPLES).glob("*.png"))[0]
    names = ["=HYPERLINK(1).png", "+1.png", "@x.png", "plain.png"]
    for name in names:
        shutil.copy(sample, tmp_path / name)
    monkeypatch.chdir(tmp_path)  # relative names: the image cell starts with the name
    done = run_command("imgclf-predict", tiny_run, *names, "--format", "csv", "--top-k", "1")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(done.stdout.splitlines()))
    assert [row["image"] for row in rows] == ["'" + n for n in names[:3]] + ["plain.png"]
    assert all(float(row["probability"]) > 0 for row in rows)  # numbers stay numbers
    assert safe_cell("-0.5") == "'-0.5" and safe_cell(-0.5) == -0.5 and safe_cell("a=b") == "a=b"


def test_a_run_whose_files_do_not_fit_together_is_refused_in_one_line(
    tiny_run: Path, tmp_path: Path
):
    """With its manifest re-written to match (a hostile or broken copy): a labels.json shorter
    than the model's outputs used to be an IndexError at the first prediction, and a
    model.keras naming `os.system` as a layer class a traceback from Keras' safe mode."""
    import json
    import shutil
    import zipfile

    from conftest import run_command

    short, system = tmp_path / "short", tmp_path / "system"
    for run in (short, system):
        shutil.copytree(tiny_run, run)
    labels = runs.read_labels(short)
    (short / runs.LABELS).write_text(json.dumps(labels[:-1]))
    with zipfile.ZipFile(tiny_run / runs.MODEL) as source:
        members = {name: source.read(name) for name in source.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][1].update({"module": "os", "class_name": "system"})
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(system / runs.MODEL, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    sample = sorted((tiny_run / runs.SAMPLES).glob("*.png"))[0]
    for run, want in ((short, f"names {len(labels) - 1} classes but the model has"),
                      (system, "cannot be loaded")):  # fmt: skip
        runs.write_manifest(run)  # as a tamperer would: the files now match the manifest
        done = run_command("imgclf-predict", run, sample)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith("error: cannot load model: ") and want in line, line
