"""A MediaPipe-ready TFLite image classifier (`model_mediapipe.tflite`), checked by MediaPipe's
own `ImageClassifier` before it is written.

MediaPipe Tasks (Android, iOS, Python, the web) and LiteRT's image classifiers need one score
tensor and metadata naming the labels and the input normalisation; `model.tflite` has four
outputs (probabilities, label, ood_score, ood) and no metadata, so they cannot load it. This
file has:

- input: RGB float32 [1, H, W, 3], raw pixels 0..255 (metadata: mean 0, std 1, so MediaPipe
  feeds the pixels as they are). A grey run converts in the graph with Pillow's luma weights
  (ITU-R 601-2: 0.299 R + 0.587 G + 0.114 B; Pillow rounds to an integer, the graph does not,
  so a colour photo may differ by under half a grey level). MediaPipe refuses grey inputs
  ("Only RGB color space is supported").
- output: the run's calibrated probabilities [1, K], the only output (the out-of-distribution
  score stays in `model.tflite`, the SavedModel and ONNX).
- metadata: written by MediaPipe's own writer (`mediapipe.tasks.python.metadata.
  metadata_writers`, the `[mediapipe]` extra): the run's name and what it is, the input
  normalisation, and labels.json as the label file.

The check: the file is loaded in `mediapipe.tasks.python.vision.ImageClassifier` and classifies
the run's test images (pre-sized to the model's input, so MediaPipe's own resize does not enter
the comparison); its scores are compared with model.keras' probabilities as every export's are
(`parity.require_parity`), and the label file read back from the metadata must be the run's
classes. A file that fails is not written.

The PyPI wheels of mediapipe 1.x ship the metadata writer without the compiled module that
computes the metadata's minimum parser version (`_pywrap_metadata_version`; the 0.10.21 wheel
that has it needs protobuf < 5 and numpy < 2, which TensorFlow 2.21 cannot share). `_writer`
stands in for that one function with the schema version of the installed library, which parsers
of that version and newer accept.
"""

from __future__ import annotations

import hashlib
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from imgclf import runs
from imgclf.export import parity
from imgclf.export.saved_model import INPUT_NAME, OUTPUT_NAME, SIGNATURE
from imgclf.infra.errors import UserError, require_packages

INSTALL = "pip install 'imgclf[mediapipe]'"
INPUT = "image"
_VERSION_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"


def require_mediapipe() -> None:
    """UserError naming the install command when the `mediapipe` package is missing."""
    require_packages("--format mediapipe", INSTALL, "mediapipe")


def _writer() -> Any:
    """mediapipe's `metadata_writer` module (see the module's docstring for the stand-in)."""
    require_mediapipe()
    import mediapipe

    if _VERSION_MODULE not in sys.modules:
        try:
            __import__(_VERSION_MODULE)
        except ImportError:
            schema = Path(mediapipe.__file__).parent / "tasks/metadata/metadata_schema.fbs"
            found = re.search(r"Schema Semantic version: (\d+\.\d+\.\d+)", schema.read_text())
            version = found.group(1) if found else "1.0.0"
            stand_in = types.ModuleType(_VERSION_MODULE)
            stand_in.GetMinimumMetadataParserVersion = lambda _buffer: version  # type: ignore[attr-defined]
            parts = _VERSION_MODULE.split(".")
            for depth in range(3, len(parts)):  # the missing packages above it: empty ones
                sys.modules.setdefault(".".join(parts[:depth]), types.ModuleType(parts[depth - 1]))
            sys.modules[_VERSION_MODULE] = stand_in
            setattr(sys.modules[".".join(parts[:-1])], parts[-1], stand_in)
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    return metadata_writer


