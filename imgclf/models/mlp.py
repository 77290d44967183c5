"""`mlp`: a plain dense network on flattened pixels (the course's starting point)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imgclf.models.registry import register

if TYPE_CHECKING:
    import keras
    import numpy as np

    from imgclf.schema import Config


@register("mlp")
def build_mlp(config: Config, num_classes: int, train_images: np.ndarray | None) -> keras.Model:
    """pixels -> preprocessing -> flatten -> hidden dense layers (dense1, dense2, ...) -> head."""
    import keras

    from imgclf.models.blocks import dense_stack, pixel_input, softmax_head

    inputs, x = pixel_input(config, train_images)
    x = keras.layers.Flatten(name="flatten")(x)
    x = dense_stack(x, config.model, prefix="dense")
    outputs = softmax_head(x, config.model, num_classes)
    return keras.Model(inputs, outputs, name="mlp")
