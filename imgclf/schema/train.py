"""The `train` and `transfer` sections: the optimisation recipe and the two-phase schedule."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from imgclf.schema.base import MAX_EPOCHS, OPTIMIZERS, Epochs, Fraction, PositiveInt, _Section


class EarlyStoppingConfig(_Section):
    """Stop when the monitored validation figure stops improving; restore the best weights."""

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: Annotated[int, Field(ge=0)] = 5  # epochs without improvement; 0 never stops early
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0
    restore_best: bool = True  # end with the weights of the best epoch, not the last


class TrainConfig(_Section):
    """The optimisation recipe."""

    epochs: Epochs = 20
    # An int, or "full" for full-batch gradient descent (1 = pure stochastic gradient descent).
    batch_size: Annotated[int, Field(gt=0, le=1_000_000)] | Literal["full"] = 64
    optimizer: Literal[OPTIMIZERS] = "adam"  # type: ignore[valid-type]
    # A rate, or auto: the learning-rate range test (imgclf.training.lr_finder, Smith 2017) runs
    # on the run's own data, model and optimizer before training and picks it (per phase for a
    # two-phase transfer); config.yaml keeps `auto`, the rates found are in lr_finder.json and
    # metrics.json `phases`.
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] | Literal["auto"] = 1.0e-3
    momentum: Fraction = 0.9  # for the momentum and nesterov optimizers
    weight_decay: Annotated[float, Field(ge=0.0)] = 1.0e-4  # for adamw (decoupled)
    schedule: Literal["constant", "step", "exponential", "cosine", "reduce_on_plateau"] = "cosine"
    decay_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5  # step, exponential, plateau factor
    step_epochs: PositiveInt = 10  # step: multiply by decay_rate every step_epochs
    plateau_patience: PositiveInt = 2  # reduce_on_plateau: epochs without val_loss progress
    warmup_epochs: Annotated[int, Field(ge=0)] = 0  # linear warm-up from lr/(warmup+1)
    clipnorm: Annotated[float, Field(gt=0.0)] | None = None  # clip each gradient's L2 norm
    clipvalue: Annotated[float, Field(gt=0.0)] | None = None  # clip each gradient element
    loss: Literal["crossentropy", "mse"] = "crossentropy"  # mse on one-hot targets: the contrast
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # crossentropy only
    # balanced: n / (classes * count); task multilabel: each label's positives weighted by
    # negatives / positives inside the loss (imgclf.training.losses)
    class_weight: Literal["none", "balanced"] = "none"
    mixed_precision: Literal["none", "mixed_float16", "mixed_bfloat16"] = "none"
    jit_compile: Literal["auto"] | bool = "auto"  # XLA; "auto" leaves it off on CPU
    steps_per_execution: PositiveInt = 1  # batches per compiled call: helps tiny models
    # Per-layer gradients and activations every epoch (training/diagnostics.py). auto: on when a
    # probe batch of at least 16 images fits 256 MB of activations (small images and models).
    diagnostics: Literal["auto"] | bool = "auto"
    distribute: Literal["none", "mirrored", "multiworker"] = (
        "none"  # see imgclf/training/distribute.py
    )
    # multiworker: when no training step completes in this many seconds (an all-reduce waiting
    # on a hung worker), a watchdog fails the run with every thread's stack in stacks.txt, not a
    # silent hang; generous: a worker caching backbone features keeps the others waiting
    collective_timeout: Annotated[int, Field(ge=10)] = 1800
    # Write and check saved_model/ at the end (every format of docs/formats.md, a few seconds);
    # false skips it for sweeps and quick experiments: `imgclf-export RUN` writes it later.
    export: bool = True
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    # How often a run backs up its training state for `imgclf-train --resume`: every epoch, or
    # every N steps (an interrupted epoch then restarts from its beginning with the weights of
    # its last backup).
    backup_every: Literal["epoch"] | PositiveInt = "epoch"
    top_k: PositiveInt = 5  # the k of the reported top-k accuracy (capped at the class count)
    # Images per forward pass after training (confidence fit, evaluation, parity checks) and in
    # a cached-feature head phase: auto sizes it from the model's largest activation so that a
    # batch holds at most 512 MB of activations (imgclf/forward.py); an int fixes it.
    eval_batch_size: Literal["auto"] | PositiveInt = "auto"
    # Temperature scaling fitted on the validation split, folded into the output layer, so the
    # run and every export answer with calibrated probabilities (imgclf/confidence/calibration.py).
    calibrate: bool = True
    # The out-of-distribution score (Mahalanobis distance of the features to the nearest class
    # mean, imgclf/confidence/ood.py): fitted on training images, flagged above this quantile of the
    # validation scores (0.95: about 5% of in-distribution images are false alarms).
    ood: bool = True
    ood_quantile: Annotated[float, Field(ge=0.5, lt=1.0)] = 0.95
    # TensorBoard event files in the run folder (<run>/tensorboard/; Keras' TensorBoard callback:
    # scalars per epoch and the learning rate; histograms off). Open: tensorboard --logdir runs
    tensorboard: bool = False
    # An MLflow tracking store (a folder: a SQLite store in it; sqlite:///..., http://host:5000):
    # params, per-epoch metrics, the test metrics, the model card and plots (the [track] extra;
    # imgclf/training/tracking.py).
    mlflow: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.label_smoothing > 0 and self.loss != "crossentropy":
            raise ValueError("train.label_smoothing applies to loss=crossentropy only")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"train.warmup_epochs ({self.warmup_epochs}) must be smaller than train.epochs "
                f"({self.epochs})"
            )
        return self


class PredictConfig(_Section):
    """How a trained model answers: test-time augmentation (TTA) averages the probabilities of
    several views of each image (imgclf.predict.tta). flip: the image and its mirror image;
    flip+crops: those and four corner crops of 90% size, resized back (six views). It applies to
    the test evaluation (metrics.json reports both), Predictor, imgclf-predict, the app and the
    SavedModel (averaged in the graph). Use flip only where a mirror image keeps its class
    (photos, not digits or text)."""

    tta: Literal["none", "flip", "flip+crops"] = "none"


class TransferConfig(_Section):
    """The two-phase schedule of a model started from trained weights (`model.weights` set).

    Phase `head`: the backbone is frozen and only the new head trains, `head_epochs` at
    `train.learning_rate`. Phase `fine_tune`: the top `unfreeze` backbone layers train too, for
    `fine_tune_epochs` at `train.learning_rate × fine_tune_lr_factor`. Batch-norm layers of the
    backbone stay frozen and in inference mode in both phases. `train.epochs` is not used.
    """

    head_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 5
    fine_tune_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 5
    # How much of the backbone phase 2 trains: `all`, the top N layers (counted over the
    # backbone's layers in order, nested models flattened), or a layer name to unfreeze from.
    unfreeze: PositiveInt | str = "all"
    fine_tune_lr_factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    # Discriminative rates in phase 2: the top backbone block trains at lr × decay, the block
    # below it at lr × decay², ...; the head at lr. null = one rate for all.
    layer_lr_decay: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    # Phase 1 on cached backbone features (the same model, much faster): when augmentation is
    # off. auto = whenever it applies; false = always through the backbone.
    cache_features: Literal["auto"] | bool = "auto"
    # Phase 1 with augmentation on: train the head on the cached features of this many
    # augmented views of every training image (views × one backbone pass, once), epoch e
    # reading view e mod views, instead of a backbone pass per image per epoch. 0 = through the
    # backbone every epoch (the exact path, augmented afresh each epoch).
    augmented_views: Annotated[int, Field(ge=0, le=32)] = 0
    # Re-using a run (model.weights: runs/<run>): the layer whose output the new head reads.
    # null = what the old head read (the penultimate features); e.g. `flatten` keeps only the
    # convolutional part of a cnn. A 4-D feature map is flattened.
    backbone_layer: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TransferConfig:
        if self.head_epochs + self.fine_tune_epochs == 0:
            raise ValueError(
                "transfer.head_epochs and transfer.fine_tune_epochs are both 0; set at least one"
            )
        return self
