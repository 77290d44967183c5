"""Pieces every model family shares: the raw-pixel input with preprocessing inside, the hidden
Dense/Conv layers (initializer, regulariser, batch-norm, activation), and the softmax head.
Keeping them here makes all families honour the same contract and the same layer names:

    <name>            the Dense/Conv layer (dense1, fc1, conv1_2, stage2_block1_conv1, ...)
    <name>_bn         its batch-norm (model.batch_norm)
    <name>_act        its activation; every activation layer's name ends with `_act`
    <name>_dropout    hidden dropout (model.hidden_dropout)
    head_dropout      dropout right before the output layer (model.dropout)
    probabilities     the output Dense + softmax
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import layers

from imgclf.data.pool import batches
from imgclf.models import names
from imgclf.models.layers import Abs, Maxout

if TYPE_CHECKING:
    from imgclf.schema import Config, ModelConfig


def pixel_input(config: Config, train_images: np.ndarray | None) -> tuple[keras.KerasTensor, ...]:
    """(input, preprocessed): raw pixels 0..255 in, scaled or z-scored pixels out."""
    height, width = config.data.image_size
    inputs = keras.Input(shape=(height, width, config.data.channels), name=names.INPUT)
    if config.data.normalize == "standardize":
        if train_images is None:
            raise ValueError("normalize='standardize' needs the training images to adapt on")
        if hasattr(train_images, "read"):  # streamed: per-channel statistics batch by batch
            mean, variance = channel_statistics(train_images)
            norm = layers.Normalization(axis=-1, mean=mean, variance=variance, name="standardize")
        else:
            norm = layers.Normalization(axis=-1, name="standardize")
            norm.adapt(np.asarray(train_images, dtype="float32"))
        x = norm(inputs)
    else:
        x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    return inputs, x


def channel_statistics(images: Any) -> tuple[list[float], list[float]]:
    """Per-channel mean and variance of uint8 images (an array or a streamed ImageView), read
    batch by batch in float64: what Normalization.adapt computes, without holding the set."""

    total = sq = None
    count = 0
    for pixels, _ in batches(images):
        flat = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64)
        total = flat.sum(0) if total is None else total + flat.sum(0)
        sq = (flat**2).sum(0) if sq is None else sq + (flat**2).sum(0)
        count += len(flat)
    if not count:
        raise ValueError("normalize='standardize' found no readable training image")
    mean = total / count
    return mean.tolist(), (sq / count - mean**2).tolist()


def regularizer(cfg: ModelConfig) -> keras.regularizers.Regularizer | None:
    """L1/L2 on kernels only (biases, batch-norm and PReLU parameters are not decayed)."""
    if cfg.l1 == 0 and cfg.l2 == 0:
        return None
    return keras.regularizers.L1L2(l1=cfg.l1, l2=cfg.l2)


def kernel_initializer(cfg: ModelConfig) -> Any:
    """The initializer of one hidden Dense/Conv kernel (`model.initializer`).

    Call it once per layer: an unseeded Keras initializer *instance* draws the same values every
    time it is called, so sharing one would give every same-shaped layer the same kernel.
    """
    name = cfg.initializer
    if name == "constant":
        return keras.initializers.Constant(cfg.init_constant)
    if name == "normal_small":
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.01)
    if name == "normal_large":
        return keras.initializers.RandomNormal(mean=0.0, stddev=1.0)
    return name  # zeros, glorot_uniform, glorot_normal, he_normal, he_uniform: Keras' own


def width(cfg: ModelConfig, units: int) -> int:
    """Outputs a hidden Dense/Conv must produce for `units` activated units: maxout takes the max
    over `maxout_pieces` linear pieces per unit, so it needs units * pieces of them."""
    return units * cfg.maxout_pieces if cfg.activation == "maxout" else units


def activation(cfg: ModelConfig, name: str, ndim: int = 2) -> layers.Layer:
    """The hidden-unit nonlinearity as a serialisable layer (no Lambda).

    `ndim` is the rank of the tensor it acts on: on 4-D feature maps [N, H, W, C] PReLU learns one
    slope per channel (shared over space); on [N, D] one per unit. Name it `<layer>_act`.
    """
    act = cfg.activation
    if act == "relu":
        return layers.ReLU(name=name)
    if act == "leaky_relu":
        return layers.LeakyReLU(negative_slope=cfg.leaky_slope, name=name)
    if act == "prelu":
        shared_axes = list(range(1, ndim - 1)) or None  # [1, 2] on conv maps
        return layers.PReLU(shared_axes=shared_axes, name=name)
    if act == "abs":
        return Abs(name=name)
    if act == "maxout":
        return Maxout(cfg.maxout_pieces, name=name)
    return layers.Activation(act, name=name)  # elu, selu, gelu, swish, tanh, sigmoid


def dense(cfg: ModelConfig, units: int, name: str) -> layers.Dense:
    """A hidden Dense layer with `units` outputs (use `width` for activated units)."""
    return layers.Dense(
        units,
        use_bias=not cfg.batch_norm,  # batch-norm's beta replaces the bias
        kernel_initializer=kernel_initializer(cfg),
        kernel_regularizer=regularizer(cfg),
        name=name,
    )


def conv(
    cfg: ModelConfig,
    filters: int,
    name: str,
    kernel_size: int = 3,
    strides: int = 1,
    padding: str = "same",
) -> layers.Conv2D:
    """A hidden Conv2D with `filters` output channels (use `width` for activated channels)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=not cfg.batch_norm,  # batch-norm's beta replaces the bias
        kernel_initializer=kernel_initializer(cfg),
        kernel_regularizer=regularizer(cfg),
        name=name,
    )


