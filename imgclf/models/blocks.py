"""Pieces every model family shares: the raw-pixel input with preprocessing inside, the dense
layers, and the softmax head. Keeping them here makes all families honour the same contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import layers

if TYPE_CHECKING:
    from imgclf.config import Config, ModelConfig


def pixel_input(config: Config, train_images: np.ndarray | None) -> tuple[keras.KerasTensor, ...]:
    """(input, preprocessed): raw pixels 0..255 in, scaled or z-scored pixels out."""
    height, width = config.data.image_size
    inputs = keras.Input(shape=(height, width, config.data.channels), name="pixels")
    if config.data.normalize == "standardize":
        if train_images is None:
            raise ValueError("normalize='standardize' needs the training images to adapt on")
        norm = layers.Normalization(axis=-1, name="standardize")
        norm.adapt(np.asarray(train_images, dtype="float32"))
        x = norm(inputs)
    else:
        x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    return inputs, x


def regularizer(cfg: ModelConfig) -> keras.regularizers.Regularizer | None:
    """L1/L2 on kernels only (biases and batch-norm parameters are not decayed)."""
    if cfg.l1 == 0 and cfg.l2 == 0:
        return None
    return keras.regularizers.L1L2(l1=cfg.l1, l2=cfg.l2)


def activation(cfg: ModelConfig, name: str) -> layers.Layer:
    """The hidden-unit nonlinearity as a layer (serialisable, no Lambda)."""
    if cfg.activation == "relu":
        return layers.ReLU(name=name)
    if cfg.activation == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.2, name=name)
    return layers.Activation(cfg.activation, name=name)


def dense_stack(x: keras.KerasTensor, cfg: ModelConfig, prefix: str) -> keras.KerasTensor:
    """Hidden layers, one per `cfg.hidden`: Dense -> [BatchNorm] -> activation -> [Dropout]."""
    for i, units in enumerate(cfg.hidden, start=1):
        x = layers.Dense(
            units,
            use_bias=not cfg.batch_norm,  # batch-norm's beta replaces the bias
            kernel_initializer=cfg.initializer,
            kernel_regularizer=regularizer(cfg),
            name=f"{prefix}{i}",
        )(x)
        if cfg.batch_norm:
            x = layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"{prefix}{i}_bn")(x)
        x = activation(cfg, f"{prefix}{i}_act")(x)
        if cfg.dropout > 0:
            x = layers.Dropout(cfg.dropout, name=f"{prefix}{i}_dropout")(x)
    return x


def softmax_head(x: keras.KerasTensor, cfg: ModelConfig, num_classes: int) -> keras.KerasTensor:
    """The classifier: Dense(num_classes) + softmax, float32 whatever the compute precision."""
    if not cfg.hidden and cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="head_dropout")(x)
    return layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer="glorot_uniform",
        kernel_regularizer=regularizer(cfg),
        dtype="float32",
        name="probabilities",
    )(x)
