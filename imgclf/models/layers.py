"""Custom layers, as registered serialisable classes (never Lambda layers, which safe-mode loading
refuses). Loading a saved model that holds them needs this module imported first:
`imgclf.models.registry.register_custom_layers()` does that."""

from __future__ import annotations

import keras
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
