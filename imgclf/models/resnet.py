"""`resnet`: a residual network from scratch (He et al., 2016, basic blocks), sized by the config.

    pixels -> preprocessing -> stem conv3×3 (filters[0]) -> BN -> act
           -> one stage per entry of model.filters, each model.blocks_per_stage basic blocks;
              the first block of every stage after the first halves H and W (stride 2)
           -> global average pooling -> dense head (model.hidden, may be empty) -> softmax

A basic block: conv3×3 -> BN -> act -> conv3×3 -> BN -> (+ shortcut) -> act. The shortcut is the
block input, or a projection (conv1×1 with the block's stride -> BN) where the shape changes.
`model.skip_connections: false` builds the same blocks without the add and without projections
(a plain deep convnet to compare against). kernel_size, strides, padding, pooling and
convs_per_block are cnn knobs and are not used here (3×3 'same' convs, stride-2 downsampling).

Maxout: the post-add activation would need conv2 + shortcut to have filters × pieces channels.
Adding the same shortcut to every piece gives max_k(piece_k + s) = max_k(piece_k) + s, so the
block applies Maxout to conv2's pieces before the add (`..._conv2_act`) and needs no activation
after it; with any other activation the activation follows the add (`..._out_act`).

Layer names: stem, stem_bn, stem_act; stage{s}_block{b}_conv1 / _conv1_bn / _conv1_act /
_conv2 / _conv2_bn / _proj / _proj_bn / _add / _out_act; stage{s}_dropout (model.hidden_dropout,
after each stage); gap; fc{k}...; head_dropout; probabilities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imgclf.infra.errors import ConfigError
from imgclf.models.registry import register

if TYPE_CHECKING:
    import keras
    import numpy as np

    from imgclf.schema import Config


def _check_size(config: Config) -> None:
    """Each stride-2 stage halves the map; the map it halves must be at least 2×2."""
    downsamplings = len(config.model.filters) - 1
    need = 2**downsamplings
    height, width = config.data.image_size
    if min(height, width) < need:
        raise ConfigError(
            f"model.filters: data.image_size {[height, width]} is too small for "
            f"{len(config.model.filters)} resnet stages (model.filters "
            f"{list(config.model.filters)}: {downsamplings} stride-2 downsamplings need at least "
            f"{need}×{need} pixels); use fewer model.filters entries or a larger data.image_size"
        )


@register("resnet")
def build_resnet(config: Config, num_classes: int, train_images: np.ndarray | None) -> keras.Model:
    """A ResNet with len(model.filters) stages of model.blocks_per_stage basic blocks."""
    import keras
    from keras import layers

    from imgclf.models.blocks import (
        activation,
        batch_norm,
        conv,
        conv_bn_act,
        dense_stack,
        hidden_dropout,
        pixel_input,
        softmax_head,
        width,
    )

    cfg = config.model
    _check_size(config)
    maxout = cfg.activation == "maxout"
    inputs, x = pixel_input(config, train_images)
    x = conv_bn_act(x, cfg, cfg.filters[0], "stem")  # [N, H, W, filters[0]]
    for s, filters in enumerate(cfg.filters, start=1):
        for b in range(1, cfg.blocks_per_stage + 1):
            name = f"stage{s}_block{b}"
            strides = 2 if s > 1 and b == 1 else 1
            shortcut = x
            y = conv_bn_act(x, cfg, filters, f"{name}_conv1", strides=strides)
            # [N, H/strides, W/strides, filters]; maxout: filters × pieces before its max
            y = conv(cfg, width(cfg, filters) if maxout else filters, f"{name}_conv2")(y)
            y = batch_norm(cfg, y, f"{name}_conv2")
            if maxout:
                y = activation(cfg, f"{name}_conv2_act", ndim=4)(y)
            if cfg.skip_connections:
                if strides != 1 or shortcut.shape[-1] != filters:
                    if strides != 1:
                        # A 1×1 conv with stride 2 is a subsampling then a 1×1 conv. Done in
                        # that order on purpose: TensorFlow 2.21's oneDNN kernel for the strided
                        # 1×1 conv's weight gradient corrupts memory (the process aborts) with
                        # < 16 input channels and some batch sizes (e.g. 4 channels, batch 5).
                        shortcut = layers.MaxPooling2D(
                            pool_size=1, strides=strides, name=f"{name}_proj_subsample"
                        )(shortcut)
                    shortcut = conv(cfg, filters, f"{name}_proj", kernel_size=1)(shortcut)
                    shortcut = batch_norm(cfg, shortcut, f"{name}_proj")
                y = layers.Add(name=f"{name}_add")([y, shortcut])
            if not maxout:
                y = activation(cfg, f"{name}_out_act", ndim=4)(y)
            x = y
        x = hidden_dropout(x, cfg, f"stage{s}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)  # [N, filters[-1]]
    x = dense_stack(x, cfg, prefix="fc")
    outputs = softmax_head(x, cfg, num_classes)
    return keras.Model(inputs, outputs, name="resnet")
