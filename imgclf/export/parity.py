"""What every export format shares: comparing an artifact's probabilities with model.keras'
(`compare`), the thresholds a float export must meet (`require_parity`), the images to check on
(the run's test split, `load_for_export`), and recording an export in exports.json, the model
card and the manifest (`record_export`). Each format module (saved_model, tflite, onnx) writes
its artifact, checks it here, and loads it for `Predictor`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclf import runs
from imgclf.confidence.graph import serving_model
from imgclf.confidence.ood import SCORE_NAME, load_run_stats
from imgclf.config import load_config
from imgclf.data import load_data
from imgclf.data.pool import readable_sample
from imgclf.forward import Forward, inference_batch_size
from imgclf.images import IMAGE_EXTENSIONS, load_image
from imgclf.infra import faults
from imgclf.infra.errors import UserError
from imgclf.model_card import refresh_export_section
from imgclf.models.names import PROBABILITIES
from imgclf.models.saving import load_run_model
from imgclf.models.tta import VIEWS, run_mode

PARITY_TOLERANCE = 1e-4  # max |p_export - p_keras| over the checked images
# Test images every export is checked on (the first readable ones of the test split). An export
# and the run compute the same deterministic function: a wrong op or weight shows on every
# image, and a fault that hits even 2% of images is missed by 256 with probability
# 0.98^256 < 0.6%. Image-dependent paths (decoders, EXIF, alpha, 16-bit) are covered by the
# format corpus instead. Bounded so the check costs the same at any dataset size.
PARITY_MAX_IMAGES = 256
# Of those, the ones sent as PNG files through a SavedModel's serve_bytes signature (lossless:
# any difference is the graph decoder's, which the format corpus checks format by format, PNG
# included; these few check the signature's plumbing on real test images).
BYTES_CHECK_IMAGES = 16
PARITY_MIN_AGREEMENT = 0.999  # top-1 labels; below 1.0 only so an exact tie cannot fail it
OOD_TOLERANCE = 1e-3  # max |Δ ood_score| as a fraction of the threshold
# What an export writes or rewrites in a run: everything else must match the manifest first.
EXPORT_FILES = (runs.SAVED_MODEL, runs.TFLITE, runs.TFLITE_INT8, runs.ONNX, runs.MEDIAPIPE,
                runs.MEDIAPIPE_INT8, runs.WEB, runs.EXPORTS, runs.MODEL_CARD)  # fmt: skip
ACCURACY_KEYS = ("test_accuracy", "keras_test_accuracy", "accuracy_drop")
# Records that vouch for another export's file: re-exporting that file drops them (the OpenVINO
# check ran model.onnx; the web page copied model_mediapipe.tflite; the benchmark ran them all).
DEPENDENTS = {
    "onnx": ("openvino", "benchmark"),
    "mediapipe": ("web", "benchmark"),
    **{key: ("benchmark",) for key in ("saved_model", "tflite", "tflite_int8", "mediapipe_int8")},
}


class ExportError(RuntimeError):
    """The exported artifact does not reproduce the trained model."""


@dataclass(frozen=True)
class Reference:
    """What the run answers on the images an export is checked on: uint8 `images` [n, H, W, C]
    (n <= PARITY_MAX_IMAGES), their true `labels` [n] when known, model.keras' `probabilities`
    [n, K] and, for a run with an OOD detector, its `ood_scores` [n] and `threshold`; every
    check runs the artifact and the model `batch_size` images at a time."""

    images: np.ndarray
    labels: np.ndarray | None
    probabilities: np.ndarray
    ood_scores: np.ndarray | None = None
    threshold: float | None = None
    batch_size: int = 32  # images per forward pass of every check (the run's inference batch)
    tta: str = "none"  # the run's predict.tta: every export carries it (imgclf.models.tta)

    @property
    def ood_flags(self) -> np.ndarray | None:
        """bool [n]: the run's `ood` output (score above the threshold)."""
        return None if self.ood_scores is None else self.ood_scores > self.threshold


