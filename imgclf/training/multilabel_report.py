"""What a `task: multilabel` run says about itself: the lines it prints at its end and its model
card (`imgclf.training.multilabel` writes both)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgclf.data import Splits
    from imgclf.schema import Config


def summary_line(metrics: dict[str, Any]) -> str:
    """The test figures in one line, then the calibration and OOD line when there is one."""
    m = metrics["multilabel"]
    line = (
        f"test: mAP {m['map_macro']:.4f} (micro {m['map_micro']:.4f}), subset accuracy "
        f"{m['at_thresholds']['subset_accuracy']:.4f}, Hamming loss "
        f"{m['at_thresholds']['hamming_loss']:.4f} at per-label thresholds "
        f"({m['at_0.5']['subset_accuracy']:.4f} / {m['at_0.5']['hamming_loss']:.4f} at 0.5; "
        f"{m['n']} images)"
    )
    from imgclf.training.finish import confidence_summary

    confidence = confidence_summary(metrics)  # the calibration and OOD line, as single-label
    return line + ("\n" + confidence if confidence else "")


def card(config: Config, splits: Splits, metrics: dict[str, Any]) -> str:
    m = metrics["multilabel"]
    rows = "\n".join(
        f"| {name} | {v['threshold']:.3f} | {v['precision']:.3f} | {v['recall']:.3f} | "
        f"{v['f1']:.3f} | {v['ap'] if v['ap'] is None else round(v['ap'], 3)} | {v['support']} |"
        for name, v in m["per_label"].items()
    )
    return f"""# Model card: {config.name}

A multi-label classifier (`task: multilabel`): `{config.model.name}` on `{config.data.source}`,
{len(splits.class_names)} labels, independent sigmoid outputs trained with binary cross-entropy.
Written {time.strftime("%Y-%m-%d %H:%M")}.

## How it decides
Each label has its own threshold, chosen on the validation split to maximise that label's F1;
an image gets every label whose probability reaches its threshold (possibly none, possibly
all). {_card_confidence(metrics)}

## Test figures ({m["n"]} images)
{summary_line(metrics)}

| label | threshold | precision | recall | F1 | AP | support |
|---|---|---|---|---|---|---|
{rows}
"""


def _card_confidence(metrics: dict[str, Any]) -> str:
    cal, ood = metrics.get("calibration") or {}, metrics.get("ood") or {}
    if "after" in cal:
        text = (
            "The probabilities are calibrated: each label's logit is divided by its own "
            "temperature, fitted on the validation split (test ECE over every image-label pair "
            f"{cal['before']['ece']:.4f} before, {cal['after']['ece']:.4f} after); the "
            "thresholds were chosen on the calibrated probabilities."
        )
    else:
        text = "The probabilities are not calibrated (train.calibrate, or too few images)."
    if "threshold" in ood:
        text += (
            " An image whose features lie far from every label combination seen in training "
            f"(Mahalanobis score above {ood['threshold']:.2f}) is flagged out-of-distribution: "
            "its labels should not be trusted."
        )
    return text
