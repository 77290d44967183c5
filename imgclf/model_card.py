"""`model_card.md`: what a run's model is, what it was trained on and how, how well it did on
held-out data, how it was exported, and what it should not be used for; written by `train`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgclf.config import Config
    from imgclf.data import Splits


def _transfer_lines(config: Config, metrics: dict[str, Any]) -> str:
    """The model card's lines on where the weights came from and what each phase did."""
    if not config.model.pretrained:
        return ""
    lines = [f"\n- Started from trained weights: `{config.model.weights}`"]
    for p in metrics.get("phases", []):
        what = {"head": "backbone frozen, new head trained", "fine_tune": "top of the backbone "
                f"unfrozen ({len(p.get('unfrozen_layers', []))} layers with weights; batch-norm "
                "stays frozen)"}.get(p["phase"], "")  # fmt: skip
        kept = "" if p.get("kept", True) else "; did not beat the head phase, so not kept"
        lines.append(
            f"\n- Phase `{p['phase']}`: {what}; {p['epochs_run']} epoch(s) at learning rate "
            f"{p['learning_rate']:g}, {p['trainable_params']:,} trainable parameters"
            + (", trained on cached backbone features" if p.get("cached_features") else "")
            + kept
        )
    return "".join(lines)


def model_card(
    config: Config,
    splits: Splits,
    metrics: dict[str, Any],
    model: Any,
    parity: dict[str, Any] | None,
    backend: str = "tensorflow",
) -> str:
    """The run's model_card.md: model, data, recipe (with transfer phases), test results,
    export parity and the limits of intended use, from what the run measured."""
    test = metrics["test"]
    rows = "\n".join(
        f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for name, m in metrics["per_class"].items()
    )
    counts = splits.report["totals"]
    transfer = _transfer_lines(config, metrics)
    augment = "on" if config.augment.enabled else "off"
    epochs = "" if config.model.pretrained else f"up to {config.train.epochs} epochs, "
    height, width = config.data.image_size
    source = config.data.source + (f" ({config.data.path})" if config.data.path else "")
    subset = ""
    if config.data.classes:
        subset += f"\n- Classes kept from the source: {', '.join(config.data.classes)}"
    if config.data.max_per_class:
        subset += (
            f"\n- Training images capped at {config.data.max_per_class} per class "
            "(validation and test are not capped)"
        )
    if parity is None:
        export = (
            f"- SavedModel export skipped: it needs the TensorFlow backend and this run trained "
            f"on `{backend}`.\n  Run `imgclf-export <this run directory>` with "
            f"KERAS_BACKEND=tensorflow to write\n  `saved_model/` from `model.keras`."
        )
    else:
        export = (
            f"- `saved_model/` (`serving_default`: `pixels` float32 [N, {height}, {width}, "
            f"{config.data.channels}]\n  → `probabilities`, `label`); max |Δp| vs `model.keras` = "
            f"{parity['max_abs_diff']:.2e} on\n  {parity['n_images']} test images, top-1 "
            f"agreement {parity['top1_agreement']:.2%}"
        )
        if "serve_bytes_max_abs_diff" in parity:
            export += (
                "\n- `serve_bytes` (`images`: encoded JPEG/PNG/GIF/BMP/WebP files, decoded and "
                f"resized in the graph): on the same images as PNG files\n  max |Δp| "
                f"{parity['serve_bytes_max_abs_diff']:.2e}, top-1 agreement "
                f"{parity['serve_bytes_top1_agreement']:.2%}"
            )
    return f"""# Model card: {config.name}

## Model
- Family: `{config.model.name}`, {model.count_params():,} parameters
- Input: raw pixels 0..255, {height}×{width}, {config.data.channels} channel(s); preprocessing
  (`{config.data.normalize}`) is inside the model
- Output: softmax over {len(splits.class_names)} classes: {", ".join(splits.class_names)}

## Training data
- Source: {source}
- Split (stratified, seed {config.seed}): {counts["train"]} train, {counts["val"]} validation,
  {counts["test"]} test; {len(splits.report["skipped"])} unreadable file(s) skipped{subset}

## Recipe
- Keras backend `{backend}`
- Optimizer `{config.train.optimizer}`, learning rate {config.train.learning_rate}, batch size
  {config.train.batch_size}, {epochs}early stopping on
  `{config.train.early_stopping.monitor}` (patience {config.train.early_stopping.patience})
- Augmentation: {augment}; the full recipe is in `config.yaml`{transfer}

## Test results (held-out, evaluated once with the best weights)
- Accuracy {test["accuracy"]:.4f}, top-{test["k"]} accuracy {test["top_k_accuracy"]:.4f},
  cross-entropy {test["loss"]:.4f} on {test["n"]} images

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

## Export
{export}

## Intended use and limits
- Classifies images that resemble the training data into exactly these classes. Any other
  input still receives one of these labels: an image of something else gives a meaningless answer.
- Images are stretched to {height}×{width} without keeping the aspect ratio.
- Figures come from {counts["test"]} test images of the same source; accuracy on other data
  (other cameras, scans, handwriting, lighting) may be lower.
"""