def convert(saved_model_dir: str | Path, calibration: np.ndarray | None = None) -> bytes:
    """The TFLite flatbuffer of the SavedModel's `serving_default` with RGB float32
    [1, H, W, 3] in and its probabilities out, nothing else (see the module's docstring). With
    `calibration` (uint8 RGB training images [N, H, W, 3]): full-integer int8 (TFLite's
    post-training quantisation with those images as the representative dataset), uint8 input,
    float32 probabilities out."""
    import tensorflow as tf

    with runs.glob_safe(saved_model_dir) as readable:
        loaded = tf.saved_model.load(str(readable))
        serve = loaded.signatures[SIGNATURE]
        _, height, width, channels = serve.structured_input_signature[1][INPUT_NAME].shape

        @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, INPUT)])
        def classify(image: Any) -> Any:
            pixels = image
            if channels == 1:  # Pillow's "L" conversion, without its rounding
                pixels = tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), -1, True)
            return {OUTPUT_NAME: serve(**{INPUT_NAME: pixels})[OUTPUT_NAME]}

        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [classify.get_concrete_function()], loaded
        )
        if calibration is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: (
                [image[None].astype(np.float32)] for image in calibration
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
        return converter.convert()


def with_metadata(flatbuffer: bytes, class_names: list[str], name: str, about: str) -> bytes:
    """`flatbuffer` with MediaPipe image-classifier metadata: `name` and `about` as its general
    information, input normalisation mean 0 and std 1 (raw pixels), RGB, and the class names
    as the output's label file."""
    writer_module = _writer()
    writer = writer_module.MetadataWriter(bytearray(flatbuffer))
    writer.add_general_info(name, about)
    writer.add_image_input([0.0], [1.0])
    writer.add_classification_output(writer_module.Labels().add(list(class_names)))
    model, _ = writer.populate()
    return bytes(model)


def labels_in(flatbuffer: bytes) -> list[str]:
    """The label file packed in the model's metadata, one class per line ([] when none)."""
    import zipfile
    from io import BytesIO

    try:
        with zipfile.ZipFile(BytesIO(flatbuffer)) as packed:
            names = [n for n in packed.namelist() if n.endswith(".txt")]
            return packed.read(names[0]).decode().splitlines() if names else []
    except zipfile.BadZipFile:  # no associated files: no metadata
        return []


class Classifier:
    """MediaPipe's `ImageClassifier` on a model held in memory: called with uint8 RGB images
    [N, H, W, 3], returns float [N, K] scores by class index (all classes, one image per call,
    as an app calls it). Close it (or use `with`): MediaPipe's own clean-up at interpreter
    exit raises "Exception ignored" tracebacks. Raises UserError when MediaPipe refuses the
    file."""

    def __init__(self, flatbuffer: bytes) -> None:
        require_mediapipe()
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        options = vision.ImageClassifierOptions(
            base_options=BaseOptions(model_asset_buffer=flatbuffer), max_results=-1
        )
        try:
            self.task = vision.ImageClassifier.create_from_options(options)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"MediaPipe's ImageClassifier refuses the model: {exc}") from None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import mediapipe as mp

        rows = []
        for pixels in np.asarray(images, np.uint8):
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))
            categories = self.task.classify(frame).classifications[0].categories
            row = np.zeros(len(categories))
            for category in categories:
                row[category.index] = category.score
            rows.append(row)
        return np.stack(rows)

    def close(self) -> None:
        self.task.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


CALIBRATION_IMAGES = 200  # training images int8 quantisation calibrates its ranges on


def calibration_images(run_dir: Path) -> np.ndarray:
    """uint8 RGB [n, H, W, 3]: the first CALIBRATION_IMAGES readable training images of the
    run (its split re-made from config.yaml; only these are decoded)."""
    from imgclf.data.pool import readable_sample

    try:
        train = parity.remade_splits(run_dir).train
    except UserError as exc:
        raise UserError(f"int8 calibrates on the run's training images: {exc}") from None
    images, _ = readable_sample(train, CALIBRATION_IMAGES)
    images = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    # A black and a white frame: the uint8 input's range is then all of 0..255 (scale 1, zero
    # point 0), which is what MediaPipe feeds; calibrated on darker images alone, a 255 would
    # be read as less.
    extremes = np.stack([np.zeros_like(images[0]), np.full_like(images[0], 255)])
    return np.concatenate([images, extremes])


OWN_RESIZE_IMAGES = 64  # test photos sent at their own size, for MediaPipe's resize figures


def originals(run_dir: Path, n: int = OWN_RESIZE_IMAGES) -> list[np.ndarray] | None:
    """The first `n` test files of a folder or CSV run at their own size (uint8 RGB, imgclf's
    decoder, EXIF rotation included), in the order the parity check uses; None for a built-in
    source (its images are at the model's size already) or when one cannot be read."""
    from imgclf.config import load_config
    from imgclf.images import ImageError, load_image

    data = load_config(run_dir / runs.CONFIG).data
    try:
        test = parity.remade_splits(run_dir).test
    except UserError:
        return None
    if test.files is None or data.path is None:
        return None
    root = Path(data.path).expanduser()
    root = root.parent if data.source == "csv" else root
    try:
        return [load_image(root / f, None, 3) for f in test.files[:n]]
    except (ImageError, OSError):
        return None


def _own_resize(model: bytes, run_dir: Path, reference: parity.Reference) -> dict[str, Any]:
    """MediaPipe's answers on test photos at their own size (MediaPipe resizes them), compared
    with the run's answers on the same photos resized by imgclf's decoder: reported only, as
    the two resizes differ (MediaPipe's GPU-style bilinear against Pillow's)."""
    photos = originals(run_dir)
    if not photos:
        return {"skipped": "a built-in source, or the test photos are not there"}
    with Classifier(model) as classify:
        scores = np.concatenate([classify(photo[None]) for photo in photos])
    figures = parity.compare(scores, reference.probabilities[: len(photos)], None)["parity"]
    return {k: figures[k] for k in ("n_images", "max_abs_diff", "top1_agreement")}


