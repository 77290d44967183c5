"""TensorFlow Lite export of a run, checked against model.keras in the TFLite interpreter.

`model.tflite` (float32) is converted from the run's checked SavedModel (`serving_default`: raw
pixels in, probabilities and label out); `model_int8.tflite` uses dynamic-range int8 weights
(`--quantize int8`). Each is run on the test split (up to 1,000 images) in the interpreter and
compared with model.keras: max |Δp|, top-1 agreement and test accuracy go to exports.json. A float
export that disagrees (more than 1e-4, or under 99.9% top-1 agreement) is not written; a
quantised one reports its accuracy drop and is marked `quantized`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imgclf import runs
from imgclf.errors import UserError

FLOAT_FILE = "model.tflite"
INT8_FILE = "model_int8.tflite"


def _interpreter(path_or_bytes: str | Path | bytes) -> Any:
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it moves to the ai-edge-litert package; it still works.
        warnings.simplefilter("ignore")
        if isinstance(path_or_bytes, bytes):
            return tf.lite.Interpreter(model_content=path_or_bytes)
        return tf.lite.Interpreter(model_path=str(path_or_bytes))


def tflite_function(path_or_bytes: str | Path | bytes) -> tuple[Any, tuple[int, int, int]]:
    """(fn: pixels float32 [N, H, W, C] -> probabilities [N, classes], (H, W, C)) for a .tflite
    model written by imgclf (its `serving_default` signature)."""
    from imgclf.export import INPUT_NAME, OUTPUT_NAME, SIGNATURE

    interpreter = _interpreter(path_or_bytes)
    runner = interpreter.get_signature_runner(SIGNATURE)
    details = runner.get_input_details()[INPUT_NAME]
    shape = tuple(int(d) for d in details["shape_signature"][1:])

    def fn(batch: np.ndarray) -> np.ndarray:
        return np.asarray(runner(**{INPUT_NAME: np.asarray(batch, np.float32)})[OUTPUT_NAME])

    return fn, shape  # type: ignore[return-value]


def convert(saved_model_dir: str | Path, quantize: str | None = None) -> bytes:
    """The TFLite flatbuffer of a SavedModel's `serving_default` (int8 dynamic range if asked)."""
    import tensorflow as tf

    from imgclf.export import SIGNATURE

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[SIGNATURE]
    )
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no dataset: dynamic range
    elif quantize is not None:
        raise UserError(f"--quantize: unknown mode {quantize!r}; the choice is int8")
    return converter.convert()


def export_tflite(
    run_dir: str | Path,
    model: Any,
    images: np.ndarray,
    labels: np.ndarray | None,
    quantize: str | None = None,
) -> dict[str, Any]:
    """Write `model.tflite` (or `model_int8.tflite`) into the run after checking it on `images`
    (raw pixels, with their true `labels` when known); returns its exports.json record."""
    from imgclf.evaluate import predict_proba
    from imgclf.export import PARITY_MAX_IMAGES, PARITY_MIN_AGREEMENT, PARITY_TOLERANCE, ExportError

    run_dir = Path(run_dir)
    saved_model = run_dir / runs.SAVED_MODEL
    if not (saved_model / "saved_model.pb").is_file():
        raise UserError(f"{run_dir} has no {runs.SAVED_MODEL}/; run imgclf-export {run_dir} first")
    runs.verify_manifest(run_dir, runs.SAVED_MODEL)
    flatbuffer = convert(saved_model, quantize)
    fn, _ = tflite_function(flatbuffer)
    images = np.asarray(images[:PARITY_MAX_IMAGES], np.float32)
    exported = np.concatenate([fn(images[i : i + 256]) for i in range(0, len(images), 256)])
    reference = predict_proba(model, images)
    record: dict[str, Any] = {
        "path": INT8_FILE if quantize else FLOAT_FILE,
        "quantized": quantize or False,
        "size_bytes": len(flatbuffer),
        "parity": {
            "n_images": len(images),
            "max_abs_diff": float(np.abs(exported - reference).max()),
            "top1_agreement": float((exported.argmax(1) == reference.argmax(1)).mean()),
            "tolerance": PARITY_TOLERANCE,
        },
    }
    if labels is not None:
        labels = np.asarray(labels[: len(images)])
        keras_acc = float((reference.argmax(1) == labels).mean())
        record["test_accuracy"] = float((exported.argmax(1) == labels).mean())
        record["keras_test_accuracy"] = keras_acc
        record["accuracy_drop"] = keras_acc - record["test_accuracy"]
    parity = record["parity"]
    if not quantize and (
        parity["max_abs_diff"] > PARITY_TOLERANCE or parity["top1_agreement"] < PARITY_MIN_AGREEMENT
    ):
        raise ExportError(
            f"TFLite model disagrees with model.keras: max |Δp| = {parity['max_abs_diff']:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e}), top-1 agreement {parity['top1_agreement']:.2%} "
            f"on {parity['n_images']} images; {record['path']} was not written"
        )
    with runs.atomic_path(run_dir / record["path"]) as tmp:
        tmp.write_bytes(flatbuffer)
    return record


def export_tflite_run(run_dir: str | Path, quantize: str | None = None) -> dict[str, Any]:
    """`imgclf-export RUN --format tflite [--quantize int8]`: convert, check on the run's test
    split, write the file, and record it in exports.json (and the manifest)."""
    from imgclf.export import check_split
    from imgclf.models.registry import load_run_model

    run_dir = Path(run_dir)
    if not runs.is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a run directory (no {runs.MODEL} and {runs.LABELS})")
    model = load_run_model(run_dir)
    _, height, width, channels = model.input_shape
    images, labels = check_split(run_dir, (height, width), channels)
    record = export_tflite(run_dir, model, images, labels, quantize)
    exports_path = run_dir / runs.EXPORTS
    exports = runs.read_json(exports_path) if exports_path.is_file() else {}
    exports["tflite_int8" if quantize else "tflite"] = record
    runs.write_json(exports_path, exports)
    runs.write_manifest(run_dir)
    return record
