"""Classify images with a run directory or one of its exports (SavedModel, TFLite, ONNX).

`Predictor.from_path` accepts any of them; images go through the one decoder (`images.load_image`)
at the model's size and channels and are classified in batches (never one `predict` call per
image).
`--explain DIR` also writes a Grad-CAM overlay of the top-1 class per image (`imgclf.explain`);
it needs the Keras model, so a run directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf import runs
from imgclf.confidence.graph import serving_model
from imgclf.confidence.ood import FLAG_NAME as OOD_FLAG
from imgclf.confidence.ood import SCORE_NAME as OOD_SCORE
from imgclf.confidence.ood import load_run_stats
from imgclf.data.store import workers
from imgclf.export import FORMATS
from imgclf.forward import predict_batch_size
from imgclf.images import ImageError, load_image
from imgclf.infra.errors import UserError
from imgclf.models import efficientnet_lite as lite
from imgclf.models.lite_variants import VARIANTS
from imgclf.models.names import PROBABILITIES
from imgclf.models.names import PROBABILITIES as PROBS
from imgclf.models.saving import load_run_model
from imgclf.models.tta import MIN_SIDE, VIEWS, check_mode, run_mode

if TYPE_CHECKING:
    import keras

BATCH_SIZE = 64
IMAGENET_PREFIX = "imagenet:"  # imagenet:efficientnet_lite0 (lite1, lite2): ImageNet classifiers


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, most probable first."""

    source: str
    labels: list[str]
    probabilities: list[float]
    # The run's out-of-distribution detector (confidence.ood), None when the model has none: the
    # Mahalanobis distance of the image's features to the nearest class mean, and whether it
    # is above the run's threshold ("doesn't look like the training data").
    ood_score: float | None = None
    ood: bool | None = None
    # task: multilabel: every label whose probability reaches its threshold, most probable
    # first (possibly none); None for a single-label model.
    present: list[tuple[str, float]] | None = None

    @property
    def label(self) -> str:
        """The top-1 class; for a multi-label model, the present labels joined by `|`."""
        if self.present is not None:
            return "|".join(name for name, _ in self.present) or "(none)"
        return self.labels[0]


Outputs = dict[str, np.ndarray]  # "probabilities" [N, K]; "ood_score" [N], "ood" [N] if any


def _as_outputs(out: Any) -> Outputs:
    """A model's output (the probabilities, or the dict of `graph.scored_model`) as Outputs."""

    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    return {PROBABILITIES: np.asarray(out)}


