"""The audit's checks of single images, on one pass over the pixels: likely label errors
(`label_issues`) and outliers (`outliers`), both on the same small grey copies.

`data.audit` says what the label check learns from: `pixels` (the default: 16×16 grey
copies, no TensorFlow), `imagenet` (frozen EfficientNet-Lite0 features, `embeddings`: far better
on photos, needs the `[pretrained]` extra and costs a forward pass per image) or `off`.
`imgclf-train` runs them on the training split before fitting (its data report, the terminal,
the model card, the app's Data page) and `imgclf-audit` on every usable image. At most
MAX_IMAGES images are checked (a seeded random sample beyond that): the
fast models' five fits grow with the images (docs/data.md has the time at 10,000).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from imgclf.data import embeddings, label_issues, near_duplicates, outliers, review
from imgclf.data.pool import Pool, has_pixels, pixel_chunks

MAX_IMAGES = 10_000


def check(
    pool: Pool,
    indices: np.ndarray | None = None,
    kept: Callable[[str, str], bool] | None = None,
    seed: int = 0,
    features: str = "pixels",
) -> dict[str, Any]:
    """{"label_issues": ..., "outliers": ...} for the usable pool images among `indices` (every
    image when None). `kept(kind, file)` is true for a file the review keeps for that kind
    (`data.review`): it is left out of that kind's findings. `features`: what the label check
    learns from, "pixels" (16×16 grey) or "imagenet" (`embeddings`: loads TensorFlow; raises
    ConfigError without the `[pretrained]` extra); outliers always use the pixels; "off":
    nothing ({})."""
    if features == "off":
        return {}
    net = embeddings.model() if features == "imagenet" else None
    if not has_pixels(pool):
        why = {"skipped": "data.cache none (no decoded pixels kept)"}
        method = label_issues.METHOD.format(label_issues.FEATURES[features])
        return {"label_issues": {"method": method, **why},
                "outliers": {"method": outliers.METHOD, **why}}  # fmt: skip
    if indices is None:
        indices = np.arange(len(pool.labels))
    if len(indices) > MAX_IMAGES:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(indices, MAX_IMAGES, replace=False))
    read, rows, embedded = [], [], []
    for chunk, pixels in pixel_chunks(pool, indices=indices):  # only the small copies are kept
        read.append(chunk)
        rows.append(label_issues.features(pixels))
        if net is not None:
            embedded.append(embeddings.features(pixels, net))
    usable = np.concatenate(read) if read else np.empty(0, np.int64)
    x = np.concatenate(rows) if rows else np.empty((0, label_issues.SIDE**2), np.float32)
    learn = np.concatenate(embedded) if embedded else x
    by_kind = (lambda kind: lambda file: kept(kind, file)) if kept else (lambda kind: None)
    return {
        "label_issues": label_issues.report(
            pool, usable, learn, by_kind("label_issues"), embedded=net is not None
        ),
        "outliers": outliers.report(pool, usable, x, by_kind("outliers")),
    }


def training_findings(
    pool: Pool, config: Any, groups: list[np.ndarray], train: np.ndarray, test: np.ndarray
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """What `load_data` adds to the data report after the split: (the near-duplicate report,
    or None for a source without cached pixels; the per-image checks of the training split as
    `data.audit` asks), leaving out what the dataset's review keeps (`review.kept_in`)."""
    cfg = config.data
    kept = review.kept_in(cfg.path if cfg.source == "folder" else None)
    near = near_duplicates.report(pool, train, test, groups, kept) if pool.store else None
    return near, check(pool, train, kept, config.seed, cfg.audit)


def describe(report: dict[str, Any], prefix: str) -> str:
    """What the per-image checks found in a data report (its `label_issues` and `outliers`),
    as lines each starting with `prefix`; "" when they found nothing or did not run (the model
    card and the run's start-up lines)."""
    text = ""
    issues = report.get("label_issues") or {}
    if issues.get("flagged"):
        text += (
            f"{prefix}Likely label errors: {issues['flagged']} training image(s) whose label "
            "disagrees with what the rest of the data says (not acted on: see the Data page's "
            "review or imgclf-audit)"
        )
    odd = report.get("outliers") or {}
    if odd.get("flagged"):
        blank = f", {odd['near_constant']} of them near-blank" if odd.get("near_constant") else ""
        text += f"{prefix}Outliers: {odd['flagged']} training image(s) unlike their class{blank}"
    return text
