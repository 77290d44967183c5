"""The typed configuration: schema, loading from YAML with dotted overrides, and dumping.

A config is validated once, here, before any work starts. Every error is a single line that names
the key, the value received and what would be valid (the nearest valid key for a typo).
The schema's defaults *are* the embedded default recipe (`configs/default.yaml` mirrors them).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imgclf.errors import ConfigError

SOURCES = (
    "digits",
    "mnist5k",
    "folder",
    "keras:mnist",
    "keras:fashion_mnist",
    "keras:cifar10",
    "keras:cifar100",
)
ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "swish", "tanh", "sigmoid")
INITIALIZERS = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where images come from, their size, and how the pool is split."""

    source: Literal[SOURCES] = "mnist5k"  # type: ignore[valid-type]
    path: str | None = None  # the dataset folder, for source=folder
    image_size: tuple[PositiveInt, PositiveInt] = (28, 28)  # (height, width) the model sees
    channels: Literal[1, 3] = 1
    normalize: Literal["unit", "standardize"] = "unit"  # 0..1, or z-score adapted on train
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.15
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.15

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must leave at least 10% for training "
                f"(got {self.val_fraction} + {self.test_fraction})"
            )
        if self.source == "folder" and not self.path:
            raise ValueError(
                "data.path is required when data.source is 'folder' "
                "(a folder with one sub-folder per class)"
            )
        return self


class ModelConfig(_Section):
    """Which architecture (from the registry) and its knobs."""

    name: str = "cnn"
    filters: tuple[PositiveInt, ...] = (32, 64)  # cnn: one conv block per entry
    convs_per_block: PositiveInt = 2  # cnn: conv layers before each pooling (2 = VGG-style)
    kernel_size: PositiveInt = 3
    strides: PositiveInt = 1
    padding: Literal["same", "valid"] = "same"
    pooling: Literal["max", "avg", "none"] = "max"  # after each conv block
    hidden: tuple[PositiveInt, ...] = (128,)  # dense layers of the head (mlp: the whole net)
    activation: Literal[ACTIVATIONS] = "relu"  # type: ignore[valid-type]
    initializer: Literal[INITIALIZERS] = "he_normal"  # type: ignore[valid-type]
    batch_norm: bool = True
    # 0.9, not Keras' 0.99: small datasets give too few steps for 0.99 to forget its init.
    bn_momentum: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9
    dropout: Fraction = 0.25
    l1: Annotated[float, Field(ge=0.0)] = 0.0
    l2: Annotated[float, Field(ge=0.0)] = 1.0e-4

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from imgclf.models.registry import available_models

        names = available_models()
        if name not in names:
            raise ValueError(f"model.name: unknown model {name!r}; available: {', '.join(names)}")
        return name


class AugmentConfig(_Section):
    """Random transforms applied to training batches only (never at evaluation or export)."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0  # fraction of a full turn
    zoom: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # fraction of the image size
    translate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # fraction of the image size
    contrast: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    brightness: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0

    @property
    def enabled(self) -> bool:
        """True if any transform is switched on."""
        return self.flip != "none" or any(
            v > 0
            for v in (self.rotation, self.zoom, self.translate, self.contrast, self.brightness)
        )


class EarlyStoppingConfig(_Section):
    """Stop when the monitored validation figure stops improving; restore the best weights."""

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: Annotated[int, Field(ge=0)] = 5  # epochs without improvement; 0 never stops early
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0
    restore_best: bool = True  # end with the weights of the best epoch, not the last


class TrainConfig(_Section):
    """The optimisation recipe."""

    epochs: PositiveInt = 20
    batch_size: PositiveInt = 64
    optimizer: Literal[OPTIMIZERS] = "adam"  # type: ignore[valid-type]
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 1.0e-3
    momentum: Fraction = 0.9  # for the momentum and nesterov optimizers
    schedule: Literal["constant", "cosine"] = "cosine"  # cosine: decays to 0 over all epochs
    weight_decay: Annotated[float, Field(ge=0.0)] = 1.0e-4  # for adamw (decoupled)
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    top_k: PositiveInt = 5  # the k of the reported top-k accuracy (capped at the class count)


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


def _section_fields(path: tuple[str | int, ...]) -> list[str]:
    """The valid keys at a dotted location of the schema (for 'did you mean')."""
    model: type[BaseModel] = Config
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _lookup(tree: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _format_error(err: ValidationError, values: dict[str, Any]) -> str:
    """One line for the first problem: the key, the value received, what is valid."""
    first = err.errors()[0]
    # Stop at the first list index: "data.image_size", not "data.image_size.1".
    loc: tuple[str, ...] = ()
    for part in first["loc"]:
        if isinstance(part, int):
            break
        loc = (*loc, str(part))
    key = ".".join(loc) or "config"
    if first["type"] == "extra_forbidden":
        valid = _section_fields(loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        suggestion = ".".join([*loc[:-1], close[0]]) if close else ""
        hint = f"; did you mean {suggestion!r}?" if close else ""
        return f"unknown key {key!r}{hint} (valid keys here: {', '.join(valid)})"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":
        return msg  # our own validators already name the key
    if first["type"] == "missing" and len(loc) < len(first["loc"]):
        msg = "too few items"
    return f"{key}: got {_lookup(values, loc)!r}: {msg}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"override {dotted!r}: empty key part; use e.g. train.epochs=3")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"override {dotted!r}: {where!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ['train.epochs=3', 'model.hidden=[64,32]'] into a nested dict; values are YAML."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value; e.g. train.epochs=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file into a dict, with one-line errors for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (see configs/ for examples)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{path}:{where} is not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def build_config(values: dict[str, Any]) -> Config:
    """Validate a nested dict (sections missing from it take their defaults)."""
    # A section given in a file replaces nothing it does not name: start from the defaults.
    merged = _merge(Config().model_dump(mode="python"), values)
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_error(err, merged)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load `path` (or the embedded default) and apply dotted `key=value` overrides."""
    values = read_yaml(path) if path is not None else {}
    return build_config(_merge(values, parse_overrides(overrides or [])))


def dump_config(config: Config) -> str:
    """The resolved config as YAML; `load_config` of this text gives back an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
