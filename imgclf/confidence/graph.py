"""The model surgery of the out-of-distribution score (`confidence.ood`): the feature model a
run's statistics are fitted on, the output layer's logits of given features, and the run's model
with the score and flag wired into the same graph (what `Predictor` and every export run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from imgclf.confidence.ood import FLAG_NAME, SCORE_NAME, OODStats
from imgclf.infra.errors import UserError
from imgclf.models.names import PROBABILITIES
from imgclf.models.reuse import feature_tensor

if TYPE_CHECKING:
    import keras


def feature_model(model: keras.Model) -> keras.Model:
    """pixels -> the features the head reads [N, D] (penultimate layer), sharing `model`'s
    weights."""
    import keras

    return keras.Model(model.input, feature_tensor(model), name="features_only")


def logits_of(model: keras.Model, features: np.ndarray) -> np.ndarray:
    """The output layer's logits float64 [N, K] for features [N, D] (its kernel and bias; the
    dropout before it is the identity at inference)."""
    weights = model.get_layer(PROBABILITIES).get_weights()  # kernel, and the bias if any
    f = np.asarray(features, np.float64).reshape(len(features), -1)
    logits = f @ weights[0].astype(np.float64)
    return logits + weights[1].astype(np.float64) if len(weights) > 1 else logits


def scored_model(model: keras.Model, stats: OODStats) -> keras.Model:
    """pixels -> {"probabilities": [N, K], "ood_score": [N] float32, "ood": [N] bool}: the run's
    model with the detector in the same graph (what Predictor and the exports run)."""
    import keras

    from imgclf.models.layers import MahalanobisScore  # these import Keras

    features = feature_tensor(model)
    dim = int(np.prod(features.shape[1:]))
    if dim != stats.dim:
        raise UserError(
            f"the OOD statistics were fitted on {stats.dim} features, but this model's head "
            f"reads {dim}; they belong to another model: re-train the run"
        )
    layer = MahalanobisScore(stats.whiten, stats.shift, stats.centres, name=SCORE_NAME)
    score = layer(features)
    flag = keras.ops.greater(score, stats.threshold)
    outputs = {PROBABILITIES: model.outputs[0], SCORE_NAME: score, FLAG_NAME: flag}
    return keras.Model(model.input, outputs, name=f"{model.name}_scored")


def serving_model(model: keras.Model, stats: OODStats | None = None, tta: str = "none"):
    """What Predictor runs for a run's `model`: with the OOD detector `stats` in the same graph
    (`scored_model`) when given, behind the test-time augmentation views of `tta`
    (`imgclf.models.tta`; "none": none)."""
    from imgclf.models.tta import tta_model

    return tta_model(model if stats is None else scored_model(model, stats), tta)
