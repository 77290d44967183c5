"""The optimisation recipe of `config.train`: optimiser, learning-rate schedule (with warm-up),
gradient clipping, loss, class weights, and compilation (XLA, steps per execution)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from imgclf.infra.errors import ConfigError

if TYPE_CHECKING:
    import keras

    from imgclf.schema import TrainConfig


def resolve_batch_size(cfg: TrainConfig, n_train: int) -> int:
    """`train.batch_size`, with "full" meaning the whole training split (batch gradient descent).

    Raises ConfigError when the batch is larger than the training split: silently training on
    smaller batches than config.yaml says would misreport the run."""

    if cfg.batch_size == "full":
        return n_train
    if int(cfg.batch_size) > n_train:
        raise ConfigError(
            f"train.batch_size={cfg.batch_size} is larger than the {n_train} training images; "
            f"set train.batch_size={n_train} or less, or train.batch_size=full for all of them"
        )
    return int(cfg.batch_size)


def epoch_learning_rate(cfg: TrainConfig, epoch: int, current: float | None = None) -> float:
    """The learning rate of 0-based `epoch` for the per-epoch schedules.

    Warm-up rises linearly from lr/(W+1) to lr over the first W epochs. After it: constant,
    step (× decay_rate every step_epochs), exponential (× decay_rate per epoch). For
    reduce_on_plateau the rate after warm-up is left as it is (`current`): the plateau callback
    owns it.
    """
    base, warm = cfg.learning_rate, cfg.warmup_epochs
    if epoch < warm:
        return base * (epoch + 1) / (warm + 1)
    after = epoch - warm
    if cfg.schedule == "step":
        return base * cfg.decay_rate ** (after // cfg.step_epochs)
    if cfg.schedule == "exponential":
        return base * cfg.decay_rate**after
    if cfg.schedule == "reduce_on_plateau" and current is not None and epoch > warm:
        return current
    return base


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimiser named by `train.optimizer`, with clipping and (cosine) schedule."""
    from keras import optimizers

    lr: Any = cfg.learning_rate
    if cfg.schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        warm = cfg.warmup_epochs * steps_per_epoch
        if warm:
            # Warm up per step from lr/(W+1) to lr, then cosine down to 0.
            lr = optimizers.schedules.CosineDecay(
                cfg.learning_rate / (cfg.warmup_epochs + 1),
                decay_steps=total - warm,
                warmup_target=cfg.learning_rate,
                warmup_steps=warm,
            )
        else:
            lr = optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total)
    clip = {"clipnorm": cfg.clipnorm, "clipvalue": cfg.clipvalue}
    name = cfg.optimizer
    if name == "sgd":
        return optimizers.SGD(lr, **clip)
    if name == "momentum":
        return optimizers.SGD(lr, momentum=cfg.momentum, **clip)
    if name == "nesterov":
        return optimizers.SGD(lr, momentum=cfg.momentum, nesterov=True, **clip)
    if name == "rmsprop":
        return optimizers.RMSprop(lr, **clip)
    if name == "adam":
        return optimizers.Adam(lr, **clip)
    if name == "adamw":
        return optimizers.AdamW(lr, weight_decay=cfg.weight_decay, **clip)
    if name == "adagrad":
        return optimizers.Adagrad(lr, **clip)
    if name == "adadelta":
        # Keras 3's Adadelta defaults to lr 0.001 (Keras 2 used 1.0): the config says which.
        return optimizers.Adadelta(lr, **clip)
    raise ValueError(f"train.optimizer: unknown optimizer {name!r}")


def schedule_callbacks(cfg: TrainConfig) -> list[keras.callbacks.Callback]:
    """Callbacks that drive the per-epoch schedules (cosine is per step, inside the optimiser)."""
    import keras

    if cfg.schedule == "cosine":
        return []
    callbacks: list[keras.callbacks.Callback] = []
    if cfg.schedule != "constant" or cfg.warmup_epochs:
        callbacks.append(
            keras.callbacks.LearningRateScheduler(
                lambda epoch, lr: epoch_learning_rate(cfg, epoch, float(lr))
            )
        )
    if cfg.schedule == "reduce_on_plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=cfg.decay_rate, patience=cfg.plateau_patience
            )
        )
    return callbacks


def make_loss(
    cfg: TrainConfig, multilabel: bool = False, pos_weight: np.ndarray | None = None
) -> keras.losses.Loss:
    """Cross-entropy on one-hot targets (with label smoothing), or MSE on one-hot targets; for
    a multi-label model, binary cross-entropy on the multi-hot targets (label smoothing too),
    each label's positives weighted by `pos_weight` [K] when given (`training.losses`)."""
    import keras

    if multilabel and pos_weight is not None:
        from imgclf.training.losses import WeightedBinaryCrossentropy

        return WeightedBinaryCrossentropy(list(pos_weight), cfg.label_smoothing)
    if multilabel:
        return keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing)
    if cfg.loss == "mse":
        return keras.losses.MeanSquaredError()
    return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    """`balanced`: n / (classes × count_c), so every class carries the same total weight."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes)
    total = counts.sum()
    return {c: float(total / (num_classes * n)) if n else 0.0 for c, n in enumerate(counts)}


def compile_model(
    model: keras.Model,
    cfg: TrainConfig,
    steps_per_epoch: int,
    optimizer: keras.optimizers.Optimizer | None = None,
    targets: np.ndarray | None = None,
) -> None:
    """Compile with the recipe's optimiser (or `optimizer`), loss, XLA and steps per execution.
    A multi-label model (sigmoid output) gets binary cross-entropy, and `accuracy` is the share
    of (image, label) decisions right at 0.5 (Keras' BinaryAccuracy); with
    `train.class_weight: balanced`, each label's positives are weighted by negatives /
    positives in `targets` (the training split's multi-hot rows, `losses.positive_weights`)."""
    import keras

    from imgclf.models.registry import is_multilabel

    multilabel = is_multilabel(model)
    accuracy = keras.metrics.BinaryAccuracy(name="accuracy") if multilabel else "accuracy"
    model.compile(
        optimizer=optimizer or make_optimizer(cfg, steps_per_epoch),
        loss=make_loss(cfg, multilabel, _pos_weight(cfg, multilabel, targets)),
        metrics=[accuracy],
        jit_compile=cfg.jit_compile,
        steps_per_execution=cfg.steps_per_execution,
    )


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch."""
    return max(1, math.ceil(n_train / batch_size))


def _pos_weight(cfg: TrainConfig, multilabel: bool, targets: np.ndarray | None) -> Any:
    if not (multilabel and cfg.class_weight == "balanced" and targets is not None):
        return None
    from imgclf.training.losses import positive_weights

    return positive_weights(targets)
