""" "This doesn't look like the training data": a feature-space out-of-distribution (OOD) score.

Method: the Mahalanobis distance of an image's features (the tensor the classification head
reads, `models.reuse.feature_tensor`) to the nearest class mean, with one covariance shared by
all classes (Lee et al., 2018, "A Simple Unified Framework for Detecting Out-of-Distribution
Samples and Adversarial Attacks", without their input perturbation and layer ensemble):

    score(x) = min_c sqrt((f(x) - mu_c)^T  Sigma^-1  (f(x) - mu_c))

mu_c are the class means of the training images' features (inference mode, no augmentation),
Sigma the covariance of the class-centred features, shrunk towards a scaled identity by the
Ledoit-Wolf estimator (`sklearn.covariance.LedoitWolf`) so it stays invertible when a backbone
has more feature dimensions than the run has images. The threshold is a quantile (0.95 by
default, `train.ood_quantile`) of the validation images' scores: about 5% of in-distribution
images are flagged (false alarms), and the test split says how many really are.

What is stored (`runs.OOD`, an .npz covered by the manifest): `whiten` L [D, D] with
L L^T = Sigma^-1, the whitened class means `centres` mu_c L [C, D], and the `threshold`. In
whitened space the distance is Euclidean, so the graph needs one matmul:
    d_c^2 = |f L|^2 - 2 (f L) . m_c + |m_c|^2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

METHOD = "Mahalanobis distance to the nearest class mean, shared covariance (Lee et al., 2018)"
MAX_FIT_IMAGES = 20_000  # training images whose features estimate the means and covariance
SCORE_NAME = "ood_score"  # the exported output: float32 [N], the distance
FLAG_NAME = "ood"  # the exported output: bool [N], score above the threshold


@dataclass(frozen=True)
class OODStats:
    """The fitted detector: whiten float [D, D], centres float [C, D], threshold (a distance)."""

    whiten: np.ndarray
    centres: np.ndarray
    threshold: float

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distances float64 [N] of features [N, D] to the nearest class mean (whitened)."""
        z = np.asarray(features, np.float64).reshape(len(features), -1) @ self.whiten
        d2 = (z**2).sum(1)[:, None] - 2 * z @ self.centres.T + (self.centres**2).sum(1)[None]
        return np.sqrt(np.maximum(d2, 0.0)).min(axis=1)

    def save(self, path: Path) -> None:
        """Write the .npz atomically (plain arrays, no pickle)."""
        from imgclf import runs

        with runs.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, whiten=self.whiten, centres=self.centres, threshold=self.threshold)

    @classmethod
    def load(cls, path: Path) -> OODStats:
        """Read an .npz written by `save` (allow_pickle=False: arrays only)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(data["whiten"], data["centres"], float(data["threshold"]))


def fit(features: np.ndarray, labels: np.ndarray, num_classes: int) -> OODStats:
    """Class means and the shared Ledoit-Wolf covariance of training features [N, D] with
    labels int [N]; the threshold is left at +inf until `set_threshold`.

    Raises ValueError when there are fewer than two feature vectors."""
    from sklearn.covariance import LedoitWolf

    f = np.asarray(features, np.float64).reshape(len(features), -1)
    labels = np.asarray(labels, np.int64)
    if len(f) < 2:
        raise ValueError("the OOD score needs at least two training images")
    present = [c for c in range(num_classes) if (labels == c).any()]
    means = np.stack([f[labels == c].mean(0) for c in present])
    centred = f - means[np.searchsorted(present, labels)]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    # Cholesky of the precision: L L^T = Sigma^-1, so |(f - mu) L|^2 is the squared distance.
    # A tiny ridge guards the factorisation against round-off on a near-singular estimate.
    ridge = 1e-10 * np.trace(precision) / len(precision)
    whiten = np.linalg.cholesky(precision + ridge * np.eye(len(precision)))
    return OODStats(whiten, means @ whiten, float("inf"))


def with_threshold(stats: OODStats, val_scores: np.ndarray, quantile: float) -> OODStats:
    """`stats` with its threshold at the `quantile` of the validation scores."""
    return OODStats(stats.whiten, stats.centres, float(np.quantile(val_scores, quantile)))


def feature_model(model: keras.Model) -> keras.Model:
    """pixels -> the features the head reads [N, D] (penultimate layer), sharing `model`'s
    weights."""
    import keras

    from imgclf.models.reuse import feature_tensor

    return keras.Model(model.input, feature_tensor(model), name="features_only")


def logits_of(model: keras.Model, features: np.ndarray) -> np.ndarray:
    """The output layer's logits float64 [N, K] for features [N, D] (its kernel and bias; the
    dropout before it is the identity at inference)."""
    from imgclf.models.names import PROBABILITIES

    kernel, bias = model.get_layer(PROBABILITIES).get_weights()
    f = np.asarray(features, np.float64).reshape(len(features), -1)
    return f @ kernel.astype(np.float64) + bias.astype(np.float64)


def scored_model(model: keras.Model, stats: OODStats) -> keras.Model:
    """pixels -> {"probabilities": [N, K], "ood_score": [N] float32, "ood": [N] bool}: the run's
    model with the detector in the same graph (what Predictor and the exports run)."""
    import keras

    from imgclf.models.layers import MahalanobisScore
    from imgclf.models.names import PROBABILITIES
    from imgclf.models.reuse import feature_tensor

    score = MahalanobisScore(stats.whiten, stats.centres, name=SCORE_NAME)(feature_tensor(model))
    flag = keras.ops.greater(score, stats.threshold)
    outputs = {PROBABILITIES: model.outputs[0], SCORE_NAME: score, FLAG_NAME: flag}
    return keras.Model(model.input, outputs, name=f"{model.name}_scored")


def report(
    stats: OODStats, quantile: float, val_scores: np.ndarray, test_scores: np.ndarray, n_fit: int
) -> dict[str, Any]:
    """The run metrics' `ood` section: the method, threshold and false-alarm rates."""
    return {
        "method": METHOD,
        "threshold": stats.threshold,
        "quantile": quantile,
        "fitted_on": f"{n_fit} training images (features in inference mode)",
        "feature_dim": int(stats.whiten.shape[0]),
        "val_false_alarm_rate": float((val_scores > stats.threshold).mean()),
        "test_false_alarm_rate": float((test_scores > stats.threshold).mean()),
        "test_score_median": float(np.median(test_scores)),
    }


def load_run_stats(run_dir: Path) -> OODStats | None:
    """The run's detector (ood.npz, checked against the manifest), or None when the run has
    none (trained with train.ood false, or before imgclf had it).

    Raises IntegrityError when ood.npz differs from the manifest, UserError when unreadable."""
    from imgclf import runs
    from imgclf.errors import UserError

    path = Path(run_dir) / runs.OOD
    if not path.is_file():
        return None
    runs.verify_manifest(run_dir, runs.OOD)
    try:
        return OODStats.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: not a readable OOD statistics file ({exc}); re-train") from exc
