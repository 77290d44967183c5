"""Custom layers, as registered serialisable classes (never Lambda layers, which safe-mode loading
refuses). Loading a saved model that holds them needs this module imported first:
`imgclf.models.registry.register_custom_layers()` does that."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="imgclf")
class Abs(keras.layers.Layer):
    """Absolute-value rectification: |x|, element-wise (Jarrett et al., 2009)."""

    def call(self, inputs):
        return ops.abs(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="imgclf")
class Maxout(keras.layers.Layer):
    """Maxout (Goodfellow et al., 2013): the max over `pieces` linear pieces per unit.

    Takes the preceding linear layer's output, [..., units * pieces] (dense [N, D] or conv maps
    [N, H, W, C]), groups consecutive channels as [..., units, pieces] and returns
    [..., units]: unit u is the max of channels u*pieces .. u*pieces + pieces - 1.
    """

    def __init__(self, pieces: int, **kwargs):
        super().__init__(**kwargs)
        if int(pieces) < 1:
            raise ValueError(f"Maxout needs pieces >= 1, got {pieces}")
        self.pieces = int(pieces)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.pieces:
            raise ValueError(
                f"Maxout({self.pieces}) needs a last axis divisible by {self.pieces} "
                f"(the preceding layer must have units * pieces outputs), got {channels}"
            )
        self.built = True

    def call(self, inputs):
        shape = ops.shape(inputs)  # dynamic dims (the batch) stay symbolic
        units = inputs.shape[-1] // self.pieces
        pieces = ops.reshape(inputs, (*shape[:-1], units, self.pieces))
        return ops.max(pieces, axis=-1)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        return (*input_shape[:-1], None if channels is None else channels // self.pieces)

    def get_config(self):
        return {**super().get_config(), "pieces": self.pieces}


# The per-channel ImageNet means (B, G, R) that Keras' "caffe" preprocess_input subtracts.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
MODES = ("caffe", "tf", "efficientnet_lite", "none")


@keras.saving.register_keras_serializable(package="imgclf")
class BackbonePreprocess(keras.layers.Layer):
    """Raw pixels 0..255 → what a pretrained keras.applications backbone expects.

    Grey images (1 channel) are repeated to RGB first. Then `mode`, as Keras'
    `preprocess_input` of the family does it: "caffe" (ResNet v1: RGB → BGR, minus the ImageNet
    channel means, no scaling), "tf" (ResNet v2, MobileNetV2: scaled to -1..1),
    "efficientnet_lite" ((x − 127) / 128, what the Lite checkpoints were trained on) or "none"
    (EfficientNet normalises inside its own graph). A layer, not a Lambda, so safe-mode loading
    and every export keep it.
    """

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"BackbonePreprocess mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if x.shape[-1] == 1:
            x = ops.concatenate([x, x, x], axis=-1)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype=x.dtype)
        elif self.mode == "tf":
            x = x / 127.5 - 1.0
        elif self.mode == "efficientnet_lite":
            x = (x - 127.0) / 128.0
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class MahalanobisScore(keras.layers.Layer):
    """The out-of-distribution score of `confidence.ood`: features [N, ...] (flattened to [N, D]) ->
    float32 [N], the Mahalanobis distance to the nearest class mean (Lee et al., 2018).

    `whiten` L [D, D] (L L^T = the inverse shared covariance), `shift` [D] and `centres`
    [C, D] (the class means times L, minus shift; see `ood.OODStats`) are fixed, non-trainable
    weights, so the exports carry them as constants. Never saved in model.keras (the run keeps
    them in ood.npz), hence not registered.
    """

    def __init__(self, whiten, shift, centres, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self._whiten = np.asarray(whiten, np.float32)
        self._shift = np.asarray(shift, np.float32)
        self._centres = np.asarray(centres, np.float32)

    def build(self, input_shape):
        d, c = self._whiten.shape[0], self._centres.shape[0]
        self.whiten = self.add_weight(
            shape=(d, d), initializer=keras.initializers.Constant(self._whiten),
            trainable=False, name="whiten",
        )  # fmt: skip
        self.shift = self.add_weight(
            shape=(d,), initializer=keras.initializers.Constant(self._shift),
            trainable=False, name="shift",
        )  # fmt: skip
        self.centres = self.add_weight(
            shape=(c, d), initializer=keras.initializers.Constant(self._centres),
            trainable=False, name="centres",
        )  # fmt: skip
        self.built = True

    def call(self, inputs):
        f = ops.reshape(ops.cast(inputs, "float32"), (ops.shape(inputs)[0], -1))
        z = ops.matmul(f, self.whiten) - self.shift[None, :]
        d2 = (
            ops.sum(z * z, axis=1, keepdims=True)
            - 2.0 * ops.matmul(z, ops.transpose(self.centres))
            + ops.sum(self.centres * self.centres, axis=1)[None, :]
        )
        return ops.sqrt(ops.maximum(ops.min(d2, axis=1), 0.0))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)
