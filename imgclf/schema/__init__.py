"""The config schema: typed, frozen sections with their defaults and the checks that need only
the values themselves. The defaults *are* the embedded default recipe (`configs/default.yaml`
mirrors them).

Load configs with `imgclf.config.load_config`, which also checks what needs the model registry
(a known `model.name`, weights a family can take); this module imports nothing of imgclf's but
its errors, so every module may import it for types.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from imgclf.schema.base import (
    ACTIVATIONS,
    INITIALIZERS,
    MAX_EPOCHS,
    OPTIMIZERS,
    PREDEFINED_SPLIT_SOURCES,
    SOURCES,
    _Section,
)
from imgclf.schema.data import AugmentConfig, DataConfig
from imgclf.schema.model import ModelConfig
from imgclf.schema.train import EarlyStoppingConfig, PredictConfig, TrainConfig, TransferConfig

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "MAX_EPOCHS",
    "OPTIMIZERS",
    "PREDEFINED_SPLIT_SOURCES",
    "SOURCES",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "EarlyStoppingConfig",
    "ModelConfig",
    "PredictConfig",
    "TrainConfig",
    "TransferConfig",
]


class Config(_Section):
    """A whole run: every field has a default, and the defaults are the embedded default recipe."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=80)] = (
        "mnist-cnn"
    )
    seed: Annotated[int, Field(ge=0)] = 0
    # single: one class per image (softmax); multilabel: any number of labels per image
    # (independent sigmoids, binary cross-entropy, per-label thresholds chosen on validation:
    # imgclf.data.multilabel, imgclf.training.multilabel).
    task: Literal["single", "multilabel"] = "single"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig(rotation=0.03, zoom=0.05, translate=0.05)
    train: TrainConfig = TrainConfig()
    transfer: TransferConfig = TransferConfig()
    predict: PredictConfig = PredictConfig()

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
        if self.task == "multilabel":
            _check_multilabel(self)
        elif self.data.source == "multimnist":
            raise ValueError("data.source=multimnist is a multi-label set: set task=multilabel")
        if self.predict.tta == "flip+crops" and min(self.data.image_size) < 10:
            raise ValueError(
                f"predict.tta=flip+crops needs images of at least 10×10 (data.image_size is "
                f"{list(self.data.image_size)}: no 90% crop to take); use predict.tta=flip"
            )
        if self.train.learning_rate == "auto" and self.train.distribute != "none":
            raise ValueError(
                "train.learning_rate=auto (the range test) runs on one device; find the rate "
                "with `imgclf-train --find-lr` and set it, or use train.distribute=none"
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


MULTILABEL_SOURCES = ("multimnist", "csv", "folder")


def _check_multilabel(config: Config) -> None:
    """What `task: multilabel` does not do yet, refused in one line each."""
    if config.data.source not in MULTILABEL_SOURCES:
        raise ValueError(
            f"task=multilabel reads labels from data.source multimnist, csv (a label column "
            f"with several labels, e.g. beach|people, or one-hot columns) or folder (a photo "
            f"in each of its labels' folders), not {config.data.source}"
        )
    refused = {
        "train.distribute": config.train.distribute != "none",
        "train.loss=mse": config.train.loss == "mse",
        "predict.tta": config.predict.tta != "none",
        "train.learning_rate=auto": config.train.learning_rate == "auto",
    }
    for what, on in refused.items():
        if on:
            raise ValueError(f"task=multilabel does not support {what} yet; use the default")