def batch_norm(cfg: ModelConfig, x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """`<name>_bn` when model.batch_norm, else x unchanged."""
    if not cfg.batch_norm:
        return x
    return layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"{name}_bn")(x)


def conv_bn_act(
    x: keras.KerasTensor, cfg: ModelConfig, filters: int, name: str, **conv_args: Any
) -> keras.KerasTensor:
    """Conv(width) -> [BN] -> activation: [N, H, W, C] -> [N, H', W', filters]. `conv_args`
    are `conv`'s kernel_size, strides and padding."""
    x = conv(cfg, width(cfg, filters), name, **conv_args)(x)
    x = batch_norm(cfg, x, name)
    return activation(cfg, f"{name}_act", ndim=4)(x)


def hidden_dropout(x: keras.KerasTensor, cfg: ModelConfig, name: str) -> keras.KerasTensor:
    """`<name>_dropout` after a hidden layer or conv block when model.hidden_dropout > 0."""
    if cfg.hidden_dropout <= 0:
        return x
    return layers.Dropout(cfg.hidden_dropout, name=f"{name}_dropout")(x)


def dense_stack(x: keras.KerasTensor, cfg: ModelConfig, prefix: str) -> keras.KerasTensor:
    """Hidden layers, one per `cfg.hidden`: Dense -> [BatchNorm] -> activation -> [Dropout]."""
    for i, units in enumerate(cfg.hidden, start=1):
        name = f"{prefix}{i}"
        x = dense(cfg, width(cfg, units), name)(x)
        x = batch_norm(cfg, x, name)
        x = activation(cfg, f"{name}_act", ndim=2)(x)
        x = hidden_dropout(x, cfg, name)
    return x


def softmax_head(x: keras.KerasTensor, cfg: ModelConfig, num_classes: int) -> keras.KerasTensor:
    """[Dropout(model.dropout)] -> Dense(num_classes) + softmax, float32 whatever the precision.

    The output kernel is always glorot_uniform: `model.initializer` is about the hidden layers
    (what zeros, constant or badly scaled weights do to them), and a broken output layer would
    only blur that lesson. Its kernel is regularised like every other kernel; its bias is not.
    """
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name=names.HEAD_DROPOUT)(x)
    return layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer="glorot_uniform",
        kernel_regularizer=regularizer(cfg),
        dtype="float32",
        name=names.PROBABILITIES,
    )(x)
