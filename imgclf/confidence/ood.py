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
from typing import Any

import numpy as np

from imgclf import runs
from imgclf.infra.errors import UserError

METHOD = "Mahalanobis distance to the nearest class mean, shared covariance (Lee et al., 2018)"
MAX_FIT_IMAGES = 20_000  # training images whose features estimate the means and covariance
MIN_PER_CLASS = 50  # a capped sample still keeps this many of each class (or all it has)
# The threshold is a quantile of the validation images' scores: from fewer than this many it is
# one or two images' score, and flagged every test image of a 2-image validation split.
MIN_THRESHOLD_IMAGES = 5
# Above this many feature dimensions (a flattened conv map: model.hidden=[] or a re-used
# run's `transfer.backbone_layer`) the D x D covariance and the D x D matrix in every export
# cost too much: the detector is skipped, and says so.
MAX_FEATURE_DIM = 4096
SCORE_NAME = "ood_score"  # the exported output: float32 [N], the distance
FLAG_NAME = "ood"  # the exported output: bool [N], score above the threshold


@dataclass(frozen=True)
class OODStats:
    """The fitted detector: whiten L float [D, D], shift float [D], centres float [C, D] and
    the threshold (a distance). An image's whitened features are z = f L - shift, the class
    means' are `centres` (mu_c L - shift): the shift, the mean of the whitened class means,
    keeps |z|^2 - 2 z.m + |m|^2 from cancelling catastrophically in float32 when features sit
    far from the origin (post-ReLU features always do)."""

    whiten: np.ndarray
    shift: np.ndarray
    centres: np.ndarray
    threshold: float

    @property
    def dim(self) -> int:
        """D, the feature dimension the detector expects."""
        return int(self.whiten.shape[0])

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distances float64 [N] of features [N, D] to the nearest class mean (whitened)."""
        f = np.asarray(features, np.float64).reshape(len(features), -1)
        z = f @ self.whiten - self.shift
        d2 = (z**2).sum(1)[:, None] - 2 * z @ self.centres.T + (self.centres**2).sum(1)[None]
        return np.sqrt(np.maximum(d2, 0.0)).min(axis=1)

    def float32_error(self, features: np.ndarray) -> float:
        """The largest difference between the score computed in float32 (as the model's
        MahalanobisScore layer and every export compute it) and in float64, over `features`
        [N, D], as a fraction of the threshold. Large when the features barely vary (a model
        that has learned nothing): the whitening then scales round-off up to the score's size."""
        f = np.asarray(features, np.float64).reshape(len(features), -1)
        w, shift, centres = (a.astype(np.float32) for a in (self.whiten, self.shift, self.centres))
        z = f.astype(np.float32) @ w - shift
        d2 = (z * z).sum(1)[:, None] - 2 * z @ centres.T + (centres * centres).sum(1)[None]
        s32 = np.sqrt(np.maximum(d2.min(axis=1), 0.0)).astype(np.float64)
        err = np.abs(s32 - self.score(f)).max() if len(f) else 0.0
        return float(err / abs(self.threshold)) if self.threshold else float("inf")

    def save(self, path: Path) -> None:
        """Write the .npz atomically (plain arrays, no pickle)."""
        arrays = {"whiten": self.whiten, "shift": self.shift, "centres": self.centres}
        with runs.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays, threshold=self.threshold)

    @classmethod
    def load(cls, path: Path) -> OODStats:
        """Read an .npz written by `save` (allow_pickle=False: arrays only).

        Raises ValueError when a key is missing or the shapes do not fit together."""
        with np.load(path, allow_pickle=False) as data:
            stats = cls(data["whiten"], data["shift"], data["centres"], float(data["threshold"]))
        d = stats.whiten.shape[0] if stats.whiten.ndim == 2 else -1
        if (
            stats.whiten.shape != (d, d)
            or stats.shift.shape != (d,)
            or stats.centres.ndim != 2
            or stats.centres.shape[1] != d
            or not np.isfinite(stats.threshold)
            or not all(np.isfinite(a).all() for a in (stats.whiten, stats.shift, stats.centres))
        ):
            raise ValueError("the arrays' shapes do not fit together, or hold NaN/inf")
        return stats


