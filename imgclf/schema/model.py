"""The `model` section: which network, and its shape."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from imgclf.schema.base import ACTIVATIONS, INITIALIZERS, Fraction, PositiveInt, Width, _Section


class ModelConfig(_Section):
    """Which architecture (from the registry) and its knobs."""

    name: str = "cnn"
    filters: tuple[Width, ...] = (32, 64)  # cnn: one conv block per entry; resnet: stages
    convs_per_block: PositiveInt = 2  # cnn: conv layers before each pooling (2 = VGG-style)
    blocks_per_stage: PositiveInt = 2  # resnet: residual blocks in each stage
    skip_connections: bool = True  # resnet: false gives the same net without shortcuts
    kernel_size: PositiveInt = 3
    strides: PositiveInt = 1
    padding: Literal["same", "valid"] = "same"
    pooling: Literal["max", "avg", "none"] = "max"  # after each conv block
    hidden: tuple[Width, ...] = (128,)  # dense layers of the head (mlp: the whole net)
    activation: Literal[ACTIVATIONS] = "relu"  # type: ignore[valid-type]
    leaky_slope: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2  # leaky_relu: slope below 0
    maxout_pieces: Annotated[int, Field(ge=2, le=8)] = 2  # maxout: linear pieces per unit
    initializer: Literal[INITIALIZERS] = "he_normal"  # type: ignore[valid-type]
    init_constant: float = 0.05  # initializer=constant: the value of every weight
    batch_norm: bool = True
    # 0.9, not Keras' 0.99: small datasets give too few steps for 0.99 to forget its init.
    bn_momentum: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    dropout: Fraction = 0.25  # before the output layer (the head)
    hidden_dropout: Fraction = 0.0  # after every hidden layer (dense layers, conv blocks)
    l1: Annotated[float, Field(ge=0.0)] = 0.0
    l2: Annotated[float, Field(ge=0.0)] = 1.0e-4
    # Start from trained weights: null (random), imagenet (pretrained backbones only), a local
    # weights file (.h5 / .weights.h5) for the backbone, or a run directory (runs/<run>) whose
    # model's backbone is re-used under a new head. Any of them turns on the `transfer` schedule.
    weights: str | None = None

    @field_validator("weights")
    @classmethod
    def _weights_form(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "null", "none"):
            return None
        return value.strip()

    @property
    def pretrained(self) -> bool:
        """True when training starts from trained weights (the two-phase `transfer` schedule)."""
        return self.weights is not None
