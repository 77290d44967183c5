"""Calibrated per-label probabilities for `task: multilabel`: one temperature per label (Guo et
al., 2017, applied to each sigmoid output on its own, as Platt scaling without the bias term),
fitted on the validation split, and the figures that say whether it helped.

Each label k is a binary problem: p_k = sigmoid(z_k / T_k). T_k minimises the validation binary
negative log-likelihood of label k (a bounded scalar search on log T,
`scipy.optimize.minimize_scalar`, as `calibration.fit_temperature`). Dividing a logit by a
positive T keeps its order, so each label's ranking (its AP) is unchanged; its threshold is
chosen afterwards, on the calibrated validation probabilities. A label whose search runs to an
end of T_RANGE (no finite temperature fits: too few validation positives, or every one already
right with a margin), or that has no validation positive (or no negative), keeps T = 1, and the
section says which.

The figures (test split only):
    ECE        per label: 15 equal-width bins of p_k on [0, 1], sum over bins of
               (images in bin / N) * |share of images with label k in bin - mean p_k in bin|
               (Naeini et al., 2015; bins as `sklearn.calibration.calibration_curve` makes them);
               overall: the same over every (image, label) pair pooled ("classwise" ECE of
               Kull et al., 2019, pooled rather than averaged)
    NLL        binary cross-entropy, mean over every (image, label) pair (nats)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imgclf.confidence.calibration import ECE_BINS, T_RANGE, binned

BINNING = f"{ECE_BINS} equal-width bins of each label's probability on [0, 1]"


def sigmoid(logits: np.ndarray, temperatures: np.ndarray | float = 1.0) -> np.ndarray:
    """sigmoid(logits / temperatures) in float64; logits [N, K], temperatures [K] or a scalar."""
    z = np.asarray(logits, np.float64) / np.asarray(temperatures, np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # never overflows, unlike 1 / (1 + exp(-z))


def binary_nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of sigmoid(logits / temperature) against 0/1 `targets` (any
    shape, the same as `logits`), in nats, computed from the logits (no log of 0)."""
    z = np.asarray(logits, np.float64) / temperature
    y = np.asarray(targets, np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_label_temperature(logits: np.ndarray, targets: np.ndarray) -> float | None:
    """T minimising `binary_nll` of one label's validation logits [N] and targets [N], or None
    when the minimum lies at an end of T_RANGE (no finite temperature fits)."""
    from scipy.optimize import minimize_scalar

    low, high = float(np.log(T_RANGE[0])), float(np.log(T_RANGE[1]))
    result = minimize_scalar(
        lambda log_t: binary_nll(logits, targets, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-4},
    )
    temperature = float(np.exp(result.x))
    here = binary_nll(logits, targets, temperature) + 1e-9
    ends = (binary_nll(logits, targets, T_RANGE[0]), binary_nll(logits, targets, T_RANGE[1]))
    if not np.isfinite(temperature) or min(ends) <= here:
        return None
    return temperature


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Reliability data of binary probabilities `probs` against 0/1 `targets` (flattened):
    per non-empty bin its mean probability, the share of positives and the count, and the ECE
    (`calibration.binned`)."""
    p = np.asarray(probs, np.float64).ravel()
    return binned(p, np.asarray(targets).ravel().astype(np.int64), bins)


def figures(probs: np.ndarray, targets: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Pooled ECE and NLL, the pooled reliability bins and each label's ECE, of probabilities
    [N, K] against multi-hot targets [N, K]."""
    pooled = reliability(probs, targets)
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(targets, np.float64)
    nll = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    per_label = {n: reliability(probs[:, k], targets[:, k])["ece"] for k, n in enumerate(names)}
    return {"ece": pooled["ece"], "nll": nll, "ece_per_label": per_label,
            "reliability": pooled["bins"]}  # fmt: skip


def calibrate(
    val_logits: np.ndarray,
    val_targets: np.ndarray,
    test_logits: np.ndarray,
    test_targets: np.ndarray,
    names: list[str],
) -> tuple[np.ndarray, dict[str, Any]]:
    """(temperatures float64 [K], metrics.json's `calibration` section): each label's T fitted on
    the validation logits [N, K] only, the test figures before (T = 1) and after.

    Raises ValueError when there is no validation image."""
    if len(val_logits) == 0:
        raise ValueError("per-label calibration needs at least one validation image")
    temperatures = np.ones(len(names))
    kept_as_trained = []
    for k, name in enumerate(names):
        column = np.asarray(val_targets[:, k])
        # Only positives or only negatives: any sharper T looks better; nothing to fit.
        one_class = column.min() == column.max()
        fitted = None if one_class else fit_label_temperature(val_logits[:, k], column)
        if fitted is None:
            kept_as_trained.append(name)
        else:
            temperatures[k] = fitted
    section = {
        "method": "temperature scaling per label (Guo et al., 2017, on each sigmoid)",
        "temperatures": dict(zip(names, temperatures.tolist(), strict=True)),
        "kept_as_trained": kept_as_trained,
        "fitted_on": "validation", "n_val": len(val_logits),
        "evaluated_on": "test", "n_test": len(test_logits), "binning": BINNING,
        "before": figures(sigmoid(test_logits), test_targets, names),
        "after": figures(sigmoid(test_logits, temperatures), test_targets, names),
    }  # fmt: skip
    return temperatures, section
