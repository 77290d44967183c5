"""The config schema: typed, frozen sections with their defaults and the checks that need only
the values themselves. The defaults *are* the embedded default recipe (`configs/default.yaml`
mirrors them).

Load configs with `imgclf.config.load_config`, which also checks what needs the model registry
(a known `model.name`, weights a family can take); this module imports nothing of imgclf's but
its errors, so every module may import it for types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SOURCES = (
    "digits",
    "mnist5k",
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


class DataConfig(_Section):
    """Where images come from, their size, and how the pool is split."""

    source: Literal[SOURCES] = "mnist5k"  # type: ignore[valid-type]
    path: str | None = None  # the dataset folder, for source=folder
    image_size: tuple[Side, Side] = (28, 28)  # (height, width) the model sees
    channels: Literal[1, 3] = 1
    normalize: Literal["unit", "standardize"] = "unit"  # 0..1, or z-score adapted on train
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.15
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.15
    # auto: the source's own test set when it has one (fashion_mnist, keras:*), else stratified;
    # stratified: re-split the whole pool; predefined: the source's own test set (test_fraction
    # unused; val_fraction of the rest becomes validation).
    split: Literal["auto", "stratified", "predefined"] = "auto"
    # Decoded pixels of folder/CSV sources: memory (decoded once into RAM), disk (decoded once
    # into ~/.cache/imgclf/decoded/, re-used by later runs on the same files), none (decoded at
    # every read), auto (disk when its disk has room, so a re-run decodes nothing; else memory
    # under 1 GiB decoded, else none). Built-in sets stay in memory.
    cache: Literal["auto", "memory", "disk", "none"] = "auto"
    # Keep only these classes of the source, by the source's names, in this order (labels.json
    # follows it); names unknown to the source are reported when the data is loaded.
    classes: tuple[str, ...] | None = None
    # Keep at most this many training images per class (seeded); validation and test untouched.
    max_per_class: PositiveInt | None = None
    # Train even when a class is too small to appear in every split (its metrics: not tested).
    allow_untested_classes: bool = False
    # Exact copies of an image (imgclf.data.duplicates): drop trains on one of them, keep on
    # all; either way a group stays in one split. The same image under two classes: drop
    # trains on none of its copies until you decide, keep trains each under its own label.
    duplicates: Literal["drop", "keep"] = "drop"
    conflicting_labels: Literal["drop", "keep"] = "drop"
    # Check the training images for likely label errors and outliers before fitting
    # (imgclf.data.suspects: reported in data_report.json, never acted on): the label check
    # learns from 16×16 pixels, or from frozen ImageNet features of EfficientNet-Lite0 (the
    # [pretrained] extra; better on photos, slower); off skips both checks.
    audit: Literal["pixels", "imagenet", "off"] = "pixels"

    @field_validator("audit", mode="before")
    @classmethod
    def _audit_switch(cls, value: Any) -> Any:  # true/false (YAML's on/off): pixels/off
        return ("pixels" if value else "off") if isinstance(value, bool) else value

    @field_validator("classes", mode="before")
    @classmethod
    def _class_names_as_text(cls, value: Any) -> Any:
        # `data.classes=[3,5]` on the command line parses as integers: digits name classes too.
        if isinstance(value, list | tuple):
            flags = [v for v in value if isinstance(v, bool)]
            if flags:  # YAML 1.1 reads no/yes/on/off/true/false, unquoted, as booleans
                raise ValueError(
                    f"data.classes: {flags[0]!r} is a YAML boolean, not a name: YAML reads "
                    'no, yes, on, off, true and false as booleans; quote them: ["no", "yes"]'
                )
            return [str(v) if isinstance(v, int) else v for v in value]
        if value is not None:
            raise ValueError(
                f"data.classes: got {value!r}; expected a list of class names, e.g. [cats, dogs]"
            )
        return value

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError(
                "data.classes: empty list; list at least 2 class names, or null for all classes"
            )
        seen: set[str] = set()
        for name in value:
            if name in seen:
                raise ValueError(f"data.classes: {name!r} is listed twice")
            seen.add(name)
        if len(value) < 2:
            raise ValueError(
                f"data.classes: keeps 1 class ({value[0]!r}); a classifier needs at least 2"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must leave at least 10% for training "
                f"(got {self.val_fraction} + {self.test_fraction})"
            )
        if self.split == "predefined" and self.source not in PREDEFINED_SPLIT_SOURCES:
            raise ValueError(
                f"data.split=predefined: source {self.source} has no test set of its own (those "
                f"that do: {', '.join(PREDEFINED_SPLIT_SOURCES)}); use data.split=stratified"
            )
        if self.source == "folder" and not self.path:
            raise ValueError(
                "data.path is required when data.source is 'folder' "
                "(a folder with one sub-folder per class)"
            )
        if self.source == "csv" and not self.path:
            raise ValueError(
                "data.path is required when data.source is 'csv' (a CSV file of path,label rows)"
            )
        return self


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


class AugmentConfig(_Section):
    """Random transforms applied to training batches only (never at evaluation or export)."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0  # fraction of a full turn
    zoom: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # fraction of the image size
    translate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # fraction of the image size
    crop: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # random crop of (1-crop) size, resized
    contrast: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    brightness: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    hue: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # RGB only
    saturation: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # RGB only
    randaugment: Annotated[int, Field(ge=0, le=10)] = 0  # RandAugment ops per image; 0 = off
    randaugment_magnitude: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    mixup: Annotated[float, Field(ge=0.0)] = 0.0  # MixUp Beta(alpha, alpha); 0 = off
    cutmix: Annotated[float, Field(ge=0.0)] = 0.0  # CutMix Beta(alpha, alpha); 0 = off

    @model_validator(mode="after")
    def _check(self) -> AugmentConfig:
        if self.mixup > 0 and self.cutmix > 0:
            raise ValueError(
                "augment.mixup and augment.cutmix are both on; choose one (set the other to 0)"
            )
        return self

    @property
    def enabled(self) -> bool:
        """True if any transform is switched on."""
        amounts = (
            self.rotation, self.zoom, self.translate, self.crop, self.contrast, self.brightness,
            self.hue, self.saturation, self.randaugment, self.mixup, self.cutmix,
        )  # fmt: skip
        return self.flip != "none" or any(v > 0 for v in amounts)


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
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 1.0e-3
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
    class_weight: Literal["none", "balanced"] = "none"  # balanced: n / (classes * count)
    mixed_precision: Literal["none", "mixed_float16", "mixed_bfloat16"] = "none"
    jit_compile: Literal["auto"] | bool = "auto"  # XLA; "auto" leaves it off on CPU
    steps_per_execution: PositiveInt = 1  # batches per compiled call: helps tiny models
    # Per-layer gradients and activations every epoch (training/diagnostics.py). auto: on when a
    # probe batch of at least 16 images fits 256 MB of activations (small images and models).
    diagnostics: Literal["auto"] | bool = "auto"
    distribute: Literal["none", "mirrored", "multiworker"] = (
        "none"  # see imgclf/training/distribute.py
    )
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