# A detector whose float32 score is further than this (a fraction of its threshold) from the
# float64 one is not kept: the exports' parity check allows 1e-3, and a score that is mostly
# round-off would flag images at random.
FLOAT32_LIMIT = 1e-4


def fit(features: np.ndarray, labels: np.ndarray, num_classes: int) -> OODStats:
    """Class means and the shared Ledoit-Wolf covariance of training features [N, D] with
    labels int [N]; the threshold is left at +inf until `with_threshold`.

    Raises ValueError when there are fewer than two feature vectors, a feature is not finite,
    or the covariance cannot be factorised (numpy's LinAlgError, re-raised with the reason)."""
    from sklearn.covariance import LedoitWolf

    # One float64 copy of the features, centred in place class by class: the fit holds this
    # copy and Ledoit-Wolf's own work arrays, not a copy per step (+275 MB at 7,000 images).
    f = np.array(features, np.float64).reshape(len(features), -1)
    labels = np.asarray(labels, np.int64)
    if len(f) < 2:
        raise ValueError("the OOD score needs at least two training images")
    if not np.isfinite(f).all():
        raise ValueError("the training features hold NaN or inf (a diverged model)")
    present = [c for c in range(num_classes) if (labels == c).any()]
    means = np.stack([f[labels == c].mean(0) for c in present])
    for mean, c in zip(means, present, strict=True):
        rows = np.flatnonzero(labels == c)
        f[rows] -= mean
    precision = LedoitWolf(assume_centered=True).fit(f).precision_
    # Cholesky of the precision: L L^T = Sigma^-1, so |(f - mu) L|^2 is the squared distance.
    # A tiny ridge guards the factorisation against round-off on a near-singular estimate.
    ridge = 1e-10 * np.trace(precision) / len(precision)
    try:
        whiten = np.linalg.cholesky(precision + ridge * np.eye(len(precision)))
    except np.linalg.LinAlgError:  # a degenerate covariance: e.g. features that never vary
        raise ValueError(
            "the feature covariance is singular (features that barely vary between images: "
            "a model that has not learned to tell them apart)"
        ) from None
    centres = means @ whiten
    shift = centres.mean(axis=0)
    return OODStats(whiten, shift, centres - shift, float("inf"))


def with_threshold(stats: OODStats, val_scores: np.ndarray, quantile: float) -> OODStats:
    """`stats` with its threshold at the `quantile` of the validation scores."""
    threshold = float(np.quantile(val_scores, quantile))
    return OODStats(stats.whiten, stats.shift, stats.centres, threshold)


def report(
    stats: OODStats, quantile: float, val_scores: np.ndarray, test_scores: np.ndarray, n_fit: int
) -> dict[str, Any]:
    """The run metrics' `ood` section: the method, threshold and false-alarm rates."""
    return {
        "method": METHOD,
        "threshold": stats.threshold,
        "quantile": quantile,
        "fitted_on": f"{n_fit} training images (features in inference mode)",
        "threshold_fitted_on": f"{len(val_scores)} validation images",
        "feature_dim": int(stats.whiten.shape[0]),
        "val_false_alarm_rate": float((val_scores > stats.threshold).mean()),
        "test_false_alarm_rate": float((test_scores > stats.threshold).mean()),
        "test_score_median": float(np.median(test_scores)),
    }


def load_run_stats(run_dir: Path) -> OODStats | None:
    """The run's detector (`runs.Run.detector_file`: ood.npz checked against the manifest), or
    None when the run has none.

    Raises IntegrityError when ood.npz differs from (or is missing but recorded in) the run,
    UserError when it cannot be read as a detector."""
    path = runs.Run(run_dir).detector_file()
    if path is None:
        return None
    try:
        return OODStats.load(path)
    except Exception as exc:  # zipfile, numpy and shape errors alike: one line, never a trace
        raise UserError(
            f"{path}: not a readable OOD statistics file ({type(exc).__name__}: {exc}); "
            "re-train the run"
        ) from exc
