"""The `data` and `augment` sections: where images come from, and how training batches vary."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from imgclf.schema.base import PREDEFINED_SPLIT_SOURCES, SOURCES, PositiveInt, Side, _Section


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
