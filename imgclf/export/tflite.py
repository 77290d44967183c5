"""TensorFlow Lite export of a run, checked against model.keras in the TFLite interpreter.

`model.tflite` (float32) is converted from the run's checked SavedModel (`serving_default`: raw
pixels in, probabilities and label out); `model_int8.tflite` uses dynamic-range int8 weights
(`--quantize int8`). Each is run on the first 256 test images (`parity.PARITY_MAX_IMAGES`) in
the interpreter and compared with model.keras: max |Δp|, top-1 agreement and test accuracy go to
exports.json. A float export that disagrees (more than 1e-4, or under 99.9% top-1 agreement) is
not written; a quantised one reports its accuracy drop and is marked `quantized`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from imgclf import runs
from imgclf.confidence.ood import FLAG_NAME, SCORE_NAME
from imgclf.export import format_check, parity
from imgclf.export.saved_model import INPUT_NAME, OUTPUT_NAME, SIGNATURE
from imgclf.infra.errors import UserError

OOD_OUTPUTS = (SCORE_NAME, FLAG_NAME)


def _interpreter(path_or_bytes: str | Path | bytes) -> Any:
    import tensorflow as tf

    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it moves to the ai-edge-litert package; it still works.
        warnings.simplefilter("ignore")
        if isinstance(path_or_bytes, bytes):
            return tf.lite.Interpreter(model_content=path_or_bytes)
        return tf.lite.Interpreter(model_path=str(path_or_bytes))


def load_function(
    path_or_bytes: str | Path | bytes, outputs: bool = False
) -> tuple[Any, tuple[int, int, int]]:
    """(fn: pixels float32 [N, H, W, C] -> probabilities [N, classes], (H, W, C)) for a .tflite
    model written by imgclf (its `serving_default` signature). With `outputs`, fn returns the
    dict of numeric outputs instead: `probabilities`, and `ood_score` and `ood` when the run
    has an OOD detector (the string `label` is left out)."""
    interpreter = _interpreter(path_or_bytes)
    runner = interpreter.get_signature_runner(SIGNATURE)
    if INPUT_NAME not in runner.get_input_details():
        raise UserError(
            f"{path_or_bytes if not isinstance(path_or_bytes, bytes) else 'the model'}: a TFLite "
            f"file without imgclf's `{INPUT_NAME}` input (model_mediapipe*.tflite is made for "
            "MediaPipe Tasks); use the run's model.tflite here"
        )
    details = runner.get_input_details()[INPUT_NAME]
    shape = tuple(int(d) for d in details["shape_signature"][1:])

    def fn(batch: np.ndarray) -> Any:
        out = runner(**{INPUT_NAME: np.asarray(batch, np.float32)})
        if not outputs:
            return np.asarray(out[OUTPUT_NAME])
        return {k: np.asarray(v) for k, v in out.items() if k in (OUTPUT_NAME, *OOD_OUTPUTS)}

    return fn, shape  # type: ignore[return-value]


def convert(saved_model_dir: str | Path, quantize: str | None = None) -> bytes:
    """The TFLite flatbuffer of a SavedModel's `serving_default` (int8 dynamic range if asked)."""
    import tensorflow as tf

    if quantize not in (None, "int8"):
        raise UserError(f"--quantize: unknown mode {quantize!r}; the choice is int8")
    with runs.glob_safe(saved_model_dir) as readable:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(readable), signature_keys=[SIGNATURE]
        )
        if quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no dataset: dynamic range
        return converter.convert()


def _ood_columns(flatbuffer: bytes) -> Any:
    """fn: pixels -> float [N, 2] (ood_score, ood flag), for `parity.ood_parity`."""
    fn, _ = load_function(flatbuffer, outputs=True)

    def columns(batch: np.ndarray) -> np.ndarray:
        out = fn(batch)
        return np.stack([out[SCORE_NAME], out[FLAG_NAME]], axis=1)

    return columns


def export_tflite(
    run_dir: str | Path, model: Any, reference: parity.Reference, quantize: str | None = None
) -> dict[str, Any]:
    """Write `model.tflite` (or `model_int8.tflite`) into the run after checking it against
    `reference` (the run's answers on its test images); returns its exports.json record."""
    run_dir = Path(run_dir)
    saved_model = run_dir / runs.SAVED_MODEL
    if not (saved_model / "saved_model.pb").is_file():
        raise UserError(f"{run_dir} has no {runs.SAVED_MODEL}/; run imgclf-export {run_dir} first")
    runs.verify_manifest(run_dir, runs.SAVED_MODEL)
    flatbuffer = convert(saved_model, quantize)
    fn, _ = load_function(flatbuffer)
    images, size = reference.images, reference.batch_size
    record: dict[str, Any] = {
        "path": runs.TFLITE_INT8 if quantize else runs.TFLITE,
        "quantized": quantize or False,
        "size_bytes": len(flatbuffer),
        **parity.compare(
            parity.batched(fn, images, size, np.float32), reference.probabilities, reference.labels
        ),
    }
    record["formats"] = format_check.pixel_artifact_formats(fn, model, reference)
    record["tta"] = reference.tta  # carried from the SavedModel it is converted from
    if reference.ood_scores is not None:
        record["ood_parity"] = parity.ood_parity(
            parity.batched(_ood_columns(flatbuffer), images, size, np.float32), reference
        )
    if not quantize:
        not_written = f"{record['path']} was not written"
        parity.require_parity("TFLite model", record["parity"], not_written)
        format_check.require_pixel_formats("TFLite model", record["formats"], not_written)
        if reference.ood_scores is not None:
            parity.require_ood_parity("TFLite model", record["ood_parity"], not_written)
    with runs.atomic_path(run_dir / record["path"]) as tmp:
        tmp.write_bytes(flatbuffer)
    return record


def export_run(
    run_dir: str | Path,
    quantize: str | None = None,
    loaded: tuple[Any, parity.Reference] | None = None,
) -> dict[str, Any]:
    """`imgclf-export RUN --format tflite [--quantize int8]`: convert, check on the run's test
    split, write the file, and record it in exports.json (and the manifest). `loaded`: what
    `parity.load_for_export(run_dir)` gave, when the caller exports another format too."""
    model, reference = loaded or parity.load_for_export(run_dir)
    record = export_tflite(run_dir, model, reference, quantize)
    parity.record_export(run_dir, "tflite_int8" if quantize else "tflite", record)
    return record


def load(path: str | Path) -> tuple[Any, tuple[int, int, int], list[str]]:
    """(fn, (H, W, C), class names) for a run's .tflite file, checked with its labels.json
    against the run's manifest. Raises UserError (not in a run) or IntegrityError."""
    path = Path(path)
    run_dir = path.parent
    if not (run_dir / runs.LABELS).is_file():
        raise UserError(f"{path}: no {runs.LABELS} next to it; keep it in its run directory")
    runs.check_run(run_dir, path.name, runs.LABELS)
    fn, shape = load_function(path, outputs=True)
    return fn, shape, runs.read_labels(run_dir)