class Config(_Section):
    """A whole run: every field has a default, and the defaults are the embedded default recipe."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=80)] = (
        "mnist-cnn"
    )
    seed: Annotated[int, Field(ge=0)] = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig(rotation=0.03, zoom=0.05, translate=0.05)
    train: TrainConfig = TrainConfig()
    transfer: TransferConfig = TransferConfig()

    @model_validator(mode="after")
    def _check(self) -> Config:
        views = self.transfer.augmented_views
        if self.transfer.cache_features is True and self.augment.enabled and not views:
            raise ValueError(
                "transfer.cache_features=true needs augmentation off, or cached augmented views "
                "(transfer.augmented_views, e.g. 4); switch augment.* off or set "
                "transfer.cache_features=auto"
            )
        if views and self.transfer.cache_features is False:
            raise ValueError(
                f"transfer.augmented_views={views} caches features, and "
                "transfer.cache_features=false forbids it; set one of them back"
            )
        if views and (self.augment.mixup or self.augment.cutmix):
            raise ValueError(
                f"transfer.augmented_views={views} cannot cache MixUp or CutMix (they blend "
                "images and labels within each batch); set augment.mixup and augment.cutmix to "
                "0, or transfer.augmented_views=0"
            )
        if self.model.pretrained and self.train.distribute != "none":
            raise ValueError(
                "train.distribute is not supported with model.weights (the two-phase transfer "
                "schedule) yet; use train.distribute=none"
            )
        if self.model.pretrained and self.train.warmup_epochs >= max(self.transfer.head_epochs, 1):
            raise ValueError(
                f"train.warmup_epochs ({self.train.warmup_epochs}) must be smaller than "
                f"transfer.head_epochs ({self.transfer.head_epochs}): warm-up happens in phase 1"
            )
        colour = [k for k in ("hue", "saturation", "randaugment") if getattr(self.augment, k)]
        if self.data.channels == 1 and colour:
            raise ValueError(
                f"augment.{colour[0]} needs colour images; set data.channels=3 or "
                f"augment.{colour[0]}=0"
            )
        return self
