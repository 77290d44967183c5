"""Binary cross-entropy with a weight on each label's positives, for `task: multilabel` with
`train.class_weight: balanced`: a rare label's few positives count as much, in total, as its
many negatives.

    loss(y, p) = -mean_k [ w_k * y_k * log p_k + (1 - y_k) * log(1 - p_k) ]

with w_k = negatives_k / positives_k in the training split (`positive_weights`), the rule
PyTorch documents for `BCEWithLogitsLoss(pos_weight=...)`. Label smoothing moves every target
towards 0.5 first, y * (1 - s) + s / 2, as Keras' BinaryCrossentropy does. With every w_k = 1
this is Keras' BinaryCrossentropy; imgclf uses Keras' own loss then.
"""

from __future__ import annotations

import keras
import numpy as np

EPSILON = 1e-7  # keras.config.epsilon(): the probabilities are clipped to [eps, 1 - eps]


def positive_weights(targets: np.ndarray) -> np.ndarray:
    """float32 [K]: negatives / positives of each label in multi-hot `targets` [N, K] (1 for a
    label with no positive or no negative: nothing to balance)."""
    t = np.asarray(targets) > 0
    positives, negatives = t.sum(0), (~t).sum(0)
    ok = (positives > 0) & (negatives > 0)
    return np.where(ok, negatives / np.maximum(positives, 1), 1.0).astype(np.float32)


@keras.saving.register_keras_serializable(package="imgclf")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """The loss of the module docstring: y_true and y_pred float [batch, K] (probabilities
    after the sigmoid) -> float [batch]; `pos_weight` float [K]."""

    def __init__(
        self,
        pos_weight: list[float],
        label_smoothing: float = 0.0,
        name: str = "weighted_binary_crossentropy",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.pos_weight = [float(w) for w in pos_weight]
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y = ops.cast(y_true, y_pred.dtype)
        y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        w = ops.convert_to_tensor(self.pos_weight, dtype=y_pred.dtype)
        return -ops.mean(w * y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p), axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "pos_weight": self.pos_weight,
            "label_smoothing": self.label_smoothing,
        }
