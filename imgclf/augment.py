"""Data augmentation built from `config.augment`: Keras 3 random layers applied to training batches.

Augmentation runs in the tf.data pipeline of the training split only, so evaluation, export and
prediction never see it and the exported model contains none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

    from imgclf.config import AugmentConfig


def build_augmenter(cfg: AugmentConfig, seed: int = 0) -> keras.Sequential | None:
    """A Sequential of random layers on raw 0..255 pixels, or None when augmentation is off."""
    if not cfg.enabled:
        return None
    from keras import layers

    steps: list[layers.Layer] = []
    if cfg.flip != "none":
        steps.append(layers.RandomFlip(cfg.flip, seed=seed))
    if cfg.rotation > 0:
        steps.append(layers.RandomRotation(cfg.rotation, fill_mode="constant", seed=seed + 1))
    if cfg.zoom > 0:
        steps.append(layers.RandomZoom(cfg.zoom, fill_mode="constant", seed=seed + 2))
    if cfg.translate > 0:
        steps.append(
            layers.RandomTranslation(
                cfg.translate, cfg.translate, fill_mode="constant", seed=seed + 3
            )
        )
    if cfg.contrast > 0:
        steps.append(layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 4))
    if cfg.brightness > 0:
        steps.append(layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 5))
    from keras import Sequential

    return Sequential(steps, name="augment")