def corpus_formats(model: bytes, keras_model: Any, reference: parity.Reference) -> dict:
    """The format corpus (`format_check`: each format × mode × EXIF orientation, made from a
    test image) read by MediaPipe's own decoder (`mp.Image.create_from_file`) and classified
    with its own resize, against what `Predictor` answers for the same file: per kind, the
    agreement, or MediaPipe's reason for not reading it. Reported, not required: MediaPipe
    does not apply EXIF orientation, and its decoder reads fewer formats than imgclf's."""
    import tempfile

    import mediapipe as mp

    from imgclf.export import format_check

    samples, _, expected, refused = format_check.reference_corpus(
        keras_model, reference.images, reference.batch_size, reference.tta
    )
    scores = np.zeros_like(expected)
    status: list[str | None] = []
    with Classifier(model) as classify, tempfile.TemporaryDirectory() as folder:
        for i, sample in enumerate(samples):
            path = Path(folder) / sample.name
            path.write_bytes(sample.data)
            try:
                frame = np.asarray(mp.Image.create_from_file(str(path)).numpy_view())
                frame = frame[..., None] if frame.ndim == 2 else frame
                # Grey (and grey + alpha) decode to 1 or 2 channels: the grey one as RGB.
                pixels = np.repeat(frame[..., :1], 3, -1) if frame.shape[-1] < 3 else frame
                scores[i] = classify(np.ascontiguousarray(pixels[..., :3])[None])[0]
                status.append(None if refused[i] is None else "imgclf refuses it too")
            except (RuntimeError, ValueError) as exc:
                status.append(f"not read by MediaPipe ({str(exc)[:80]})")
    return format_check.format_parity(samples, expected, scores, status)


def _require_raw_pixels(model: bytes, not_written: str) -> None:
    """ExportError unless the int8 model's uint8 input is the pixels as they are (scale 1, zero
    point 0): MediaPipe does not normalise a uint8 input."""
    from imgclf.export.tflite import _interpreter

    (given,) = _interpreter(model).get_input_details()
    scale, zero = given["quantization"]
    if abs(scale - 1.0) > 1e-6 or zero != 0:
        raise parity.ExportError(
            f"the int8 model's input reads pixels with scale {scale:.4f} and zero point {zero}, "
            f"not as they are (MediaPipe feeds raw 0..255); {not_written}"
        )


def export_run(
    run_dir: str | Path,
    loaded: tuple[Any, parity.Reference] | None = None,
    quantize: str | None = None,
) -> dict[str, Any]:
    """`imgclf-export RUN --format mediapipe [--quantize int8]`: convert from the run's
    SavedModel (int8: calibrated on training images), add the metadata, classify the run's test
    images in MediaPipe, compare, write `model_mediapipe.tflite` (`model_mediapipe_int8.tflite`)
    and record it in exports.json. A float file that disagrees is not written; an int8 one
    reports its agreement and accuracy drop. Raises UserError (no SavedModel, no mediapipe, a
    refused file) or ExportError (the float file disagrees with model.keras)."""
    run_dir = Path(run_dir)
    _writer()  # the install hint before any work
    saved_model = run_dir / runs.SAVED_MODEL
    if not (saved_model / "saved_model.pb").is_file():
        raise UserError(f"{run_dir} has no {runs.SAVED_MODEL}/; run imgclf-export {run_dir} first")
    runs.verify_manifest(run_dir, runs.SAVED_MODEL)
    keras_model, reference = loaded or parity.load_for_export(run_dir)
    class_names = runs.read_labels(run_dir)
    name = runs.read_config(run_dir).get("name") or run_dir.name
    path = runs.MEDIAPIPE_INT8 if quantize else runs.MEDIAPIPE
    calibration = calibration_images(run_dir) if quantize else None
    model = with_metadata(
        convert(saved_model, calibration),
        class_names,
        str(name),
        f"imgclf image classifier ({run_dir.name}{', int8' if quantize else ''})",
    )
    not_written = f"{path} was not written"
    if quantize:
        _require_raw_pixels(model, not_written)
    if labels_in(model) != list(class_names):
        raise UserError(f"the model's metadata does not list the run's classes; {not_written}")
    images = reference.images
    rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    with Classifier(model) as classify:
        scores = classify(rgb)
    record = {"path": path, "runtime": "mediapipe ImageClassifier", "quantized": quantize or False,
              "size_bytes": len(model), "sha256": hashlib.sha256(model).hexdigest(),
              **parity.compare(scores, reference.probabilities, reference.labels)}  # fmt: skip
    if not quantize:
        parity.require_parity("MediaPipe model", record["parity"], not_written)
        record["own_resize"] = _own_resize(model, run_dir, reference)
        record["formats"] = corpus_formats(model, keras_model, reference)
        record["tta"] = reference.tta  # carried from the SavedModel it is converted from
    with runs.atomic_path(run_dir / path) as tmp:
        tmp.write_bytes(model)
    parity.record_export(run_dir, "mediapipe_int8" if quantize else "mediapipe", record)
    return record
