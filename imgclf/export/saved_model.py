"""The TensorFlow SavedModel of a run: written with two signatures that take raw pixels or
encoded image files, checked against model.keras before it is moved into place (a model server
watching the folder never sees an unchecked version), and loaded back for `Predictor`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from imgclf import runs
from imgclf.confidence.graph import serving_model
from imgclf.confidence.ood import FLAG_NAME, SCORE_NAME, load_run_stats
from imgclf.export import corpus
from imgclf.export.batch_decode import STATUS_OK, batch_decoder
from imgclf.export.destinations import check_out, next_serving_version
from imgclf.export.format_check import corpus_tables, require_format_parity
from imgclf.export.parity import (
    ACCURACY_KEYS,
    BYTES_CHECK_IMAGES,
    EXPORT_FILES,
    ExportError,
    Reference,
    batched,
    check_split,
    compare,
    model_reference,
    ood_parity,
    record_export,
    require_ood_parity,
    require_parity,
    run_batch_size,
)
from imgclf.formats import FORMATS
from imgclf.images import png_bytes
from imgclf.infra import faults
from imgclf.infra.errors import UserError
from imgclf.models.saving import load_run_model
from imgclf.models.tta import run_mode, tta_model

SIGNATURE = "serving_default"
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
LABEL_NAME = "label"
BYTES_SIGNATURE = "serve_bytes"
BYTES_INPUT_NAME = "images"
STATUS_NAME = "status"


def write_saved_model(
    model: Any,
    path: str | Path,
    class_names: list[str] | None = None,
    ood_stats: Any = None,
    tta: str = "none",
) -> None:
    """Write `model` as a SavedModel with two signatures, both returning `probabilities`
    (float32 [N, classes]), given `class_names` `label` (string [N], the top-1 class; a
    multi-label run's set: the labels at or over thresholds.json's cuts, beside it), and,
    given `ood_stats` (imgclf.confidence.ood.OODStats), `ood_score` (float32 [N], the Mahalanobis
    distance to the nearest class mean) and `ood` (bool [N], above the run's threshold):

    - `serving_default`: `pixels`, float32 [N, H, W, C], raw 0..255 at the model's size;
    - `serve_bytes`: `images`, string [N], encoded image files, decoded inside the graph the way
      `images.load_image` decodes them (`graph_decode`: EXIF orientation, alpha over white,
      16-bit scaling, Pillow's bilinear resize); adds `status` (string [N]): "ok", or why that
      image was refused (a format TensorFlow cannot decode, a corrupt file). A refused image
      gets all-zero probabilities, an empty label, ood_score 0 and ood false; the rest of the
      batch is classified.

    Preprocessing is inside the model, so clients need no imgclf code and no label file. With
    `tta` (the run's `predict.tta`), the probabilities are averaged over its views in the graph.
    """
    import keras
    import tensorflow as tf

    _, height, width, channels = model.input_shape
    archive = keras.export.ExportArchive()
    served_model = serving_model(model, ood_stats, tta)
    archive.track(served_model)
    labels = tf.constant(list(class_names)) if class_names else None

    def outputs(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        out = served_model(pixels, training=False)
        out = dict(out) if isinstance(out, dict) else {OUTPUT_NAME: out}
        probs = out[OUTPUT_NAME]
        if labels is not None:
            out[LABEL_NAME] = tf.gather(labels, tf.argmax(probs, axis=1))
        return out

    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return outputs(pixels)

    decode = batch_decoder(height, width, channels)
    spec = tf.TensorSpec([None, height, width, channels], tf.float32, name=INPUT_NAME)
    # The traced serving function; serve_bytes calls it, so the model is traced once, not
    # once per signature (a second trace of EfficientNet-Lite0 cost ~3 s of every export).
    served = archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])

    def serve_bytes(images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels, status = decode(images)
        return _refused_blank(dict(served(pixels)), status)

    archive.add_endpoint(
        name=BYTES_SIGNATURE,
        fn=serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


def _refused_blank(out: dict[str, Any], status: Any) -> dict[str, Any]:
    """serve_bytes' outputs with `status` added: an image the graph decoder refused gets
    all-zero probabilities, an empty label, ood_score 0 and ood false."""
    import tensorflow as tf

    ok = tf.equal(status, STATUS_OK)
    out[OUTPUT_NAME] = tf.where(ok[:, None], out[OUTPUT_NAME], 0.0)
    if LABEL_NAME in out:
        out[LABEL_NAME] = tf.where(ok, out[LABEL_NAME], "")
    if SCORE_NAME in out:
        out[SCORE_NAME] = tf.where(ok, out[SCORE_NAME], 0.0)
        out[FLAG_NAME] = tf.logical_and(ok, out[FLAG_NAME])
    out[STATUS_NAME] = status
    return out


def reload(saved_model_dir: str | Path) -> Any:
    """The SavedModel at `saved_model_dir` reloaded with `tf.saved_model.load`, as a model
    server loads it: its `signatures` are what every parity check runs (keep the object: its
    signatures need its variables)."""
    import tensorflow as tf

    with runs.glob_safe(saved_model_dir) as readable:
        return tf.saved_model.load(str(readable))


def check_parity(saved_model_dir: str | Path, model: Any, reference: Reference) -> dict[str, Any]:
    """Run `reference.images` through the reloaded SavedModel and compare with the run's answers
    on them (`reference`): `serving_default` on every image (probabilities, and the `ood_score`
    and `ood` outputs when the run has a detector, in the same call), `serve_bytes` on the first
    BYTES_CHECK_IMAGES as PNG files; given the true labels, `serving_default`'s test accuracy.
    Then the format corpus (`corpus.build` on the first image): `formats` holds, per signature,
    the agreement per format × mode × orientation with what `Predictor` on the run answers for
    the same file. Every call gets at most `reference.batch_size` images, each batch cast to
    float32 (or encoded) on its own: memory does not follow the number of images."""
    import tensorflow as tf

    images, size = reference.images, reference.batch_size
    loaded = reload(saved_model_dir)
    serving, from_bytes = loaded.signatures[SIGNATURE], loaded.signatures[BYTES_SIGNATURE]
    has_ood = reference.ood_scores is not None

    def via_pixels(batch: np.ndarray) -> np.ndarray:
        out = serving(**{INPUT_NAME: tf.constant(batch)})
        columns = [out[OUTPUT_NAME].numpy()]
        if has_ood:  # probabilities, then the score and the flag: one call for all three
            columns += [out[SCORE_NAME].numpy()[:, None], out[FLAG_NAME].numpy()[:, None]]
        return np.concatenate(columns, axis=1)

    def via_files(files: list[bytes]) -> tuple[np.ndarray, list[str | None]]:
        out = from_bytes(**{BYTES_INPUT_NAME: tf.constant(files, tf.string)})
        status = [s.decode() for s in out[STATUS_NAME].numpy()]
        return out[OUTPUT_NAME].numpy(), [None if s == STATUS_OK else s for s in status]

    def via_png(batch: np.ndarray) -> np.ndarray:
        return via_files([png_bytes(image.astype(np.uint8)) for image in batch])[0]

    pixels_out = batched(via_pixels, images, size, np.float32)
    k = reference.probabilities.shape[1]
    exported = pixels_out[:, :k]
    via_bytes = batched(via_png, images[:BYTES_CHECK_IMAGES], size)
    figures = compare(exported, reference.probabilities, reference.labels)
    report = figures.pop("parity")
    report.update(figures)  # test_accuracy, keras_test_accuracy, accuracy_drop when labelled
    from_files = compare(via_bytes, reference.probabilities[: len(via_bytes)], None)["parity"]
    report["serve_bytes_n_images"] = from_files["n_images"]
    report["serve_bytes_max_abs_diff"] = from_files["max_abs_diff"]
    report["serve_bytes_top1_agreement"] = from_files["top1_agreement"]
    if has_ood:
        report["ood"] = ood_parity(pixels_out[:, k:], reference)
    by_pixels, by_bytes = corpus_tables(model, images, size, via_files, via_pixels, k)
    report["formats"] = {SIGNATURE: by_pixels, BYTES_SIGNATURE: by_bytes}
    return report


def require_corpus_parity(report: dict[str, Any], not_written: str) -> None:
    """ExportError unless both signatures answer every corpus file like the run does, and
    `serve_bytes` refuses only the kinds documented as outside the graph decoder."""

    outside = {kind for kind, graph in corpus.graph_kinds().items() if not graph}
    tables = report["formats"]
    unread = {k for k, row in tables[SIGNATURE].items() if row["refused"] is not None}
    require_format_parity(
        f"SavedModel signature {SIGNATURE}", tables[SIGNATURE], unread, not_written
    )
    require_format_parity(
        f"SavedModel signature {BYTES_SIGNATURE}",
        tables[BYTES_SIGNATURE],
        outside | unread,
        not_written,
    )


def export_saved_model(
    model: Any,
    class_names: list[str],
    target: str | Path,
    reference: Reference,
    ood_stats: Any = None,
    tta: str = "none",
    thresholds: Any = None,
) -> dict[str, Any]:
    """Write `target` (a SavedModel + labels.json) atomically after a parity check against
    `reference` (the run's answers on its check images, with the same `tta`) passes, with the
    OOD outputs when `ood_stats`, checked too.

    Raises ExportError with the figures if the SavedModel differs from `model` by more than
    PARITY_TOLERANCE; `target` is then left untouched.
    """
    if len(reference.images) == 0:
        raise ExportError("no images to check the export against")
    target = Path(target)
    with runs.atomic_path(target) as tmp:
        write_saved_model(model, tmp, list(class_names), ood_stats, tta)
        faults.point("saved_model")
        runs.write_json(tmp / runs.LABELS, list(class_names))
        if thresholds is not None:  # multi-label: the run's decisions travel with the model
            cuts = dict(zip(class_names, map(float, thresholds), strict=True))
            runs.write_json(tmp / runs.THRESHOLDS, cuts)
        report = check_parity(tmp, tta_model(model, tta), reference)
        report["tta"] = tta
        for prefix, signature in (("", SIGNATURE), ("serve_bytes_", BYTES_SIGNATURE)):
            figures = {
                "n_images": report[f"{prefix}n_images"],
                "max_abs_diff": report[f"{prefix}max_abs_diff"],
                "top1_agreement": report[f"{prefix}top1_agreement"],
            }
            require_parity(
                f"SavedModel signature {signature}", figures, f"nothing was written to {target}"
            )
        if "ood" in report:
            require_ood_parity("SavedModel", report["ood"], f"nothing was written to {target}")
        require_corpus_parity(report, f"nothing was written to {target}")
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
    if "ood" in report:  # the run's out-of-distribution detector, in the graph
        outputs[SCORE_NAME] = {"dtype": "float32", "shape": [None]}
        outputs[FLAG_NAME] = {"dtype": "bool", "shape": [None]}
    bytes_outputs = {**outputs, STATUS_NAME: {"dtype": "string", "shape": [None]}}
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
                        "formats": [f.name for f in FORMATS if f.graph],
                    }
                },
                "outputs": bytes_outputs,
            },
        },
        "size_bytes": size_bytes,
        "parity": {
            k: v for k, v in report.items() if k not in (*ACCURACY_KEYS, "formats", "ood", "tta")
        },
        # predict.tta: probabilities averaged over the views in the graph ("none": the image)
        "tta": report.get("tta", "none"),
        "formats": report.get("formats", {}),
        **({"ood_parity": report["ood"]} if "ood" in report else {}),
        **{k: report[k] for k in ACCURACY_KEYS if k in report},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


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

    Raises:
        UserError: `run_dir` is not a run directory, both `out` and `serving_dir` are given,
            or `out` is a file or a non-empty folder that is not an imgclf SavedModel.
        IntegrityError: model.keras differs from the run's manifest.
        ExportError: the SavedModel disagrees with model.keras (nothing is written).
    """

    run_dir = Path(run_dir)
    if not (runs.is_run_dir(run_dir) or runs.in_run(run_dir)):
        raise UserError(f"{run_dir} is not a run directory (no {runs.MODEL} and {runs.LABELS})")
    if serving_dir is not None and out is not None:  # before any work
        raise UserError("give either --out or --serving-dir, not both")
    if out is not None:
        check_out(Path(out))

    model = load_run_model(run_dir)  # checked against manifest.json, safe mode

    runs.verify_all(run_dir, *EXPORT_FILES)  # the rest of the run is what training wrote
    class_names = runs.read_labels(run_dir)
    _, height, width, channels = model.input_shape
    check_labels = None
    if check_images is None:
        check_images, check_labels = check_split(run_dir, (height, width), channels)

    stats = load_run_stats(run_dir)
    batch = run_batch_size(run_dir)
    tta = run_mode(run_dir)  # predict.tta: carried by the SavedModel, checked like the rest
    reference = model_reference(model, stats, check_images, check_labels, batch, tta)
    if serving_dir is not None:
        target = Path(serving_dir) / str(next_serving_version(serving_dir))
    else:
        target = Path(out) if out is not None else run_dir / runs.SAVED_MODEL
    thresholds = runs.Run(run_dir).thresholds(class_names)  # None: single-label
    report = export_saved_model(model, class_names, target, reference, stats, tta, thresholds)
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


def load(path: str | Path) -> tuple[Any, tuple[int, int, int], list[str]]:
    """(fn, (H, W, C), class names) for a SavedModel directory written by imgclf (its
    `serving_default` and labels.json); fn: pixels float32 [N, H, W, C] -> {"probabilities":
    [N, classes]} plus `ood_score` and `ood` when the run's detector is in the graph. A run's
    own `saved_model/` is checked against the run's manifest first.

    Raises UserError (no labels.json) or IntegrityError (a file differs from the manifest).
    """
    import tensorflow as tf

    path = Path(path)
    if not (path / runs.LABELS).is_file():
        raise UserError(f"{path} has no {runs.LABELS}; re-export it with imgclf-export")
    if path.name == runs.SAVED_MODEL and runs.in_run(path.parent):
        # A run's own export: a complete run, every file of it what training wrote.
        runs.check_run(path.parent, runs.SAVED_MODEL)
    with runs.glob_safe(path) as readable:
        serving = tf.saved_model.load(str(readable)).signatures[SIGNATURE]
    spec = serving.structured_input_signature[1][INPUT_NAME]
    _, height, width, channels = spec.shape.as_list()

    def fn(batch: np.ndarray) -> dict[str, np.ndarray]:
        out = serving(**{INPUT_NAME: tf.constant(batch, tf.float32)})
        return {k: v.numpy() for k, v in out.items() if k in (OUTPUT_NAME, SCORE_NAME, FLAG_NAME)}

    return fn, (height, width, channels), runs.read_labels(path)
