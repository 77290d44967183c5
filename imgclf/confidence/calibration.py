"""Calibrated confidence: temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural
Networks") fitted on the validation split, and the figures that say whether it helped.

A network trained with cross-entropy is usually over-confident: of the test images it labels
with p = 0.99, fewer than 99% are right. Temperature scaling divides the logits by one scalar
T > 0 chosen to minimise the validation negative log-likelihood; softmax(z / T) keeps the
argmax (so accuracy is unchanged) and only moves the probabilities. `fold_temperature` puts
1/T into the output layer's kernel and bias, so model.keras and every export answer with the
calibrated probabilities without any extra code.

The figures (all on the test split, never used for fitting):
    ECE    expected calibration error over the top-1 confidence in 15 equal-width bins on
           [0, 1] (Naeini et al., 2015; Guo et al.'s binning): sum over bins of
           (images in bin / N) * |accuracy in bin - mean confidence in bin|
    NLL    negative log-likelihood, mean over images (`sklearn.metrics.log_loss`)
    Brier  mean over images of sum over classes (p_k - y_k)^2, range 0..2
           (`sklearn.metrics.brier_score_loss`, multi-class, not halved)
The reliability-diagram data per bin comes from `sklearn.calibration.calibration_curve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.models.names import PROBABILITIES

if TYPE_CHECKING:
    import keras

ECE_BINS = 15
BINNING = f"{ECE_BINS} equal-width bins of the top-1 confidence on [0, 1]"
T_RANGE = (0.05, 20.0)  # the search interval of the temperature (log-spaced search)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) in float64, row-wise; logits [N, K] -> [N, K]."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)  # exp never overflows
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (nats); probs [N, K], labels int [N]."""
    from sklearn.metrics import log_loss

    return float(log_loss(labels, probs, labels=list(range(probs.shape[1]))))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of sum over classes (p_k - y_k)^2 (0..2)."""
    from sklearn.metrics import brier_score_loss

    return float(
        brier_score_loss(labels, probs, labels=list(range(probs.shape[1])), scale_by_half=False)
    )


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Reliability-diagram data of the top-1 prediction in `bins` equal-width bins on [0, 1]:
    per non-empty bin its mean confidence, accuracy and number of images, plus the ECE.

    Bins as `sklearn.calibration.calibration_curve(strategy="uniform")` makes them (it gives the
    accuracy and confidence per bin; the counts use the same edges)."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(np.int64)
    return binned(confidence, correct, bins)


def binned(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """The ECE and per non-empty bin (`bins` equal-width on [0, 1]) the mean `confidence`, the
    share of `correct` (0/1 int) and the count: `reliability`'s, and a multi-label run's per
    (image, label) pair (`confidence.multilabel`)."""
    from sklearn.calibration import calibration_curve

    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.searchsorted(edges[1:-1], confidence)  # calibration_curve's own bin assignment
    counts = np.bincount(ids, minlength=bins)
    if correct.min() == correct.max():  # calibration_curve needs both outcomes present
        accuracy = np.full(int((counts > 0).sum()), float(correct[0]))
        mean_conf = np.array([confidence[ids == b].mean() for b in np.flatnonzero(counts)])
    else:
        accuracy, mean_conf = calibration_curve(correct, confidence, n_bins=bins)
    n = counts[counts > 0]
    ece = float((n / n.sum() * np.abs(accuracy - mean_conf)).sum())
    return {
        "ece": ece,
        "bins": [
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "confidence": float(c),
                "accuracy": float(a),
                "count": int(k),
            }
            for b, c, a, k in zip(np.flatnonzero(counts), mean_conf, accuracy, n, strict=True)
        ],
    }


def figures(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """ECE, NLL, Brier and the reliability bins of probabilities [N, K] against labels [N]."""
    rel = reliability(probs, labels)
    return {"ece": rel["ece"], "nll": nll(probs, labels), "brier": brier(probs, labels),
            "reliability": rel["bins"]}  # fmt: skip


def mean_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature) at `labels`, in float64."""
    s = np.asarray(logits, np.float64) / temperature
    s = s - s.max(axis=1, keepdims=True)
    rows = np.arange(len(s))
    return float((np.log(np.exp(s).sum(axis=1)) - s[rows, np.asarray(labels, np.int64)]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on (validation) logits
    [N, K] float and labels int [N] (Guo et al., 2017). A bounded scalar search on log T
    (`scipy.optimize.minimize_scalar`), so T stays in T_RANGE and positive.

    Raises ValueError when there are no logits to fit on."""
    from scipy.optimize import minimize_scalar

    if len(logits) == 0:
        raise ValueError("fit_temperature needs at least one validation image")
    bounds = (float(np.log(T_RANGE[0])), float(np.log(T_RANGE[1])))
    result = minimize_scalar(
        lambda log_t: mean_nll(logits, labels, float(np.exp(log_t))),
        bounds=bounds,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def calibrate(
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
) -> dict[str, Any]:
    """Fit T on the validation logits only, then report test ECE/NLL/Brier before (T = 1) and
    after (T fitted). Returns metrics.json's `calibration` section; `{"skipped": why, ...}`
    when T ran to an end of T_RANGE (`at_limit`): that fit is no temperature but a sign that
    the validation split cannot fit one, and the probabilities are left as trained (decided on
    validation alone: the test split only measures)."""
    temperature = fit_temperature(val_logits, val_labels)
    why = at_limit(val_logits, val_labels, temperature)
    if why:
        return {"skipped": why, "fitted_temperature": temperature, "n_val": len(val_labels)}
    return {
        "method": "temperature scaling (Guo et al., 2017)",
        "temperature": temperature,
        "fitted_on": "validation",
        "n_val": len(val_labels),
        "evaluated_on": "test",
        "n_test": len(test_labels),
        "binning": BINNING,
        "before": figures(softmax(test_logits), test_labels),
        "after": figures(softmax(test_logits, temperature), test_labels),
    }


def at_limit(logits: np.ndarray, labels: np.ndarray, temperature: float) -> str | None:
    """Why the fitted `temperature` is not used, or None: it is not a number, or the NLL of
    (validation) `logits` [N, K] at `labels` [N] is no worse at an end of T_RANGE than at T,
    i.e. it keeps falling towards that end and no finite temperature minimises it.
      top end:    lowering every confidence towards 1/K kept helping: the model is near chance
                  on those images, or they are too few (a 45-image folder split 33/6/6 gave
                  T = 19.999 and a worse test ECE, 0.23 -> 0.33);
      bottom end: every image is already right with a margin, so sharper is always better on
                  them: T would make the model ever more confident, which nothing supports."""
    low, high = T_RANGE
    n = len(labels)
    if not np.isfinite(temperature):
        return f"the temperature fit failed ({temperature}) on {n} validation images"
    here = mean_nll(logits, labels, temperature) + 1e-9
    if mean_nll(logits, labels, high) <= here:
        return (
            f"the validation likelihood kept improving up to the largest temperature ({high}, "
            f"probabilities towards 1/K) on {n} validation images: too few, or a model near "
            "chance on them, to fit one; the probabilities are left as trained (more "
            "validation images or more training fix it)"
        )
    if mean_nll(logits, labels, low) <= here:
        return (
            f"the validation likelihood kept improving down to the smallest temperature ({low}, "
            f"ever sharper probabilities) on {n} validation images: every one is already "
            "right with a margin, so they cannot say how confident to be; the probabilities are "
            "left as trained (a larger validation split, with some errors, fits one)"
        )
    return None


def fold_temperature(model: keras.Model, temperature: float | np.ndarray) -> None:
    """Divide the output layer's kernel and bias by `temperature`, in place: the model then
    outputs softmax(logits / T), the calibrated probabilities, with the same graph (so every
    export carries the calibration and parity is unaffected)."""

    layer = model.get_layer(PROBABILITIES)
    t = np.asarray(temperature, np.float32)  # a scalar, or one per output (multi-label)
    layer.set_weights([w / t for w in layer.get_weights()])
