"""Metrics computed from their definitions on hand-made probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from imgclf.evaluate import classification_metrics


def test_metrics_follow_their_definitions():
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # true 0, predicted 0
            [0.1, 0.6, 0.3],  # true 1, predicted 1
            [0.5, 0.1, 0.4],  # true 2, predicted 0; true class ranked 2nd
            [0.2, 0.5, 0.3],  # true 2, predicted 1; true class ranked 2nd
        ]
    )
    labels = np.array([0, 1, 2, 2])
    m = classification_metrics(probs, labels, ["a", "b", "c"], k=2)
    assert m["test"]["accuracy"] == pytest.approx(0.5)
    assert m["test"]["top_k_accuracy"] == pytest.approx(1.0)
    expected_loss = -np.mean(np.log([0.7, 0.6, 0.4, 0.3]))
    assert m["test"]["loss"] == pytest.approx(expected_loss)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]
    assert m["per_class"]["a"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["recall"] == 0.0 and m["per_class"]["c"]["support"] == 2
    top1 = classification_metrics(probs, labels, ["a", "b", "c"], k=1)
    assert top1["test"]["top_k_accuracy"] == top1["test"]["accuracy"]
    capped = classification_metrics(probs, labels, ["a", "b", "c"], k=10)
    assert capped["test"]["k"] == 3
