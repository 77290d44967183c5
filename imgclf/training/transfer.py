"""The two-phase transfer schedule: freeze the backbone and train the new head, then unfreeze the
top of the backbone and fine-tune at a lower learning rate.

A transfer model (models/backbones.py, models/reuse.py) has a nested model named `backbone`
called with training=False, then `features` -> [head_dropout] -> probabilities. This module
decides what trains in each phase (`plan_phases`, `freeze_backbone`, `unfreeze_top`), gives
earlier backbone blocks smaller learning rates (`layerwise_rates`, `with_layer_rates`), and
trains the frozen phase on cached backbone features (`fit_head_on_features`), which gives the
same model as training through the frozen backbone at a fraction of the cost.

Batch-norm layers of the backbone never train: their moving statistics describe the data the
backbone was trained on, and updating them from a few small batches wrecks the features.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.data.pipeline import epoch_order_callback
from imgclf.forward import Forward
from imgclf.infra.errors import ConfigError
from imgclf.models.names import BACKBONE, FEATURES, HEAD
from imgclf.training import feature_cache
from imgclf.training.backend import make_training_data
from imgclf.training.distribute import fit_multiworker, worker_share
from imgclf.training.optim import compile_model, steps_per_epoch

if TYPE_CHECKING:
    import keras

    from imgclf.data import Splits
    from imgclf.schema import Config, TrainConfig


@dataclasses.dataclass(frozen=True)
class Phase:
    """One `fit` of the schedule: its name (history.csv's `phase`) and its training recipe."""

    name: str  # "train" (no transfer), "head" or "fine_tune"
    train: TrainConfig  # train.* with this phase's epochs, learning rate and warm-up


def plan_phases(config: Config) -> list[Phase]:
    """The phases of a run: one "train" phase from scratch; "head" then "fine_tune" (each when
    it has epochs) when `model.weights` starts from trained weights."""
    tcfg = config.train
    if not config.model.pretrained:
        return [Phase("train", tcfg)]
    t = config.transfer
    phases = []
    if t.head_epochs:
        phases.append(Phase("head", tcfg.model_copy(update={"epochs": t.head_epochs})))
    if t.fine_tune_epochs:
        lr = tcfg.learning_rate
        fine = {
            "epochs": t.fine_tune_epochs,
            # auto: the range test picks the fine-tune rate at the start of the phase
            "learning_rate": "auto" if lr == "auto" else lr * t.fine_tune_lr_factor,
            # warm-up belongs to the start of training, the new head's first steps
            "warmup_epochs": tcfg.warmup_epochs if not t.head_epochs else 0,
        }
        phases.append(Phase("fine_tune", tcfg.model_copy(update=fine)))
    return phases


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The nested `backbone` model of a transfer model, or None for a model trained whole."""
    import keras

    for layer in model.layers:
        if layer.name == BACKBONE and isinstance(layer, keras.Model):
            return layer
    return None


def leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in order with nested models flattened (input layers left out)."""
    import keras

    leaves: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.extend(leaf_layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            leaves.append(layer)
    return leaves


def _is_batch_norm(layer: keras.layers.Layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def _require_backbone(model: keras.Model) -> keras.Model:
    backbone = backbone_of(model)
    if backbone is None:
        raise ConfigError(
            f"model {model.name!r} has no backbone to freeze; the transfer schedule needs "
            "model.weights (imagenet, a weights file or a run directory)"
        )
    return backbone


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1: the backbone is frozen; every layer outside it (the head) trains."""
    backbone = _require_backbone(model)
    for layer in model.layers:
        layer.trainable = layer is not backbone


def unfreeze_top(model: keras.Model, unfreeze: int | str) -> list[str]:
    """Phase 2: unfreeze the top of the backbone and return the names of the layers that train.

    `unfreeze` is "all", an int N (the last N layers of the backbone, counted over its layers
    in order, nested models flattened) or a layer name (that layer and every layer after it).
    Batch-norm layers count but stay frozen. The head stays trainable.
    """
    backbone = _require_backbone(model)
    leaves = leaf_layers(backbone)
    if unfreeze == "all":
        start = 0
    elif isinstance(unfreeze, int):
        start = max(0, len(leaves) - unfreeze)
    else:
        names = [layer.name for layer in leaves]
        if unfreeze not in names:
            close = difflib.get_close_matches(unfreeze, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"transfer.unfreeze: the backbone has no layer {unfreeze!r}{hint} (give `all`, "
                f"a number of top layers, or one of its {len(names)} layer names, e.g. "
                f"{names[-1]!r})"
            )
        start = names.index(unfreeze)
    # Containers must be trainable for their trainable leaves to count.
    model.trainable = True
    backbone.trainable = True
    unfrozen = []
    for i, layer in enumerate(leaves):
        layer.trainable = i >= start and not _is_batch_norm(layer)
        if layer.trainable and layer.weights:
            unfrozen.append(layer.name)
    return unfrozen


def block_of(layer_name: str) -> str:
    """The block a backbone layer belongs to, from Keras' naming: conv4_block3_2_conv ->
    conv4_block3, block_16_expand -> block_16, block6a_se -> block6a, conv2_1_bn -> conv2."""
    match = re.match(r"(.*?_block\d+|block_\d+|[^_]+)", layer_name)
    return match.group(1) if match else layer_name


def layerwise_rates(model: keras.Model, decay: float) -> dict[int, float]:
    """Learning-rate factors per trainable backbone variable (by `id`): the top block of the
    backbone gets `decay`, the block below it `decay**2`, and so on; the head keeps 1."""
    backbone = _require_backbone(model)
    factors: dict[int, float] = {}
    depth, current = 0, None
    for layer in reversed(leaf_layers(backbone)):
        if not layer.trainable_weights:
            continue
        block = block_of(layer.name)
        if block != current:
            depth, current = depth + 1, block
        for variable in layer.trainable_weights:
            factors[id(variable)] = decay**depth
    return factors


def with_layer_rates(
    optimizer: keras.optimizers.Optimizer, model: keras.Model, factors: dict[int, float]
) -> keras.optimizers.Optimizer:
    """A copy of `optimizer` whose update of each variable uses learning_rate × its factor.

    Keras optimisers have one rate; the copy is a subclass that scales the rate handed to
    `update_step` (every optimiser's per-variable update), so momentum and Adam's moments work
    unchanged. Keys are the optimiser's own variable keys, which survive tf.function tracing.
    """
    base = type(optimizer)
    by_key = {
        optimizer._var_key(v): factors[id(v)] for v in model.trainable_variables if id(v) in factors
    }

    class LayerwiseRates(base):  # type: ignore[valid-type, misc]
        def update_step(self, gradient, variable, learning_rate):
            factor = by_key.get(self._var_key(variable), 1.0)
            if factor != 1.0:
                learning_rate = learning_rate * factor
            return super().update_step(gradient, variable, learning_rate)

    # Saved as the base optimiser (model.keras then loads with plain Keras; the factors are a
    # training-time detail, recorded in metrics.json).
    LayerwiseRates.__name__ = LayerwiseRates.__qualname__ = base.__name__
    LayerwiseRates.__module__ = base.__module__
    return LayerwiseRates.from_config(optimizer.get_config())


def head_model(model: keras.Model) -> keras.Model:
    """The head alone: features in, probabilities out, sharing the full model's head layers
    (training it trains them in the full model)."""
    import keras

    features = model.get_layer(FEATURES).output
    inputs = keras.Input(shape=tuple(features.shape[1:]), name="cached_features")
    names = {layer.name for layer in model.layers}
    x = inputs
    for name in HEAD:
        if name in names:
            x = model.get_layer(name)(x)
    return keras.Model(inputs, x, name="head")


def can_cache_features(config: Config, phase: Phase) -> bool:
    """Phase 1 may train on cached features when the backbone is frozen and either nothing
    changes an image between epochs (no augmentation) or the features of a fixed number of
    augmented views are cached (`transfer.augmented_views`)."""
    setting = config.transfer.cache_features
    views = config.transfer.augmented_views > 0
    return phase.name == "head" and setting is not False and (views or not config.augment.enabled)


def fit_head_on_features(
    model: keras.Model,
    splits: Splits,
    config: Config,
    phase: Phase,
    batch_size: int,
    callbacks: list[Any],
    class_weight: dict[int, float] | None,
    verbose: int | str,
    estimate: Any = None,
    augmenter: Any = None,
    strategy: Any = None,
) -> keras.Model:
    """Train the head of `model` on backbone features computed once per image (phase 1).

    The backbone (frozen, inference mode) maps an image to the same features in every epoch,
    so computing them once and fitting the head on them trains the same head, with the same
    batches in the same order, as `model.fit` through the backbone. With augmentation
    (`augmenter`) and `transfer.augmented_views` = K, the training features are those of K
    augmented views of every image, epoch e reading view e mod K: K backbone passes instead of
    one per epoch, an approximation of augmenting afresh every epoch (K is capped at the
    phase's epochs: more views than epochs would never be read). See `feature_cache`.
    Returns the head model; `estimate` (the run's `estimate.Estimate`) is told how long
    a forward pass took. Under `strategy` the head is made, compiled and fitted as the run's
    phases are; multi-worker, each worker computes the features of its share of the images,
    shared by all-reduce (`feature_cache.Share`)."""

    import keras

    extractor = Forward(
        keras.Model(model.inputs, model.get_layer(FEATURES).output), config.train.eval_batch_size
    )
    views = min(config.transfer.augmented_views if augmenter is not None else 0, phase.train.epochs)
    share = worker_share(strategy) if config.train.distribute == "multiworker" else None
    with contextlib.ExitStack() as stack:  # the views' temporary file goes with the phase
        cached = feature_cache.head_splits(
            extractor, splits, augmenter, views, stack, estimate, share
        )
        if views and verbose:
            print(f"phase {phase.name}: {feature_cache.describe(cached.train)}", flush=True)
        steps = steps_per_epoch(len(splits.train), batch_size)
        # Made in the strategy's scope: Keras' fit distributes the model made there.
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            head = head_model(model)
            compile_model(head, phase.train, steps, None, splits.train.targets)
        train_ds, val_ds = make_training_data(cached, config, batch_size, None)
        callbacks = [epoch_order_callback(train_ds), *callbacks]  # each epoch's shuffled order
        if views:
            callbacks.insert(0, epoch_order_callback(cached.train.x))  # each epoch's view
        if config.train.distribute == "multiworker":
            fit_multiworker(
                head, strategy, train_ds, val_ds, phase.train.epochs, callbacks, class_weight,
                verbose,
            )  # fmt: skip
        else:
            head.fit(
                train_ds, validation_data=val_ds, epochs=phase.train.epochs,
                callbacks=callbacks, verbose=verbose, shuffle=False, class_weight=class_weight,
            )  # fmt: skip
    return head


def trainable_summary(model: keras.Model) -> dict[str, int]:
    """Trainable and frozen parameter counts (for the log and metrics.json)."""

    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    return {"trainable_params": trainable, "frozen_params": model.count_params() - trainable}
