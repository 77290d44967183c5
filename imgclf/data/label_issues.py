"""Likely label errors: images whose given class disagrees with what the rest of the data says.

Method: confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 2021), written here from the paper (the reference
library, cleanlab, is AGPL-3.0 and is not a dependency of imgclf; benchmarks/audit.py compares
with it when it is installed). From out-of-fold predicted probabilities P [N, K]:

1. each class j's threshold t_j is the mean of P[:, j] over the images labelled j (how sure the
   model is, on average, of that class's own images);
2. an image is counted for class j* when P[x, j] >= t_j for some j: j* is the most probable
   of those classes; the counts by (given label, j*) are the confident joint;
3. the images whose j* differs from their given label (the off-diagonal of the confident
   joint) say *how many* labels are likely wrong; that many images are flagged, those whose
   given label has the lowest out-of-fold probability (self-confidence, the paper's ranking),
   each with the most probable class as the suggestion. (Flagging the off-diagonal images
   themselves, the paper's `confident_learning` filter, found fewer flipped labels at lower
   precision on mnist5k and Fashion-MNIST: benchmarks/audit.py.)

The probabilities come from two fast models fitted k times (`out_of_fold`), on each image as
16×16 grey pixels, 5 folds (scikit-learn's `cross_val_predict`), so every image is scored by
models that never saw it: a logistic regression (standardised pixels) and a 10-nearest-neighbour
vote (40 principal components), averaged. Pixels are weak features for photos (the paper's
results use a network's); the benchmark says what this finds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from imgclf.images import resize_array

SIDE = 16  # the fast model's input: SIDE × SIDE grey pixels
FOLDS = 5


def features(images: Any) -> np.ndarray:
    """float32 [N, SIDE*SIDE]: each uint8 image [H, W, C] as SIDE×SIDE grey pixels in 0..1."""
    out = np.empty((len(images), SIDE * SIDE), dtype=np.float32)
    for i, pixels in enumerate(images):
        pixels = np.asarray(pixels)
        grey = pixels.mean(axis=-1) if pixels.ndim == 3 else pixels
        small = resize_array(grey.astype(np.uint8)[..., None], (SIDE, SIDE))
        out[i] = small.reshape(-1) / 255.0
    return out


def out_of_fold(
    x: np.ndarray, labels: np.ndarray, seed: int = 0, embedded: bool = False
) -> np.ndarray:
    """float [N, K]: each row's class probabilities from models fitted on the other folds
    (scikit-learn `cross_val_predict`, stratified `FOLDS` folds, seeded): the mean of a
    logistic regression's and a 10-nearest-neighbour vote's (on 40 principal components of
    pixels, or by cosine distance of `embedded` ImageNet features)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    folds = min(FOLDS, int(np.bincount(labels)[np.bincount(labels) > 0].min()))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # C=0.01: a strongly regularised model fits the noisy labels least (measured on mnist5k and
    # Fashion-MNIST against C 0.1 and 1, 16 and 28 px; benchmarks/audit.py). The two models err
    # differently: their mean beat either alone and the baseline on both sets (docs/data.md).
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=100, tol=1e-3, C=0.01))
    smallest = int(len(labels) * (folds - 1) / folds)
    dims = max(1, min(40, x.shape[1], smallest - 1))
    reduce = Normalizer() if embedded else PCA(dims, random_state=seed)
    neighbours = make_pipeline(reduce, KNeighborsClassifier(min(10, smallest)))
    probs = [cross_val_predict(m, x, labels, cv=cv, method="predict_proba")
             for m in (linear, neighbours)]  # fmt: skip
    return (probs[0] + probs[1]) / 2


def find(labels: np.ndarray, probs: np.ndarray) -> list[tuple[int, int, float]]:
    """(index, suggested class: the most probable other than the given one, out-of-fold
    probability of the given label) of each likely label error, most suspect first (see the
    module's docstring). `labels` int [N] in 0..K-1, `probs` float [N, K] (out of fold)."""
    k = probs.shape[1]
    thresholds = np.array(
        [probs[labels == j, j].mean() if np.any(labels == j) else 1.0 for j in range(k)]
    )
    above = probs >= thresholds[None, :] - 1e-6
    confident = np.where(above, probs, -1.0).argmax(axis=1)
    how_many = int(np.sum(above.any(axis=1) & (confident != labels)))
    own = probs[np.arange(len(labels)), labels]
    order = np.argsort(own, kind="stable")[:how_many]
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -1.0  # the suggestion is never the given class
    return [(int(i), int(others[i].argmax()), float(own[i])) for i in order]


SHOWN = 20  # flagged images listed in the report (the count covers all)
METHOD = "confident learning (Northcutt et al. 2021) on 5-fold logistic regression and 10-NN of {}"
FEATURES = {"pixels": "16×16 pixels", "imagenet": "EfficientNet-Lite0 ImageNet features"}


def report(
    pool: Any,
    usable: np.ndarray,
    x: np.ndarray,
    kept: Callable[[str], bool] | None = None,
    embedded: bool = False,
) -> dict[str, Any]:
    """The audit's `label_issues` for the pool images `usable` int [N] with their features `x`
    [N, D] (16×16 pixels, or `embedded` ImageNet features): how many look mislabelled and the
    SHOWN most suspect (images the review keeps, `kept(file)` true, are left out of both); or
    why the check was skipped."""
    method = METHOD.format(FEATURES["imagenet" if embedded else "pixels"])
    counts = np.bincount(pool.labels[usable], minlength=len(pool.class_names))
    enough = counts[pool.labels[usable]] >= 2  # a class of one image cannot be cross-checked
    usable, x = usable[enough], x[enough]
    labels = pool.labels[usable]
    counts = np.bincount(labels, minlength=len(pool.class_names))
    if len(usable) < 20 or np.count_nonzero(counts) < 2:
        return {"method": method, "skipped": "fewer than 20 images in classes of 2 or more"}
    present = np.flatnonzero(counts)  # the model's columns: the classes that have images
    found = find(np.searchsorted(present, labels), out_of_fold(x, labels, embedded=embedded))
    found = [(i, int(present[j]), p) for i, j, p in found]
    name = (lambda i: pool.files[i]) if pool.files is not None else (lambda i: f"image {i}")
    if kept is not None:
        found = [f for f in found if not kept(name(int(usable[f[0]])))]
    examples = [
        {"file": name(int(usable[i])), "given": pool.class_names[labels[i]],
         "suggested": pool.class_names[j], "p_given": round(p, 4)}
        for i, j, p in found[:SHOWN]
    ]  # fmt: skip
    return {"method": method, "flagged": len(found), "examples": examples}
