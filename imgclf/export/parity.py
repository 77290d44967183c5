"""What every export format shares: comparing an artifact's probabilities with model.keras'
(`compare`), the thresholds a float export must meet (`require_parity`), the images to check on
(the run's test split, `load_for_export`), and recording an export in exports.json, the model
card and the manifest (`record_export`). Each format module (saved_model, tflite, onnx) writes
its artifact, checks it here, and loads it for `Predictor`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from imgclf import faults, runs
from imgclf.errors import UserError

PARITY_TOLERANCE = 1e-4  # max |p_export - p_keras| over the checked images
PARITY_MAX_IMAGES = 1000
PARITY_MIN_AGREEMENT = 0.999  # top-1 labels; below 1.0 only so an exact tie cannot fail it
ACCURACY_KEYS = ("test_accuracy", "keras_test_accuracy", "accuracy_drop")


class ExportError(RuntimeError):
    """The exported artifact does not reproduce the trained model."""


def compare(
    exported: np.ndarray, reference: np.ndarray, labels: np.ndarray | None
) -> dict[str, Any]:
    """The parity figures of an export's probabilities against model.keras' on the same images:
    `parity` (max |Δp|, top-1 agreement) and, when the true `labels` are known, the test accuracy
    of each and the drop."""
    record: dict[str, Any] = {
        "parity": {
            "n_images": len(exported),
            "max_abs_diff": float(np.abs(exported - reference).max()),
            "top1_agreement": float((exported.argmax(1) == reference.argmax(1)).mean()),
            "tolerance": PARITY_TOLERANCE,
        }
    }
    if labels is not None:
        labels = np.asarray(labels[: len(exported)])
        keras_acc = float((reference.argmax(1) == labels).mean())
        record["test_accuracy"] = float((exported.argmax(1) == labels).mean())
        record["keras_test_accuracy"] = keras_acc
        record["accuracy_drop"] = keras_acc - record["test_accuracy"]
    return record


def require_parity(what: str, parity: dict[str, Any], not_written: str) -> None:
    """Raise ExportError with the figures if a float export is outside the thresholds."""
    diff, agree = parity["max_abs_diff"], parity["top1_agreement"]
    if diff > PARITY_TOLERANCE or agree < PARITY_MIN_AGREEMENT:
        raise ExportError(
            f"{what} disagrees with model.keras: max |Δp| = {diff:.2e} (tolerance "
            f"{PARITY_TOLERANCE:.0e}), top-1 agreement {agree:.2%} on {parity['n_images']} "
            f"images; {not_written}"
        )


def record_export(run_dir: str | Path, key: str, record: dict[str, Any]) -> None:
    """Store `record` as exports.json[key], refresh the model card's export table, and re-write
    the manifest (the new artifact and both files are part of the run)."""
    from imgclf.model_card import refresh_export_section

    run_dir = Path(run_dir)
    exports_path = run_dir / runs.EXPORTS
    exports = runs.read_json(exports_path) if exports_path.is_file() else {}
    exports[key] = record
    runs.write_json(exports_path, exports)
    refresh_export_section(run_dir, exports)
    faults.point("export")
    runs.write_manifest(run_dir)


def batched(fn: Any, images: np.ndarray, size: int = 256, dtype: Any = None) -> np.ndarray:
    """`fn` applied to `images` in chunks of `size` (each cast to `dtype` when given, so a
    float copy of all the images never exists at once), concatenated."""
    chunks = (images[i : i + size] for i in range(0, len(images), size))
    return np.concatenate([fn(c if dtype is None else c.astype(dtype)) for c in chunks])


def check_split(
    run_dir: Path, image_size: tuple[int, int], channels: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) to check an export against: the run's test split re-made from
    config.yaml, else its saved samples/ (labels unknown then)."""
    from imgclf.config import load_config
    from imgclf.data import load_data
    from imgclf.data.pool import readable_sample
    from imgclf.images import IMAGE_EXTENSIONS, load_image

    try:
        test = load_data(load_config(run_dir / runs.CONFIG)).test
        return readable_sample(test, PARITY_MAX_IMAGES)
    except UserError as exc:
        print(
            f"warning: cannot re-load the test split ({exc}); checking on samples/", file=sys.stderr
        )
    samples = sorted(
        p for p in (run_dir / runs.SAMPLES).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not samples:
        raise UserError(f"{run_dir}: no test data and no samples/ to check the export against")
    return np.stack([load_image(p, image_size, channels) for p in samples]), None


def load_for_export(run_dir: str | Path) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """(model.keras checked against the manifest, check images, their labels or None)."""
    from imgclf.models.saving import load_run_model

    run_dir = Path(run_dir)
    if not (runs.is_run_dir(run_dir) or runs.in_run(run_dir)):
        raise UserError(f"{run_dir} is not a run directory (no {runs.MODEL} and {runs.LABELS})")
    model = load_run_model(run_dir)
    _, height, width, channels = model.input_shape
    images, labels = check_split(run_dir, (height, width), channels)
    return model, images, labels