def _serving_function(model: Any, shape: tuple[int, int, int]) -> Callable[[np.ndarray], Outputs]:
    """A forward pass without `model.predict`'s per-call set-up: on TensorFlow one traced
    function for any batch size, warmed up here once (its first call pays the tracing); on
    other backends `predict_on_batch`."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda batch: _as_outputs(model.predict_on_batch(batch))
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32)])
    def forward(batch: tf.Tensor) -> Any:
        return model(batch, training=False)

    forward(tf.zeros([1, *shape], tf.float32))  # trace now, not on the user's first image

    def fn(batch: np.ndarray) -> Outputs:
        return _as_outputs(forward(tf.convert_to_tensor(batch, tf.float32)))

    return fn


class Predictor:
    """A loaded model plus its labels and input geometry; call `predict_*` to classify."""

    def __init__(
        self,
        fn: Callable[[np.ndarray], Outputs],
        class_names: list[str],
        image_size: tuple[int, int],
        channels: int,
        kind: str,
        path: Path,
        model: keras.Model | None = None,
        ood_threshold: float | None = None,
    ) -> None:
        self._fn = fn
        self._has_ood: bool | None = None
        # The run's OOD threshold when known (a run directory); exports carry the flag itself.
        self.ood_threshold = ood_threshold
        self.class_names = class_names
        self.image_size = image_size
        self.channels = channels
        # "keras" (a run directory), "saved_model", "tflite", "onnx" or "imagenet" (built in)
        self.kind = kind
        self.path = path
        self.model = model  # the Keras model of a run directory (Grad-CAM needs it); else None
        self.tta = "none"  # test-time augmentation (imgclf.models.tta): a run's predict.tta
        # task: multilabel: float [K] per-label thresholds (metrics.json); None: single-label
        self.thresholds: np.ndarray | None = None
        # A Keras model's inference batch; an artifact's from its input size (layers unseen).
        self.batch_size = min(BATCH_SIZE, predict_batch_size(model, (*image_size, channels)))

    @classmethod
    def from_path(cls, path: str | Path, tta: str | None = None) -> Predictor:
        """Load a run directory (its model.keras), a SavedModel directory (with labels.json), a
        run's model.tflite / model_int8.tflite / model.onnx file, or `imagenet:NAME`, a built-in
        ImageNet classifier (`IMAGENET_PREFIX`; the 1,000 ImageNet classes).

        `tta` (a run directory only): test-time augmentation, one of `imgclf.models.tta.MODES`;
        None uses the run's `predict.tta`. A SavedModel carries the run's own; TFLite, ONNX and
        the ImageNet classifiers have none.

        Raises:
            UserError: the path is none of these, an artifact fails its manifest check, or the
                ImageNet weights are not installed (the message names the install command).
        """
        run = not str(path).startswith(IMAGENET_PREFIX) and (
            runs.is_run_dir(path) or (Path(path).is_dir() and runs.in_run(path))
        )
        if tta is not None and not run:
            raise UserError(
                f"test-time augmentation applies to a run directory, not {path} (a run's "
                "SavedModel carries the run's own predict.tta)"
            )
        if str(path).startswith(IMAGENET_PREFIX):
            return cls._from_imagenet(str(path)[len(IMAGENET_PREFIX) :])
        path = Path(path)
        if run:
            return cls._from_keras(path, tta)  # an unfinished run is refused there
        if (path / "saved_model.pb").is_file():
            return cls._from_export("saved_model", path)
        if path.suffix == ".tflite" and path.is_file():
            return cls._from_export("tflite", path)
        if path.suffix == ".onnx" and path.is_file():
            return cls._from_export("onnx", path)
        raise UserError(
            f"{path} is neither a run directory (with {runs.MODEL} and {runs.LABELS}), a "
            f"SavedModel directory (with saved_model.pb), a .tflite nor an .onnx file; pass "
            f"runs/<run>, runs/<run>/saved_model, runs/<run>/model.tflite or runs/<run>/model.onnx"
        )

    @classmethod
    def _from_imagenet(cls, name: str) -> Predictor:
        """A Lite variant's ImageNet classifier at its own resolution (224, 240 or 260 px)."""
        variant = VARIANTS.get(name)
        if variant is None:
            known = ", ".join(f"{IMAGENET_PREFIX}{n}" for n in VARIANTS)
            raise UserError(f"unknown ImageNet classifier {name!r}; available: {known}")
        labels = lite.imagenet_class_names()  # fails fast, before any TensorFlow work
        model = lite.imagenet_classifier(variant)
        size = variant.imagenet_size
        fn = _serving_function(model, (size, size, 3))
        path = Path(f"{IMAGENET_PREFIX}{name}")
        return cls(fn, labels, (size, size), 3, "imagenet", path, model)

    @classmethod
    def _from_keras(cls, run_dir: Path, tta: str | None = None) -> Predictor:

        # Checked against manifest.json, safe mode, Lambda layers refused.
        model = load_run_model(run_dir)
        runs.check_run(run_dir, runs.LABELS)
        stats = load_run_stats(run_dir)  # ood.npz, checked against the manifest too
        _, height, width, channels = model.input_shape
        mode = check_mode(tta) if tta is not None else run_mode(run_dir)
        labels = runs.read_labels(run_dir)
        if mode != "none" and _thresholds(run_dir, labels) is not None:
            raise UserError(
                "--tta is not supported for a multi-label run yet (its thresholds were chosen "
                "on single views); leave out --tta"
            )
        if mode == "flip+crops" and min(model.input_shape[1:3]) < MIN_SIDE:
            raise UserError(
                f"--tta flip+crops needs images of at least {MIN_SIDE}×{MIN_SIDE}; this model "
                f"takes {model.input_shape[1]}×{model.input_shape[2]}: use --tta flip"
            )
        serving = serving_model(model, stats, mode)  # the detector and the TTA views, one graph
        fn = _serving_function(serving, (height, width, channels))
        threshold = None if stats is None else stats.threshold
        made = cls(fn, labels, (height, width), channels, "keras", run_dir, model, threshold)
        made.tta = mode
        made.batch_size = max(1, made.batch_size // VIEWS[mode])  # each view's activations
        made.thresholds = _thresholds(run_dir, labels)
        return made

    @classmethod
    def _from_export(cls, kind: str, path: Path) -> Predictor:
        """An exported artifact, loaded by its format's module in `imgclf.export`."""

        fn, (height, width, channels), labels = FORMATS[kind].load(path)
        # An artifact still in its run: the run's threshold, for the warning line (the flag
        # itself comes from the artifact's own `ood` output).
        stats = load_run_stats(path.parent) if runs.is_run_dir(path.parent) else None
        threshold = None if stats is None else stats.threshold
        made = cls(fn, labels, (height, width), channels, kind, path, None, threshold)
        if runs.is_run_dir(path.parent):  # a multi-label run's thresholds decide for it too
            made.thresholds = _thresholds(path.parent, labels)
        elif (path / runs.THRESHOLDS).is_file():  # a SavedModel deployed without its run
            made.thresholds = _saved_thresholds(path / runs.THRESHOLDS, labels)
        return made

    @property
    def has_ood(self) -> bool:
        """True when the model reports the out-of-distribution score (a run with ood.npz, or
        an export of one)."""
        if self._has_ood is None:
            blank = np.zeros((1, *self.image_size, self.channels), np.float32)
            self._has_ood = OOD_SCORE in self._fn(blank)
        return self._has_ood

    def predict_outputs(self, images: np.ndarray) -> Outputs:
        """{"probabilities": float [N, classes]} for raw images [N, H, W, C] (0..255) at the
        model's size, plus "ood_score" (float [N]) and "ood" (bool [N]) when the model has the
        run's out-of-distribution detector. Probabilities are calibrated when the run was
        (train.calibrate: the temperature is inside the model).

        Raises ValueError when the images are not [N, H, W, C] at the model's size."""
        images = np.asarray(images)  # cast to float32 a batch at a time, not all at once
        if images.shape[1:] != (*self.image_size, self.channels):
            raise ValueError(
                f"images must be [N, {self.image_size[0]}, {self.image_size[1]}, {self.channels}]"
                f", got {list(images.shape)}"
            )
        size = self.batch_size
        chunks = [
            self._fn(images[i : i + size].astype(np.float32)) for i in range(0, len(images), size)
        ]
        if not chunks:
            return {PROBS: np.zeros((0, len(self.class_names)), np.float32)}
        return {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities float [N, classes] for raw images [N, H, W, C] (0..255) at the model's
        size (`predict_outputs` without the OOD outputs)."""
        return self.predict_outputs(images)[PROBS]

    def top_k(
        self, probs: np.ndarray, sources: Sequence[str], k: int, outputs: Outputs | None = None
    ) -> list[Prediction]:
        """Turn probabilities into Predictions of the k most probable classes, with the OOD
        score and flag of `outputs` (from `predict_outputs`) when it has them."""
        k = max(1, min(k, len(self.class_names)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        outputs = outputs or {}
        scores = outputs.get(OOD_SCORE, [None] * len(probs))
        flags = outputs.get(OOD_FLAG, [None] * len(probs))
        return [
            Prediction(
                src,
                [self.class_names[j] for j in row],
                [float(p[j]) for j in row],
                None if score is None else float(score),
                None if flag is None else bool(flag),
                self.present(p),
            )
            for src, p, row, score, flag in zip(sources, probs, order, scores, flags, strict=True)
        ]

    def present(self, probs: np.ndarray) -> list[tuple[str, float]] | None:
        """A multi-label model's labels at or above their thresholds for one image's
        probabilities [K], most probable first; None for a single-label model."""
        if self.thresholds is None:
            return None
        hits = np.flatnonzero(probs >= self.thresholds)
        hits = hits[np.argsort(-probs[hits], kind="stable")]
        return [(self.class_names[j], float(probs[j])) for j in hits]

    def decode_files(
        self, sources: Iterable[str | Path | bytes], names: Sequence[str] | None = None
    ) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
        """Decode files (or encoded bytes) at the model's size and channels; `names` (one per
        source) are reported instead of the sources (encoded bytes are otherwise `<bytes>`).

        Returns (names, uint8 images [N, H, W, C], [(name, reason)] for those that failed).
        """

        def decode(src: str | Path | bytes) -> np.ndarray | str:
            try:
                return load_image(src, self.image_size, self.channels)
            except ImageError as exc:
                return exc.reason

        sources = list(sources)
        shown = list(names) if names is not None else [
            "<bytes>" if isinstance(src, bytes) else str(src) for src in sources
        ]  # fmt: skip
        names, arrays, failures = [], [], []
        # Pillow releases the GIL while decoding: threads use every core.
        with ThreadPoolExecutor(max_workers=workers()) as pool:
            for name, result in zip(shown, pool.map(decode, sources), strict=True):
                if isinstance(result, str):
                    failures.append((name, result))
                else:
                    arrays.append(result)
                    names.append(name)
        if not arrays:
            return [], np.zeros((0, *self.image_size, self.channels), np.uint8), failures
        return names, np.stack(arrays), failures

    def predict_files(
        self, sources: Iterable[str | Path | bytes], k: int = 5
    ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Decode and classify files (or encoded bytes); returns (predictions, [(source, reason)]).

        A file that cannot be decoded is reported in the second list; the others are classified.
        """
        names, images, failures = self.decode_files(sources)
        if not names:
            return [], failures
        outputs = self.predict_outputs(images)
        return self.top_k(outputs[PROBS], names, k, outputs), failures


@dataclass(frozen=True)
class Classified:
    """One classified upload: its top-k, the pixels the model saw, and the time it took."""

    prediction: Prediction
    pixels: np.ndarray  # uint8 [H, W, C] at the model's size, inverted if asked
    latency_ms: float  # decode + preprocess + forward, this image alone


def classify_named(
    predictor: Predictor, files: Iterable[tuple[str, bytes]], k: int = 5, invert: bool = False
) -> tuple[list[Classified], list[tuple[str, str]]]:
    """Classify named encoded images one at a time (the app's uploads), timing each; returns
    (results, [(name, reason)] for files that cannot be decoded: the reasons of `load_image`).

    `invert` turns each image into its negative before classifying: a model trained on
    light-on-dark digits (MNIST) then reads dark-on-light photos and scans.
    """

    results, failures = [], []
    for name, data in files:
        start = time.perf_counter()
        try:
            pixels = load_image(data, predictor.image_size, predictor.channels)
        except ImageError as exc:
            failures.append((name, exc.reason))
            continue
        if invert:
            pixels = 255 - pixels
        outputs = predictor.predict_outputs(pixels[None])
        elapsed = (time.perf_counter() - start) * 1000
        prediction = predictor.top_k(outputs[PROBS], [name], k, outputs)[0]
        results.append(Classified(prediction, pixels, elapsed))
    return results, failures


def _thresholds(run_dir: Path, labels: list[str]) -> np.ndarray | None:
    """A multi-label run's per-label thresholds (`runs.Run.thresholds`), else None."""
    return runs.Run(run_dir).thresholds(labels)


def _saved_thresholds(path: Path, labels: list[str]) -> np.ndarray:
    """The thresholds a SavedModel of a multi-label run carries ({label: threshold}). Raises
    UserError when the file does not name every label with a number."""
    try:
        saved = runs.read_json(path)
        return np.array([float(saved[name]) for name in labels])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path}: not the thresholds of this model's labels ({type(exc).__name__}); "
            "export the run again"
        ) from None
