"""Pretrained backbones from `keras.applications`: ResNet 50/101/152 (v1 and v2), MobileNetV2
and EfficientNetB0, each under a new softmax head.

    pixels -> BackbonePreprocess (grey -> RGB, the family's preprocess_input) -> backbone
    (the keras.applications model, include_top=False, a nested model named "backbone")
    -> avg_pool -> features -> [head_dropout] -> probabilities

The backbone's weights come from `model.weights`: `imagenet` (Keras downloads and caches them),
null (random: the whole net trains from scratch) or a local weights file (`.h5` /
`.weights.h5`, e.g. the `*_notop.h5` file Keras caches in ~/.keras/models/), for machines without
internet. With trained weights the backbone is called with training=False, so its batch-norm
layers stay in inference mode even when fine-tuning unfreezes them (`imgclf.training.transfer`).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from imgclf.infra.errors import ConfigError
from imgclf.models import names
from imgclf.models.registry import register

if TYPE_CHECKING:
    import keras
    import numpy as np

    from imgclf.schema import Config

# registry name -> (keras.applications constructor, preprocess_input mode)
APPLICATIONS: dict[str, tuple[str, str]] = {
    "resnet50": ("ResNet50", "caffe"),
    "resnet101": ("ResNet101", "caffe"),
    "resnet152": ("ResNet152", "caffe"),
    "resnet50v2": ("ResNet50V2", "tf"),
    "resnet101v2": ("ResNet101V2", "tf"),
    "resnet152v2": ("ResNet152V2", "tf"),
    "mobilenetv2": ("MobileNetV2", "tf"),
    "efficientnetb0": ("EfficientNetB0", "none"),
}
MIN_SIZE = 32  # keras.applications refuses smaller inputs with include_top=False


def make_backbone(name: str, config: Config) -> keras.Model:
    """The keras.applications model of `name` without its top, with `model.weights` loaded."""
    import keras

    constructor, _ = APPLICATIONS[name]
    height, width = config.data.image_size
    if min(height, width) < MIN_SIZE:
        raise ConfigError(
            f"data.image_size {[height, width]} is too small for {name}: pretrained backbones "
            f"need at least {MIN_SIZE}×{MIN_SIZE} (e.g. data.image_size=[32,32]; 96 or more "
            "suits ImageNet weights better)"
        )
    weights = config.model.weights
    imagenet = weights is not None and weights.lower() == "imagenet"
    try:
        backbone = getattr(keras.applications, constructor)(
            include_top=False,
            weights="imagenet" if imagenet else None,
            input_shape=(height, width, 3),
            pooling=None,
            name=names.BACKBONE,
        )
    except Exception as exc:  # the download: URLError, HTTP errors, a truncated cache file
        if not imagenet:
            raise
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        raise ConfigError(
            f"model.weights=imagenet: could not get the {name} ImageNet weights ({reason}); "
            f"without internet, copy the {name} *_notop.h5 file from ~/.keras/models/ on a "
            "machine that has it and set model.weights to its path"
        ) from exc
    if weights is not None and not imagenet:
        load_backbone_weights(backbone, Path(weights).expanduser(), name)
    return backbone


def load_backbone_weights(backbone: keras.Model, path: Path, name: str) -> None:
    """Load a local weights file into `backbone`, or raise a ConfigError that names the file
    and the architecture it had to fit."""
    if not path.is_file():
        raise ConfigError(
            f"model.weights: {path} does not exist; expected a {name} weights file without the "
            f"top (include_top=False), e.g. the *_notop.h5 file Keras keeps in ~/.keras/models/"
        )
    try:
        # Keras only *warns* when parts of a .weights.h5 file do not match and leaves those
        # layers random: a silently half-loaded backbone. Treat any such warning as a mismatch.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            backbone.load_weights(str(path))
    except Exception as exc:  # ValueError, KeyError, h5py's OSError, or a warning turned error
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model.weights: {path} does not fit {name} (include_top=False, "
            f"{len(backbone.weights)} weight tensors): {reason[:200]}"
        ) from exc


def assemble(
    config: Config, num_classes: int, backbone: keras.Model, mode: str, name: str
) -> keras.Model:
    """A backbone under imgclf's head: pixels [N, H, W, data.channels] (0..255) ->
    BackbonePreprocess(mode) -> backbone -> avg_pool -> features -> [head_dropout] ->
    probabilities [N, num_classes]. Shared by every pretrainable family."""
    import keras
    from keras import layers

    from imgclf.models.blocks import softmax_head
    from imgclf.models.layers import BackbonePreprocess

    height, width = config.data.image_size
    inputs = keras.Input(shape=(height, width, config.data.channels), name=names.INPUT)
    x = BackbonePreprocess(mode, name=names.PREPROCESS)(inputs)
    # Pretrained: training=False keeps batch-norm in inference mode in every phase (its moving
    # statistics describe the pretraining data). From scratch, batch-norm must learn them.
    x = backbone(x, training=False) if config.model.pretrained else backbone(x)
    x = layers.GlobalAveragePooling2D(name=names.AVG_POOL)(x)
    x = layers.Identity(name=names.FEATURES)(x)
    outputs = softmax_head(x, config.model, num_classes)
    return keras.Model(inputs, outputs, name=name)


def _build(name: str, config: Config, num_classes: int, train_images: np.ndarray | None):
    return assemble(config, num_classes, make_backbone(name, config), APPLICATIONS[name][1], name)


for _name in APPLICATIONS:
    register(_name, pretrainable=True)(functools.partial(_build, _name))
