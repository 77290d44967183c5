"""Trustworthy confidence for a trained run: temperature scaling (`calibration`) and the
out-of-distribution detector (`ood`), fitted once at the end of training from the model's
features.

One forward pass per split gives the features the head reads; the logits follow from the output
layer's weights, so nothing is computed twice. What is fitted on what:
    temperature      validation split (never test)
    OOD means/cov    training split (up to ood.MAX_FIT_IMAGES, inference mode, no augmentation)
    OOD threshold    validation split (train.ood_quantile of its scores)
    every figure     test split
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf import calibration, ood

if TYPE_CHECKING:
    import keras

    from imgclf.data import Split, Splits
    from imgclf.schema import Config


@dataclass
class Confidence:
    """What `fit_confidence` found: metrics.json's `calibration` and `ood` sections (each None
    when switched off, or a dict with `skipped` and why) and the detector to save."""

    calibration: dict[str, Any] | None
    ood: dict[str, Any] | None
    stats: ood.OODStats | None
    ood_scores: dict[str, np.ndarray]  # "val", "test": the scores behind the figures


def stratified_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted positions of at most about `limit` of `labels`: each class in proportion, but
    at least min(its count, ood.MIN_PER_CLASS), so a rare class keeps its mean."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        n = max(min(len(where), ood.MIN_PER_CLASS), round(limit * len(where) / len(labels)))
        keep.append(rng.choice(where, min(n, len(where)), replace=False))
    return np.sort(np.concatenate(keep))


def _features(extractor: keras.Model, split: Split, limit: int | None, seed: int):
    """(features float32 [n, D], labels [n]) of the readable images of `split`, at most about
    `limit` of them (a seeded stratified subset, in split order)."""
    from imgclf.data.store import ImageView
    from imgclf.evaluate import predict_readable

    x, y = split.x, np.asarray(split.y)
    if limit is not None and len(y) > limit:
        keep = stratified_subset(y, limit, seed)
        x = ImageView(x.store, x.indices[keep]) if isinstance(x, ImageView) else x[keep]
        y = y[keep]
    features, kept = predict_readable(extractor, x)
    if len(kept) == 0:  # every file of a streamed split failed to decode
        return np.zeros((0, 0), np.float32), y[:0]
    return features.reshape(len(kept), -1), y[kept]


def fit_confidence(model: keras.Model, splits: Splits, config: Config) -> Confidence:
    """Fit the temperature (validation) and the OOD detector (train + validation) of `model`,
    and measure both on test. Does not change the model: `calibration.fold_temperature` does.

    Without a readable validation (or test) image neither can be fitted: both sections say
    `skipped` and why; so does the OOD section for features wider than ood.MAX_FEATURE_DIM, and
    for features so uniform that the float32 score is round-off (`ood.FLOAT32_LIMIT`)."""
    want_cal, want_ood = config.train.calibrate, config.train.ood
    if not (want_cal or want_ood):
        return Confidence(None, None, None, {})
    extractor = ood.feature_model(model)
    val_f, val_y = _features(extractor, splits.val, None, config.seed)
    test_f, test_y = _features(extractor, splits.test, None, config.seed)
    if len(val_y) == 0 or len(test_y) == 0:
        which = "validation" if len(val_y) == 0 else "test"
        why = {"skipped": f"no readable {which} image to fit or measure on"}
        return Confidence(why if want_cal else None, why if want_ood else None, None, {})
    cal = None
    if want_cal:
        cal = calibration.calibrate(
            ood.logits_of(model, val_f), val_y, ood.logits_of(model, test_f), test_y
        )
    if not want_ood:
        return Confidence(cal, None, None, {})
    if val_f.shape[1] > ood.MAX_FEATURE_DIM:
        why = (
            f"the head reads {val_f.shape[1]} features, more than {ood.MAX_FEATURE_DIM}: a "
            "flattened feature map (model.hidden: [] or transfer.backbone_layer); add a "
            "hidden layer or pooling to get the warning"
        )
        return Confidence(cal, {"skipped": why}, None, {})
    train_f, train_y = _features(extractor, splits.train, ood.MAX_FIT_IMAGES, config.seed)
    quantile = config.train.ood_quantile
    stats = ood.fit(train_f, train_y, len(splits.class_names))
    val_scores = stats.score(val_f)
    stats = ood.with_threshold(stats, val_scores, quantile)
    error = stats.float32_error(np.concatenate([val_f, test_f]))
    if not error <= ood.FLOAT32_LIMIT:  # NaN too
        why = (
            f"the features barely vary between images (float32 round-off is {error:.1e} of the "
            "threshold): the model has not learned to tell images apart, so a detector would "
            "flag images at random"
        )
        return Confidence(cal, {"skipped": why}, None, {})
    test_scores = stats.score(test_f)
    section = ood.report(stats, quantile, val_scores, test_scores, len(train_y))
    return Confidence(cal, section, stats, {"val": val_scores, "test": test_scores})
