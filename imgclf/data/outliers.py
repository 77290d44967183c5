"""Outliers: training images unlike the rest of their class, and near-blank images.

Two checks on the small grey copies the label check already made (`label_issues.features`,
16×16 pixels in 0..1):

- **near-constant**: an image whose small copy has a standard deviation under BLANK_STD (of
  0..1) is blank or nearly so (a black frame, a lens cap, a white page);
- **unlike its class**: the local outlier factor of each image among the images of its own
  class (scikit-learn's `LocalOutlierFactor`, Breunig et al., "LOF: Identifying Density-Based
  Local Outliers", SIGMOD 2000; 20 neighbours): how much sparser the image's neighbourhood is
  than its neighbours' own. A point is never its own neighbour, so an outlier cannot vouch for
  itself. Flagged above LIMIT (2: about twice as isolated as its neighbours).

Measured on 3,500 digits of mnist5k and of Fashion-MNIST with 20 planted images of another kind
(inverted): all 20 and 18 of 20 found, 25 and 24 flagged in all (docs/data.md). Pixels are weak
features for photos: this finds blank frames, images of another kind (a screenshot among
photos) and badly exposed ones, not a cat among dogs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

BLANK_STD = 0.02  # of 0..1: about 5 grey levels
LIMIT = 2.0  # local outlier factor above which an image is flagged
NEIGHBOURS = 20
SHOWN = 20
METHOD = (
    "local outlier factor (Breunig et al. 2000) within the class, 20 neighbours, on 16×16 "
    "pixels, above 2; near-constant: pixel std < 0.02"
)


def factors(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float64 [N]: each row's local outlier factor among the rows of its own class (1: as
    dense as its neighbours; larger: more isolated). `x` float [N, D], `labels` int [N]; a class
    of fewer than 3 rows gets 1."""
    from sklearn.neighbors import LocalOutlierFactor

    out = np.ones(len(labels))
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 3:
            continue
        lof = LocalOutlierFactor(n_neighbors=min(NEIGHBOURS, len(rows) - 1)).fit(x[rows])
        out[rows] = -lof.negative_outlier_factor_
    return out


def report(
    pool: Any, usable: np.ndarray, x: np.ndarray, kept: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """The audit's `outliers` for the pool images `usable` int [N] with their small copies `x`
    float [N, 256]: near-constant images and images unlike their class, the SHOWN most unusual
    first (images the review keeps, `kept(file)` true, left out); or why it was skipped."""
    labels = pool.labels[usable]
    if len(usable) < 20:
        return {"method": METHOD, "skipped": "fewer than 20 images"}
    blank = x.std(axis=1) < BLANK_STD
    d = np.ones(len(labels))
    with warnings.catch_warnings():  # scikit-learn's note on equal rows: copies are the
        warnings.simplefilter("ignore")  # duplicate check's business
        d[~blank] = factors(x[~blank], labels[~blank])
    far = d > LIMIT
    name = (lambda i: pool.files[i]) if pool.files is not None else (lambda i: f"image {i}")
    rows = [("near-constant", i) for i in np.flatnonzero(blank)]
    rows += [("unlike its class", i) for i in np.flatnonzero(far)[np.argsort(-d[far])]]
    if kept is not None:
        rows = [r for r in rows if not kept(name(int(usable[r[1]])))]
    examples = [
        {"file": name(int(usable[i])), "class": pool.class_names[labels[i]], "why": why,
         "outlier_factor": round(float(d[i]), 2)}
        for why, i in rows[:SHOWN]
    ]  # fmt: skip
    return {
        "method": METHOD,
        "flagged": len(rows),
        "near_constant": sum(1 for why, _ in rows if why == "near-constant"),
        "examples": examples,
    }
