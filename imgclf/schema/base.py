"""What every section of the schema shares: the base section, the bounded number types, and the
lists of choices (sources, activations, initialisers, optimisers)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

SOURCES = (
    "digits",
    "mnist5k",
    "multimnist",
    "fashion_mnist",
    "folder",
    "csv",
    "keras:mnist",
    "keras:fashion_mnist",
    "keras:cifar10",
    "keras:cifar100",
)
# Sources that ship their own train/test split (data.split: auto uses it).
# (folder and csv: when laid out as train/val/test folders, or with a `split` column)
PREDEFINED_SPLIT_SOURCES = tuple(
    s for s in SOURCES if s in ("fashion_mnist", "folder", "csv") or ":" in s
)
ACTIVATIONS = (
    "relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "swish", "tanh", "sigmoid", "abs",
    "maxout",
)  # fmt: skip
INITIALIZERS = (
    "zeros", "constant", "normal_small", "normal_large",
    "glorot_uniform", "glorot_normal", "he_normal", "he_uniform",
)  # fmt: skip
OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad", "adadelta")

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
# Upper bounds where a typo (2^70 epochs, a 100,000-pixel side, a billion units) would pass
# validation and die at run time, hours in or at once with an allocation failure.
MAX_EPOCHS = 100_000
Epochs = Annotated[int, Field(gt=0, le=MAX_EPOCHS)]
Side = Annotated[int, Field(gt=0, le=4096)]  # pixels: a 4096×4096 input is 16.8 MP
Width = Annotated[int, Field(gt=0, le=65_536)]  # units of a dense layer, filters of a conv


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
