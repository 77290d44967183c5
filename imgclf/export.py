"""Export a trained run as a TensorFlow SavedModel that takes raw pixels, checked against the Keras
model: the export is rejected (and any previous good export kept) if the two disagree."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgclf import runs
from imgclf.errors import UserError

PARITY_TOLERANCE = 1e-4  # max |p_savedmodel - p_keras| over the checked images
PARITY_MAX_IMAGES = 1000
PARITY_MIN_AGREEMENT = 0.999  # top-1 labels; below 1.0 only so an exact tie cannot fail it
SIGNATURE = "serving_default"
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"


class ExportError(RuntimeError):
    """The exported artifact does not reproduce the trained model."""


def write_saved_model(model: Any, path: str | Path) -> None:
    """Write `model` as a SavedModel whose `serving_default` maps pixels -> probabilities.

    Input `pixels`: float32 [N, H, W, C], raw 0..255 at the model's size; output `probabilities`:
    float32 [N, num_classes]. Preprocessing is inside the model, so clients send raw pixels.
    """
    import keras
    import tensorflow as tf

    _, height, width, channels = model.input_shape
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(pixels, training=False)}

    spec = tf.TensorSpec([None, height, width, channels], tf.float32, name=INPUT_NAME)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def parity(saved_model_dir: str | Path, model: Any, images: np.ndarray) -> dict[str, Any]:
    """Run `images` through the reloaded SavedModel and the Keras model; compare probabilities."""
    import tensorflow as tf

    from imgclf.evaluate import predict_proba

    images = np.asarray(images[:PARITY_MAX_IMAGES], dtype=np.float32)
    serving = tf.saved_model.load(str(saved_model_dir)).signatures[SIGNATURE]
    exported = np.concatenate(
        [
            serving(**{INPUT_NAME: tf.constant(images[i : i + 256])})[OUTPUT_NAME].numpy()
            for i in range(0, len(images), 256)
        ]
    )
    reference = predict_proba(model, images)
    return {
        "n_images": len(images),
        "max_abs_diff": float(np.abs(exported - reference).max()),
        "top1_agreement": float((exported.argmax(1) == reference.argmax(1)).mean()),
        "tolerance": PARITY_TOLERANCE,
    }


def export_saved_model(
    model: Any, class_names: list[str], target: str | Path, check_images: np.ndarray
) -> dict[str, Any]:
    """Write `target` (a SavedModel + labels.json) atomically after a parity check passes.

    Raises ExportError with the figures if the SavedModel differs from `model` by more than
    PARITY_TOLERANCE; `target` is then left untouched.
    """
    if len(check_images) == 0:
        raise ExportError("no images to check the export against")
    target = Path(target)
    with runs.atomic_path(target) as tmp:
        write_saved_model(model, tmp)
        runs.write_json(tmp / runs.LABELS, list(class_names))
        report = parity(tmp, model, check_images)
        if (
            report["max_abs_diff"] > PARITY_TOLERANCE
            or report["top1_agreement"] < PARITY_MIN_AGREEMENT
        ):
            raise ExportError(
                f"SavedModel disagrees with model.keras: max |Δp| = {report['max_abs_diff']:.2e} "
                f"(tolerance {PARITY_TOLERANCE:.0e}), top-1 agreement "
                f"{report['top1_agreement']:.2%} on {report['n_images']} images; "
                f"nothing was written to {target}"
            )
    return report


def _check_images(run_dir: Path, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """Test images of the run: its split re-made from config.yaml, else its saved samples."""
    from imgclf.config import load_config
    from imgclf.data import load_data
    from imgclf.images import IMAGE_EXTENSIONS, load_image

    try:
        return load_data(load_config(run_dir / runs.CONFIG)).test.x
    except UserError as exc:
        print(
            f"warning: cannot re-load the test split ({exc}); checking on samples/", file=sys.stderr
        )
    samples = sorted(
        p for p in (run_dir / runs.SAMPLES).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not samples:
        raise UserError(f"{run_dir}: no test data and no samples/ to check the export against")
    return np.stack([load_image(p, image_size, channels) for p in samples])


def export_run(
    run_dir: str | Path, out: str | Path | None = None, check_images: np.ndarray | None = None
) -> Path:
    """Export `run_dir/model.keras` to `out` (default `run_dir/saved_model`) and record parity in
    `run_dir/exports.json`. Returns the SavedModel path."""
    import keras

    run_dir = Path(run_dir)
    if not runs.is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a run directory (no {runs.MODEL} and {runs.LABELS})")
    from imgclf.models.registry import register_custom_layers

    register_custom_layers()  # imgclf's Abs/Maxout must be known before safe-mode loading
    model = keras.saving.load_model(run_dir / runs.MODEL, compile=False, safe_mode=True)
    class_names = runs.read_labels(run_dir)
    _, height, width, channels = model.input_shape
    if check_images is None:
        check_images = _check_images(run_dir, (height, width), channels)
    target = Path(out) if out is not None else run_dir / runs.SAVED_MODEL
    report = export_saved_model(model, class_names, target, check_images)
    exports_path = run_dir / runs.EXPORTS
    exports = runs.read_json(exports_path) if exports_path.is_file() else {}
    exports["saved_model"] = {
        "path": str(target.resolve()) if out is not None else runs.SAVED_MODEL,
        "signature": SIGNATURE,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": [None, height, width, channels],
            "range": [0, 255],
        },
        "output": {"name": OUTPUT_NAME, "shape": [None, len(class_names)]},
        "parity": report,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    runs.write_json(exports_path, exports)
    return target


def main(argv: list[str] | None = None) -> int:
    """`python -m imgclf.export RUN_DIR [--out DIR]`."""
    parser = argparse.ArgumentParser(
        prog="imgclf-export",
        description="Export a trained run as a SavedModel taking raw pixels, checked for parity.",
    )
    parser.add_argument("run_dir", help="a run directory written by imgclf-train")
    parser.add_argument("--out", help="where to write the SavedModel (default RUN_DIR/saved_model)")
    args = parser.parse_args(argv)
    try:
        path = export_run(args.run_dir, args.out)
    except (UserError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) else 1
    report = runs.read_json(Path(args.run_dir) / runs.EXPORTS)["saved_model"]["parity"]
    print(
        f"parity: max |Δp| {report['max_abs_diff']:.2e}, top-1 agreement "
        f"{report['top1_agreement']:.2%} on {report['n_images']} test images"
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
