"""The trained model's outputs on each split, computed once at the end of a run and shared by
everything that reads them: the temperature (validation logits), the OOD detector (training,
validation and test features), evaluation (test probabilities) and the SavedModel parity check
(its reference on the first test images).

One bounded, compiled pass per split (`forward.Forward`) through the model up to the features
its head reads (`models.reuse.feature_tensor`); the logits follow from the output layer's kernel
and bias (`graph.logits_of`), and the probabilities from the logits and the temperature
(`calibration.softmax`), so nothing runs through the backbone twice. Features wider than
`ood.MAX_FEATURE_DIM` (a flattened feature map) are not kept: only their logits are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.confidence import graph, ood
from imgclf.confidence.calibration import softmax
from imgclf.data.store import ImageView
from imgclf.forward import Forward
from imgclf.models.names import PROBABILITIES

if TYPE_CHECKING:
    import keras

    from imgclf.data import Split, Splits


@dataclass(frozen=True)
class SplitOutputs:
    """One split through the model: the readable images' positions in the split, their labels,
    logits float64 [n, K] (before any temperature) and features float32 [n, D] (None when D is
    above ood.MAX_FEATURE_DIM)."""

    positions: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    features: np.ndarray | None

    def __len__(self) -> int:
        return len(self.labels)

    def probabilities(self, temperature: float = 1.0) -> np.ndarray:
        """softmax(logits / temperature), float64 [n, K]: what the model (with the temperature
        folded into its output layer) outputs for these images."""

        return softmax(self.logits, temperature)


def head_outputs(
    model: keras.Model, stats: Any, features: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities float64 [n, K], OOD scores float64 [n] or None) of features [n, D]:
    `model`'s own output layer and, given `stats` (ood.OODStats), the detector's
    MahalanobisScore layer, in a compiled function (`forward.Forward`), so they are computed by
    the same ops, in float32 on the same device, as the model and its exports compute them."""
    import keras

    from imgclf.models.layers import MahalanobisScore

    inputs = keras.Input(shape=(features.shape[1],), name="head_features")
    outputs = {PROBABILITIES: model.get_layer(PROBABILITIES)(inputs)}
    if stats is not None:
        score = MahalanobisScore(stats.whiten, stats.shift, stats.centres, name=ood.SCORE_NAME)
        outputs[ood.SCORE_NAME] = score(inputs)
    out = Forward(keras.Model(inputs, outputs), batch_size)(features)
    scores = None if stats is None else np.asarray(out[ood.SCORE_NAME], np.float64)
    return np.asarray(out[PROBABILITIES], np.float64), scores


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


def split_outputs(
    forward: Forward, model: keras.Model, split: Split, limit: int | None = None, seed: int = 0
) -> SplitOutputs:
    """`split` through `forward` (a Forward of `graph.feature_model(model)`): at most about
    `limit` of its images (a seeded stratified subset, in split order), unreadable files left
    out."""

    x, y = split.x, np.asarray(split.y)
    chosen = np.arange(len(y))
    if limit is not None and len(y) > limit:
        chosen = stratified_subset(y, limit, seed)
        x = ImageView(x.store, x.indices[chosen]) if isinstance(x, ImageView) else x[chosen]
    keep_features = True
    logits, features, kept = [], [], []
    for out, positions in forward.stream(x):
        f = out.reshape(len(out), -1)
        keep_features = keep_features and f.shape[1] <= ood.MAX_FEATURE_DIM
        logits.append(graph.logits_of(model, f))
        features.append(f.astype(np.float32) if keep_features else None)
        kept.append(chosen[positions])
    if not kept:  # every file of a streamed split failed to decode
        classes = int(model.get_layer(PROBABILITIES).units)
        return SplitOutputs(np.zeros(0, np.int64), y[:0], np.zeros((0, classes)), None)
    positions = np.concatenate(kept)
    stacked = np.concatenate(features) if keep_features else None
    return SplitOutputs(positions, y[positions], np.concatenate(logits), stacked)


def run_outputs(
    model: keras.Model, splits: Splits, batch_size: int | str = "auto", train_limit: int = 0,
    seed: int = 0, need_val: bool = True,
) -> dict[str, SplitOutputs]:  # fmt: skip
    """{"test"}, "val" (unless not `need_val`: nothing is calibrated or fitted) and "train"
    (at most about `train_limit` images, when it is above 0 and the features are narrow enough
    to keep): every split the end of a run reads, each through the model once, `batch_size`
    images at a time."""
    forward = Forward(graph.feature_model(model), batch_size)
    outputs = {"test": split_outputs(forward, model, splits.test)}
    if need_val:
        outputs["val"] = split_outputs(forward, model, splits.val)
    # Training features only feed the OOD detector, which needs features narrow enough to keep.
    if train_limit > 0 and need_val and outputs["val"].features is not None:
        outputs["train"] = split_outputs(forward, model, splits.train, train_limit, seed)
    return outputs