def model_reference(
    model: Any,
    stats: Any,
    images: np.ndarray,
    labels: np.ndarray | None,
    batch_size: int | str = "auto",
    tta: str = "none",
) -> Reference:
    """The Reference of `model` (with the OOD detector `stats`, when not None, and behind the
    test-time augmentation views of `tta`) on `images`:
    one compiled pass on bounded batches (`forward.Forward`, `batch_size` images: the run's
    `train.eval_batch_size`) of the model plus detector (`graph.scored_model`, what Predictor
    runs)."""

    batch = max(1, inference_batch_size(model, batch_size) // VIEWS[tta])  # views share it
    images = np.asarray(images[:PARITY_MAX_IMAGES])
    labels = None if labels is None else np.asarray(labels)[: len(images)]
    if stats is None:
        probs = np.asarray(Forward(serving_model(model, None, tta), batch)(images), np.float64)
        return Reference(images, labels, probs, batch_size=batch, tta=tta)
    out = Forward(serving_model(model, stats, tta), batch)(images)
    return Reference(
        images,
        labels,
        np.asarray(out[PROBABILITIES], np.float64),
        np.asarray(out[SCORE_NAME], np.float64),
        stats.threshold,
        batch,
        tta,
    )


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


def ood_parity(exported: np.ndarray, reference: Reference) -> dict[str, Any]:
    """An export's OOD outputs (float [n, 2]: ood_score, ood flag) against the run's
    (`reference.ood_scores`, above `reference.threshold`) on the same images: the largest score
    difference relative to the threshold, and how many flags differ away from the threshold
    (an image whose score is within OOD_TOLERANCE of it may fall either side)."""
    ref = np.asarray(reference.ood_scores, np.float64)
    scale = max(abs(float(reference.threshold)), 1e-12)
    near = np.abs(ref - reference.threshold) <= OOD_TOLERANCE * scale
    return {
        "n_images": len(ref),
        "max_rel_score_diff": float(np.abs(exported[:, 0] - ref).max() / scale),
        "flag_disagreements": int(((exported[:, 1] > 0.5) != reference.ood_flags)[~near].sum()),
        "tolerance": OOD_TOLERANCE,
    }


def require_ood_parity(what: str, figures: dict[str, Any], not_written: str) -> None:
    """Raise ExportError if an export's OOD score or flag disagrees with the run's."""
    if not figures["max_rel_score_diff"] <= OOD_TOLERANCE or figures["flag_disagreements"]:
        raise ExportError(
            f"{what}: the OOD score disagrees with the run's detector: max |Δscore| = "
            f"{figures['max_rel_score_diff']:.1e} of the threshold (tolerance {OOD_TOLERANCE:.0e}"
            f"), {figures['flag_disagreements']} flags differ; {not_written}"
        )


def require_parity(what: str, parity: dict[str, Any], not_written: str) -> None:
    """Raise ExportError with the figures if a float export is outside the thresholds."""
    diff, agree = parity["max_abs_diff"], parity["top1_agreement"]
    # Written as "not within" so that a NaN (which compares False) fails too.
    if not (diff <= PARITY_TOLERANCE and agree >= PARITY_MIN_AGREEMENT):
        raise ExportError(
            f"{what} disagrees with model.keras: max |Δp| = {diff:.2e} (tolerance "
            f"{PARITY_TOLERANCE:.0e}), top-1 agreement {agree:.2%} on {parity['n_images']} "
            f"images; {not_written}"
        )


def record_export(run_dir: str | Path, key: str, record: dict[str, Any]) -> None:
    """Store `record` as exports.json[key], refresh the model card's export table, and re-write
    the manifest (the new artifact and both files are part of the run)."""

    run_dir = Path(run_dir)
    # The manifest is re-written below: everything else must still be what it lists, or the
    # re-write would bless a file changed since (IntegrityError, nothing recorded).
    path = str(record.get("path", ""))
    runs.verify_all(run_dir, runs.EXPORTS, runs.MODEL_CARD, *([path] if path else []))
    exports_path = run_dir / runs.EXPORTS
    exports = runs.read_json(exports_path) if exports_path.is_file() else {}
    exports[key] = record
    for stale in DEPENDENTS.get(key, ()):  # checked against the file this export replaced
        exports.pop(stale, None)
    runs.write_json(exports_path, exports)
    refresh_export_section(run_dir, exports)
    faults.point("export")
    runs.write_manifest(run_dir)


def batched(fn: Any, images: np.ndarray, size: int, dtype: Any = None) -> np.ndarray:
    """`fn` (an exported artifact's function) applied to `images` in chunks of `size` (the
    model's `forward.inference_batch_size`: an artifact's activations are the model's), each
    cast to `dtype` when given, so a float copy of all the images never exists at once."""

    out = []
    for start in range(0, len(images), size):
        chunk = images[start : start + size]
        Forward.largest = max(Forward.largest, len(chunk))
        out.append(fn(chunk if dtype is None else chunk.astype(dtype)))
    return np.concatenate(out)


def remade_splits(run_dir: Path) -> Any:
    """The run's splits re-made from its config.yaml (`load_data`), reading no pixels up front
    (data.cache none: only the images a caller takes are decoded) and without the per-image
    audit (an export needs images, not findings). Raises UserError when the data is gone."""
    config = load_config(run_dir / runs.CONFIG)
    data = config.data.model_copy(update={"cache": "none", "audit": "off"})
    return load_data(config.model_copy(update={"data": data}))


def check_split(
    run_dir: Path, image_size: tuple[int, int], channels: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels or None) to check an export against: the first PARITY_MAX_IMAGES
    readable images of the run's test split re-made from config.yaml, else its saved samples/
    (labels unknown then). Only those images are decoded (data.cache: none for this read): the
    split is the same whatever the cache, and the rest of the dataset is never read."""

    try:
        test = remade_splits(run_dir).test
        images, labels = readable_sample(test, PARITY_MAX_IMAGES)
        # multi-label: no single true class, so no top-1 test accuracy beside the parity
        return images, None if test.targets is not None else labels
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


def load_for_export(run_dir: str | Path) -> tuple[Any, Reference]:
    """(model.keras checked against the manifest, the Reference to check an export against:
    the run's model and OOD detector, behind its test-time augmentation, on its test images)."""

    run_dir = Path(run_dir)
    if not (runs.is_run_dir(run_dir) or runs.in_run(run_dir)):
        raise UserError(f"{run_dir} is not a run directory (no {runs.MODEL} and {runs.LABELS})")
    model = load_run_model(run_dir)
    # Before any work: the files an export does not replace must be what the manifest lists.
    runs.verify_all(run_dir, *EXPORT_FILES)
    _, height, width, channels = model.input_shape
    images, labels = check_split(run_dir, (height, width), channels)
    stats = load_run_stats(run_dir)
    tta = run_mode(run_dir)  # predict.tta: the exports answer with the run's views
    return model, model_reference(model, stats, images, labels, run_batch_size(run_dir), tta)


def run_batch_size(run_dir: Path) -> int | str:
    """The run's `train.eval_batch_size` ("auto" when its config cannot say)."""

    try:
        return load_config(run_dir / runs.CONFIG).train.eval_batch_size
    except UserError:
        return "auto"
