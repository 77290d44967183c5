"""`imgclf-export --format mediapipe` (`imgclf.export.mediapipe`): a TFLite image classifier
with one output and MediaPipe metadata, loaded and run by MediaPipe's own `ImageClassifier`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_command

from imgclf import runs
from imgclf.config import load_config
from imgclf.export import mediapipe
from imgclf.images import load_image
from imgclf.predict.predictor import Predictor


@pytest.mark.parametrize("kind", ["rgb", "grey"])
def test_mediapipe_classifies_like_the_run(exported: dict[str, Path], tmp_path: Path, kind: str):
    """MediaPipe's ImageClassifier loads the exported file (its metadata names the run's
    classes) and its top-1 on the run's sample images, pre-sized by imgclf's decoder, is the
    Predictor's; exports.json records the parity MediaPipe reached on the test images."""
    run = tmp_path / "run"
    shutil.copytree(exported[kind], run)
    done = run_command("imgclf-export", run, "--format", "mediapipe")
    assert done.returncode == 0, done.stderr
    model = (run / runs.MEDIAPIPE).read_bytes()
    assert mediapipe.labels_in(model) == runs.read_labels(run)
    record = json.loads((run / runs.EXPORTS).read_text())["mediapipe"]
    assert record["parity"]["top1_agreement"] == 1.0
    assert record["parity"]["max_abs_diff"] <= 1e-4
    # The test photos at their own size, resized by MediaPipe: reported beside the check.
    own = record["own_resize"]
    assert own["n_images"] == record["parity"]["n_images"] and 0 <= own["top1_agreement"] <= 1
    # The format corpus through MediaPipe's own decoder: what it reads and what it does not.
    kinds = record["formats"]
    assert kinds["PNG RGB"]["refused"] is None and kinds["HEIC"]["refused"].startswith("not read")
    runs.check_run(run, runs.MEDIAPIPE)  # in the manifest

    cfg = load_config(run / runs.CONFIG).data
    samples = sorted((run / runs.SAMPLES).glob("*.png"))
    expected, _ = Predictor.from_path(run).predict_files(samples, k=1)
    pixels = np.stack([load_image(f, tuple(cfg.image_size), 3) for f in samples])
    with mediapipe.Classifier(model) as classify:
        scores = classify(pixels)
    names = runs.read_labels(run)
    assert [names[i] for i in scores.argmax(axis=1)] == [p.label for p in expected]
    # Not a file for imgclf-predict (one output, another input): one line, no traceback.
    refused = run_command("imgclf-predict", run / runs.MEDIAPIPE, samples[0])
    assert refused.returncode == 2 and "made for MediaPipe Tasks" in refused.stderr
    # The web page takes only the file MediaPipe's check passed.
    (run / runs.MEDIAPIPE).write_bytes((run / runs.TFLITE).read_bytes())
    stale = run_command("imgclf-export", run, "--format", "web")
    assert stale.returncode == 2 and not (run / runs.WEB).exists()


@pytest.mark.parametrize("fault", ["no metadata", "one label short"])
def test_a_model_without_the_runs_labels_is_refused_and_not_written(
    exported: dict[str, Path], tmp_path: Path, monkeypatch, fault: str
):
    """The export's own check reads the label file back from the metadata: a model whose
    metadata is missing or lists one class too few is refused in one line and not written."""
    run = tmp_path / "run"
    shutil.copytree(exported["rgb"], run)
    real = mediapipe.with_metadata
    if fault == "no metadata":
        monkeypatch.setattr(mediapipe, "with_metadata", lambda flatbuffer, *_: flatbuffer)
    else:
        short = lambda flatbuffer, names, *rest: real(flatbuffer, names[:-1], *rest)  # noqa: E731
        monkeypatch.setattr(mediapipe, "with_metadata", short)
    done = run_command("imgclf-export", run, "--format", "mediapipe")
    assert done.returncode == 2
    assert done.stderr.startswith("error: the model's metadata does not list the run's classes")
    assert done.stderr.count("\n") == 1
    assert not (run / runs.MEDIAPIPE).exists()


def test_the_int8_classifier_takes_uint8_pixels_and_reports_its_agreement(
    exported: dict[str, Path], tmp_path: Path
):
    """`--quantize int8`: full-integer int8 calibrated on training images, uint8 input (what
    phones run fastest), run in MediaPipe; its agreement and accuracy drop are recorded, not
    required."""
    from imgclf.export.tflite import _interpreter

    run = tmp_path / "run"
    shutil.copytree(exported["rgb"], run)
    done = run_command("imgclf-export", run, "--format", "mediapipe", "--quantize", "int8")
    assert done.returncode == 0, done.stderr
    record = json.loads((run / runs.EXPORTS).read_text())["mediapipe_int8"]
    assert record["quantized"] == "int8" and 0.0 <= record["parity"]["top1_agreement"] <= 1.0
    model = (run / runs.MEDIAPIPE_INT8).read_bytes()
    assert mediapipe.labels_in(model) == runs.read_labels(run)
    (given,) = _interpreter(model).get_input_details()
    assert given["dtype"] == np.uint8 and list(given["shape"]) == [1, 32, 32, 3]
    assert given["quantization"] == (1.0, 0)  # raw pixels, as MediaPipe feeds them
