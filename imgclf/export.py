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
LABEL_NAME = "label"
BYTES_SIGNATURE = "serve_bytes"
BYTES_INPUT_NAME = "images"


_ACCURACY_KEYS = ("test_accuracy", "keras_test_accuracy", "accuracy_drop")


class ExportError(RuntimeError):
    """The exported artifact does not reproduce the trained model."""


def write_saved_model(model: Any, path: str | Path, class_names: list[str] | None = None) -> None:
    """Write `model` as a SavedModel with two signatures, both returning `probabilities`
    (float32 [N, classes]) and, given `class_names`, `label` (string [N], the top-1 class):

    - `serving_default`: `pixels`, float32 [N, H, W, C], raw 0..255 at the model's size;
    - `serve_bytes`: `images`, string [N], encoded JPEG/PNG/GIF/BMP/WebP files, decoded to C
      channels and resized to H×W inside the graph (bilinear, antialiased, rounded to whole
      levels like imgclf's decoder). In-graph decoding applies no EXIF rotation and drops alpha
      instead of compositing it: send upright, opaque images.

    Preprocessing is inside the model, so clients need no imgclf code and no label file.
    """
    import keras
    import tensorflow as tf

    _, height, width, channels = model.input_shape
    archive = keras.export.ExportArchive()
    archive.track(model)
    labels = tf.constant(list(class_names)) if class_names else None

    def outputs(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        probs = model(pixels, training=False)
        out = {OUTPUT_NAME: probs}
        if labels is not None:
            out[LABEL_NAME] = tf.gather(labels, tf.argmax(probs, axis=1))
        return out

    def decode_one(data: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
        return tf.clip_by_value(tf.round(image), 0.0, 255.0)

    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return outputs(pixels)

    def serve_bytes(images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.map_fn(
            decode_one,
            images,
            fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32),
        )
        return outputs(pixels)

    spec = tf.TensorSpec([None, height, width, channels], tf.float32, name=INPUT_NAME)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
    archive.add_endpoint(
        name=BYTES_SIGNATURE,
        fn=serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


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
    runs.write_manifest(run_dir)


def batched(fn: Any, images: np.ndarray, size: int = 256) -> np.ndarray:
    """`fn` applied to `images` in chunks of `size`, concatenated."""
    return np.concatenate([fn(images[i : i + size]) for i in range(0, len(images), size)])


def _encode_png(images: np.ndarray) -> list[bytes]:
    """Lossless PNG files of uint8-valued pixel arrays [N, H, W, C]."""
    import io

    from PIL import Image

    encoded = []
    for image in np.asarray(images).astype(np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded


def parity(
    saved_model_dir: str | Path, model: Any, images: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, Any]:
    """Run `images` through the reloaded SavedModel (both signatures; `serve_bytes` gets them as
    PNG files) and the Keras model; compare probabilities and top-1 labels (and, given the true
    `labels`, report `serving_default`'s test accuracy)."""
    import tensorflow as tf

    from imgclf.evaluate import predict_proba

    images = np.asarray(images[:PARITY_MAX_IMAGES], dtype=np.float32)
    with runs.glob_safe(saved_model_dir) as readable:
        loaded = tf.saved_model.load(str(readable))
    serving, from_bytes = loaded.signatures[SIGNATURE], loaded.signatures[BYTES_SIGNATURE]
    encoded = np.array(_encode_png(images), dtype=object)
    exported = batched(
        lambda b: serving(**{INPUT_NAME: tf.constant(b)})[OUTPUT_NAME].numpy(), images
    )
    via_bytes = batched(
        lambda b: from_bytes(**{BYTES_INPUT_NAME: tf.constant(list(b))})[OUTPUT_NAME].numpy(),
        encoded,
    )
    reference = predict_proba(model, images)
    figures = compare(exported, reference, labels)
    report = figures.pop("parity")
    report.update(figures)  # test_accuracy, keras_test_accuracy, accuracy_drop when labelled
    from_files = compare(via_bytes, reference, None)["parity"]
    report["serve_bytes_max_abs_diff"] = from_files["max_abs_diff"]
    report["serve_bytes_top1_agreement"] = from_files["top1_agreement"]
    return report


def export_saved_model(
    model: Any,
    class_names: list[str],
    target: str | Path,
    check_images: np.ndarray,
    check_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write `target` (a SavedModel + labels.json) atomically after a parity check passes.

    Raises ExportError with the figures if the SavedModel differs from `model` by more than
    PARITY_TOLERANCE; `target` is then left untouched.
    """
    if len(check_images) == 0:
        raise ExportError("no images to check the export against")
    target = Path(target)
    with runs.atomic_path(target) as tmp:
        write_saved_model(model, tmp, list(class_names))
        runs.write_json(tmp / runs.LABELS, list(class_names))
        report = parity(tmp, model, check_images, check_labels)
        for prefix, signature in (("", SIGNATURE), ("serve_bytes_", BYTES_SIGNATURE)):
            figures = {
                "n_images": report["n_images"],
                "max_abs_diff": report[f"{prefix}max_abs_diff"],
                "top1_agreement": report[f"{prefix}top1_agreement"],
            }
            require_parity(
                f"SavedModel signature {signature}", figures, f"nothing was written to {target}"
            )
    return report


def saved_model_record(
    path: str, model: Any, class_names: list[str], report: dict[str, Any], size_bytes: int
) -> dict[str, Any]:
    """The `saved_model` entry of exports.json: where, its size on disk, both signatures, and
    the parity figures."""
    _, height, width, channels = model.input_shape
    outputs = {
        OUTPUT_NAME: {"dtype": "float32", "shape": [None, len(class_names)]},
        LABEL_NAME: {"dtype": "string", "shape": [None]},
    }
    return {
        "path": path,
        "signatures": {
            SIGNATURE: {
                "inputs": {
                    INPUT_NAME: {
                        "dtype": "float32",
                        "shape": [None, height, width, channels],
                        "range": [0, 255],
                    }
                },
                "outputs": outputs,
            },
            BYTES_SIGNATURE: {
                "inputs": {
                    BYTES_INPUT_NAME: {
                        "dtype": "string",
                        "shape": [None],
                        "formats": ["jpeg", "png", "gif", "bmp", "webp"],
                    }
                },
                "outputs": outputs,
            },
        },
        "size_bytes": size_bytes,
        "parity": {k: v for k, v in report.items() if k not in _ACCURACY_KEYS},
        **{k: report[k] for k in _ACCURACY_KEYS if k in report},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def check_split(
    run_dir: Path, image_size: tuple[int, int], channels: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) to check an export against: the run's test split re-made from
    config.yaml, else its saved samples/ (labels unknown then)."""
    from imgclf.config import load_config
    from imgclf.data import load_data
    from imgclf.images import IMAGE_EXTENSIONS, load_image

    try:
        test = load_data(load_config(run_dir / runs.CONFIG)).test
        return test.x, test.y
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
    from imgclf.models.registry import load_run_model

    run_dir = Path(run_dir)
    if not runs.is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a run directory (no {runs.MODEL} and {runs.LABELS})")
    model = load_run_model(run_dir)
    _, height, width, channels = model.input_shape
    images, labels = check_split(run_dir, (height, width), channels)
    return model, images, labels


def next_serving_version(serving_dir: str | Path) -> int:
    """The next version number under a TF Serving model folder: 1 + the largest numeric
    sub-folder (1 for a new folder). TF Serving serves the highest version it finds."""
    folder = Path(serving_dir)
    if not folder.is_dir():
        return 1
    versions = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    check_images: np.ndarray | None = None,
    serving_dir: str | Path | None = None,
) -> Path:
    """Export `run_dir/model.keras` to `out` (default `run_dir/saved_model`), or to the next
    version folder `serving_dir/<N>/` in TF Serving's layout, and record parity in
    `run_dir/exports.json`. Returns the SavedModel path.

    The SavedModel is written under a hidden temporary name next to its target and renamed into
    place only after its parity check passed, so a model server watching `serving_dir` never
    sees a half-written or unchecked version.
    """

    run_dir = Path(run_dir)
    if not runs.is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a run directory (no {runs.MODEL} and {runs.LABELS})")
    from imgclf.models.registry import load_run_model

    model = load_run_model(run_dir)  # checked against manifest.json, safe mode
    class_names = runs.read_labels(run_dir)
    _, height, width, channels = model.input_shape
    check_labels = None
    if check_images is None:
        check_images, check_labels = check_split(run_dir, (height, width), channels)
    if serving_dir is not None and out is not None:
        raise UserError("give either --out or --serving-dir, not both")
    if serving_dir is not None:
        target = Path(serving_dir) / str(next_serving_version(serving_dir))
    else:
        target = Path(out) if out is not None else run_dir / runs.SAVED_MODEL
    report = export_saved_model(model, class_names, target, check_images, check_labels)
    inside = out is None and serving_dir is None
    record = saved_model_record(
        runs.SAVED_MODEL if inside else str(target.resolve()),
        model,
        class_names,
        report,
        runs.tree_size(target),
    )
    if serving_dir is not None:
        record["version"] = int(target.name)
    record_export(run_dir, "tf_serving" if serving_dir is not None else "saved_model", record)
    return target


def _report(what: str, record: dict[str, Any], path: Path) -> None:
    """Print an export's parity line and its path."""
    p = record["parity"]
    acc = f", test accuracy {record['test_accuracy']:.4f}" if "test_accuracy" in record else ""
    print(
        f"{what}: max |Δp| {p['max_abs_diff']:.2e}, top-1 agreement {p['top1_agreement']:.2%} "
        f"on {p['n_images']} test images{acc}"
    )
    print(path)


def main(argv: list[str] | None = None) -> int:
    """`python -m imgclf.export RUN_DIR [--format saved_model|tflite|onnx|all]
    [--quantize int8] [--out DIR | --serving-dir DIR]`."""
    parser = argparse.ArgumentParser(
        prog="imgclf-export",
        description="Export a trained run (SavedModel, TFLite, ONNX), each checked for parity "
        "against model.keras on the run's test split.",
    )
    parser.add_argument("run_dir", help="a run directory written by imgclf-train")
    parser.add_argument("--out", help="where to write the SavedModel (default RUN_DIR/saved_model)")
    parser.add_argument(
        "--serving-dir",
        help="a TF Serving model folder (e.g. models/digits): writes the next version DIR/<N>/",
    )
    parser.add_argument(
        "--format",
        choices=("saved_model", "tflite", "onnx", "all"),
        default="saved_model",
        help="saved_model (default): RUN_DIR/saved_model/; tflite: RUN_DIR/model.tflite from "
        "the SavedModel; onnx: RUN_DIR/model.onnx (needs the [onnx] extra); all: all three",
    )
    parser.add_argument(
        "--quantize", choices=("int8",), help="tflite: dynamic-range int8 (model_int8.tflite)"
    )
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    formats = ("saved_model", "tflite", "onnx") if args.format == "all" else (args.format,)
    try:
        if formats != ("saved_model",) and (args.out or args.serving_dir):
            raise UserError("--out and --serving-dir apply to --format saved_model only")
        if args.quantize and "tflite" not in formats:
            raise UserError("--quantize int8 applies to --format tflite (or all)")
        if "onnx" in formats:
            from imgclf.onnx_export import require_onnx

            require_onnx()  # before minutes of other exports, not after
        if "saved_model" in formats:
            path = export_run(run_dir, args.out, serving_dir=args.serving_dir)
            key = "tf_serving" if args.serving_dir else "saved_model"
            _report("saved_model", runs.read_json(run_dir / runs.EXPORTS)[key], path)
        if "tflite" in formats:
            from imgclf.tflite import export_tflite_run

            record = export_tflite_run(run_dir, args.quantize)
            _report(f"tflite{' int8' if args.quantize else ''}", record, run_dir / record["path"])
        if "onnx" in formats:
            from imgclf.onnx_export import export_onnx_run

            record = export_onnx_run(run_dir)
            _report("onnx", record, run_dir / record["path"])
    except (UserError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
