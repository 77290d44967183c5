"""`cnn`: a LeNet/VGG-style convolutional network: conv blocks, then a dense head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imgclf.infra.errors import ConfigError
from imgclf.models.registry import register

if TYPE_CHECKING:
    import keras
    import numpy as np

    from imgclf.schema import Config


@register("cnn")
def build_cnn(config: Config, num_classes: int, train_images: np.ndarray | None) -> keras.Model:
    """pixels -> preprocessing -> [(conv -> BN -> act) × n -> pool -> dropout] per block ->
    flatten -> dense head (fc1, fc2, ...) -> softmax.

    Layers: conv{i}_{j} (conv{i} when convs_per_block is 1) with _bn and _act, conv{i}_pool,
    conv{i}_dropout (model.hidden_dropout), flatten, fc{k}..., head_dropout, probabilities.
    """
    import keras
    from keras import layers

    from imgclf.models.blocks import (
        conv_bn_act,
        dense_stack,
        hidden_dropout,
        pixel_input,
        softmax_head,
    )

    cfg = config.model
    inputs, x = pixel_input(config, train_images)
    for i, filters in enumerate(cfg.filters, start=1):
        for j in range(1, cfg.convs_per_block + 1):
            name = f"conv{i}" if cfg.convs_per_block == 1 else f"conv{i}_{j}"
            strides = cfg.strides if j == 1 else 1
            x = conv_bn_act(
                x,
                cfg,
                filters,
                name,
                kernel_size=cfg.kernel_size,
                strides=strides,
                padding=cfg.padding,
            )
        if cfg.pooling != "none":
            if min(x.shape[1], x.shape[2]) < 2:
                raise ConfigError(
                    f"model.filters: data.image_size {list(config.data.image_size)} is too small "
                    f"for {len(cfg.filters)} pooled conv blocks (feature map {x.shape[1]}×"
                    f"{x.shape[2]} at block {i}); use fewer filters, model.pooling=none or a "
                    f"larger image_size"
                )
            pool = layers.MaxPooling2D if cfg.pooling == "max" else layers.AveragePooling2D
            x = pool(2, name=f"conv{i}_pool")(x)
        if min(x.shape[1], x.shape[2]) < 1:
            raise ConfigError(
                f"model: data.image_size {list(config.data.image_size)} shrinks to nothing at "
                f"conv block {i}; use padding=same, fewer filters or a larger image_size"
            )
        x = hidden_dropout(x, cfg, f"conv{i}")
    x = layers.Flatten(name="flatten")(x)
    x = dense_stack(x, cfg, prefix="fc")
    outputs = softmax_head(x, cfg, num_classes)
    return keras.Model(inputs, outputs, name="cnn")
