"""Trustworthy confidence for a trained run: temperature scaling (`calibration`) and the
out-of-distribution detector (`ood`), fitted once at the end of training from the model's
features.

It reads the model's outputs on each split, computed once at the end of training and shared with
evaluation (`confidence.split_outputs`): the features the head reads, and the logits that follow
from the output layer's weights. What is fitted on what:
    temperature      validation split (never test)
    OOD means/cov    training split (up to ood.MAX_FIT_IMAGES, inference mode, no augmentation)
    OOD threshold    validation split (train.ood_quantile of its scores)
    every figure     test split
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.confidence import calibration, ood
from imgclf.models.reuse import feature_tensor

if TYPE_CHECKING:
    import keras

    from imgclf.confidence.split_outputs import SplitOutputs
    from imgclf.schema import Config


@dataclass
class Confidence:
    """What `fit_confidence` found: metrics.json's `calibration` and `ood` sections (each None
    when switched off, or a dict with `skipped` and why) and the detector to save."""

    calibration: dict[str, Any] | None
    ood: dict[str, Any] | None
    stats: ood.OODStats | None
    ood_scores: dict[str, np.ndarray]  # "val", "test": the scores behind the figures


def fit_confidence(
    model: keras.Model, outputs: dict[str, SplitOutputs], num_classes: int, config: Config
) -> Confidence:
    """Fit the temperature (validation) and the OOD detector (train + validation) of `model`
    from its outputs on each split (`split_outputs.run_outputs`, computed once), and measure
    both on test. Does not change the model: `calibration.fold_temperature` does.

    Without a readable validation (or test) image neither can be fitted: both sections say
    `skipped` and why; so does the OOD section for fewer than ood.MIN_THRESHOLD_IMAGES
    validation images (its threshold), for features wider than ood.MAX_FEATURE_DIM, for
    features so uniform that the float32 score is round-off (`ood.FLOAT32_LIMIT`), and for a
    covariance that cannot be factorised (`ood.fit` raises ValueError): a detector that cannot
    be fitted never ends the run."""
    want_cal, want_ood = config.train.calibrate, config.train.ood
    if not (want_cal or want_ood):
        return Confidence(None, None, None, {})
    val, test = outputs["val"], outputs["test"]
    if len(val) == 0 or len(test) == 0:
        which = "validation" if len(val) == 0 else "test"
        why = {"skipped": f"no readable {which} image to fit or measure on"}
        return Confidence(why if want_cal else None, why if want_ood else None, None, {})
    cal = None
    if want_cal:
        cal = calibration.calibrate(val.logits, val.labels, test.logits, test.labels)
    if not want_ood:
        return Confidence(cal, None, None, {})
    train = outputs.get("train")
    why = _cannot_fit(model, train, val)
    if why is not None:
        return Confidence(cal, {"skipped": why}, None, {})
    quantile = config.train.ood_quantile
    try:
        stats = ood.fit(train.features, train.labels, num_classes)
    except ValueError as exc:
        return Confidence(cal, {"skipped": f"the detector could not be fitted: {exc}"}, None, {})
    val_scores = stats.score(val.features)
    stats = ood.with_threshold(stats, val_scores, quantile)
    error = stats.float32_error(np.concatenate([val.features, test.features]))
    if not error <= ood.FLOAT32_LIMIT:  # NaN too
        why = (
            f"the features barely vary between images (float32 round-off is {error:.1e} of the "
            "threshold): the model has not learned to tell images apart, so a detector would "
            "flag images at random"
        )
        return Confidence(cal, {"skipped": why}, None, {})
    test_scores = stats.score(test.features)
    section = ood.report(stats, quantile, val_scores, test_scores, len(train))
    return Confidence(cal, section, stats, {"val": val_scores, "test": test_scores})


def _cannot_fit(model: keras.Model, train: SplitOutputs | None, val: SplitOutputs) -> str | None:
    """Why the detector cannot be fitted from these outputs, before any fitting, or None."""
    if val.features is None:
        return (
            f"the head reads {_width(model)} features, more than "
            f"{ood.MAX_FEATURE_DIM}: a flattened feature map (model.hidden: [] or "
            "transfer.backbone_layer); add a hidden layer or pooling to get the warning"
        )
    if len(val) < ood.MIN_THRESHOLD_IMAGES:
        return (
            f"only {len(val)} readable validation image(s) to set its threshold on (at least "
            f"{ood.MIN_THRESHOLD_IMAGES}): it would flag images at random; raise "
            "data.val_fraction or add images"
        )
    if train is None or train.features is None or len(train) == 0:
        return "no readable training image to fit it on"
    return None


def _width(model: keras.Model) -> int:
    """D, the number of features the head of `model` reads."""

    return int(np.prod(feature_tensor(model).shape[1:]))
