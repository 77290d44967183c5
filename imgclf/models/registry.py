"""One registry of models: `register` a builder by name, `build_model` by name, `available_models`.

Builders import Keras inside their body, so listing or validating model names stays cheap
(config validation and `--help` never import TensorFlow).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf.errors import ConfigError

if TYPE_CHECKING:
    import keras
    import numpy as np

    from imgclf.config import Config

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


def register_custom_layers() -> None:
    """Register imgclf's custom layers (Abs, Maxout, BackbonePreprocess) with Keras' serialisation.

    Call it before `keras.saving.load_model` of a model built here: safe-mode loading only finds
    registered classes, and registering imports Keras (so it is not done when this module is
    imported: listing models must stay TensorFlow-free). `build_model` calls it too.
    """
    importlib.import_module("imgclf.models.layers")


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
        from imgclf.models.reuse import build_from_run

        # A run directory: its trained backbone under a new head, whatever the family.
        return build_from_run(config, num_classes)
    return _REGISTRY[name](config, num_classes, train_images)


def load_run_model(run_dir: str | Path) -> keras.Model:
    """The trained model of a run directory: model.keras checked against the run's
    manifest.json (a modified file is refused), then loaded in Keras' safe mode with imgclf's
    custom layers registered. A model holding a Lambda layer (arbitrary Python code) is refused
    with a UserError; imgclf itself never writes one."""
    import keras

    from imgclf import runs
    from imgclf.errors import UserError

    path = Path(run_dir) / runs.MODEL
    runs.verify_manifest(run_dir, runs.MODEL)
    register_custom_layers()
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:
        if "Lambda" in str(exc) or "lambda" in str(exc):
            raise UserError(
                f"{path} contains a Lambda layer (arbitrary Python code), which imgclf refuses "
                "to load: models are loaded in Keras' safe mode. Rebuild it with registered "
                "layers"
            ) from None
        raise
