"""One registry of models: `register` a builder by name, `build_model` by name, `available_models`.

Builders import Keras inside their body, so listing or validating model names stays cheap
(config validation and `--help` never import TensorFlow).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from imgclf.infra.errors import ConfigError
from imgclf.models.reuse import build_from_run
from imgclf.models.saving import register_custom_layers

if TYPE_CHECKING:
    import keras
    import numpy as np

    from imgclf.schema import Config

# Modules whose import registers their builders.
_FAMILY_MODULES = (
    "imgclf.models.mlp",
    "imgclf.models.cnn",
    "imgclf.models.resnet",
    "imgclf.models.backbones",
    "imgclf.models.efficientnet_lite",
)
_REGISTRY: dict[str, Callable[..., Any]] = {}
_PRETRAINABLE: set[str] = set()  # families with published weights (model.weights: imagenet)


def register(
    name: str, *, pretrainable: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make `fn(config, num_classes, train_images)` buildable as `model.name: <name>`.

    `pretrainable` marks a family that accepts `model.weights: imagenet` or a weights file.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        if pretrainable:
            _PRETRAINABLE.add(name)
        return fn

    return wrap


def is_pretrainable(name: str) -> bool:
    """True for families with published weights (the keras.applications backbones)."""
    _load_families()
    return name in _PRETRAINABLE


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


def available_models() -> list[str]:
    """Registered model names, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def build_model(
    config: Config, num_classes: int, train_images: np.ndarray | None = None
) -> keras.Model:
    """Build `config.model.name` for `num_classes` classes.

    The model takes raw pixels (float32 0..255, shape [N, H, W, C] from `config.data`) and returns
    softmax probabilities [N, num_classes]. `train_images` adapts the z-score normalisation when
    `config.data.normalize == "standardize"`. With `model.weights` set to a run directory the
    model is that run's backbone under a new head (see `imgclf.models.reuse`).

    Raises:
        ConfigError: an unknown model name, an input too small for a backbone, weights that
            cannot be found or do not fit (the message names the file and the fix).
        ValueError: fewer than 2 classes.
    """

    _load_families()
    register_custom_layers()
    name = config.model.name
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    weights = config.model.weights
    if weights is not None and weights.lower() != "imagenet" and not weights.endswith(".h5"):
        # A run directory: its trained backbone under a new head, whatever the family.
        model = build_from_run(config, num_classes)
    else:
        model = _REGISTRY[name](config, num_classes, train_images)
    if config.task == "multilabel":
        sigmoid_head(model)
    return model


def sigmoid_head(model: keras.Model) -> keras.Model:
    """`task: multilabel`: the output layer's softmax becomes independent sigmoids, one
    probability per label (each in [0, 1], not summing to 1). Dense runs its `activation`
    at every call and saves it in its config, so the model, model.keras and every export
    answer with sigmoids."""
    import keras

    from imgclf.models.names import PROBABILITIES

    model.get_layer(PROBABILITIES).activation = keras.activations.get("sigmoid")
    return model


def is_multilabel(model: keras.Model) -> bool:
    """True when the output layer is sigmoid (`sigmoid_head`)."""
    from imgclf.models.names import PROBABILITIES

    try:
        layer = model.get_layer(PROBABILITIES)
    except ValueError:
        return False
    return getattr(layer.activation, "__name__", "") == "sigmoid"
