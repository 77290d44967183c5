"""Loading a config: YAML files and dotted `key=value` overrides, validated once, here, before any
work starts, and dumping the resolved config. Every error is a single line that names the key,
the value received and what would be valid (the nearest valid key for a typo).

The schema itself (sections, defaults, value checks) is `imgclf.schema`; the names it defines
are importable from here too. Checks that need the model registry (a known `model.name`,
`model.weights` a family can take) run here, after the schema's.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from imgclf.infra import bounded
from imgclf.infra.errors import ConfigError
from imgclf.models.registry import available_models, is_pretrainable
from imgclf.schema import (
    ACTIVATIONS,
    INITIALIZERS,
    OPTIMIZERS,
    PREDEFINED_SPLIT_SOURCES,
    SOURCES,
    AugmentConfig,
    Config,
    DataConfig,
    EarlyStoppingConfig,
    ModelConfig,
    TrainConfig,
    TransferConfig,
)

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "OPTIMIZERS",
    "PREDEFINED_SPLIT_SOURCES",
    "SOURCES",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "EarlyStoppingConfig",
    "ModelConfig",
    "TrainConfig",
    "TransferConfig",
    "augment_overrides",
    "build_config",
    "check_model",
    "dump_config",
    "load_config",
    "parse_overrides",
    "read_yaml",
]


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


def _field_path(loc: tuple[Any, ...]) -> tuple[str, ...]:
    """The part of an error location that names config keys (drops list indices and the tags
    pydantic adds for union members, e.g. 'constrained-int')."""
    path: tuple[str, ...] = ()
    for part in loc:
        if isinstance(part, int):
            break
        valid = _section_fields(path)
        if path and part not in valid:
            break
        path = (*path, str(part))
        if not _section_fields(path):
            break  # reached a leaf field
    return path


def _format_error(err: ValidationError, values: dict[str, Any]) -> str:
    """One line for the first problem: the key, the value received, what is valid."""
    errors = err.errors()
    first = errors[0]
    loc = _field_path(first["loc"]) if first["type"] != "extra_forbidden" else first["loc"]
    loc = tuple(str(p) for p in loc)
    key = ".".join(loc) or "config"
    if first["type"] == "extra_forbidden":
        valid = _section_fields(loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        suggestion = ".".join([*loc[:-1], close[0]]) if close else ""
        hint = f"; did you mean {suggestion!r}?" if close else ""
        return f"unknown key {key!r}{hint} (valid keys here: {', '.join(valid)})"
    if first["type"] == "value_error":
        return first["msg"].removeprefix("Value error, ")  # our validators name the key
    # A union (e.g. an int or "full") reports one error per member: say them all.
    msgs: list[str] = []
    for e in errors:
        if _field_path(e["loc"]) == loc and e["type"] != "value_error":
            msg = "too few items" if e["type"] == "missing" else e["msg"]
            if msg not in msgs:
                msgs.append(msg)
    got = bounded.clip(repr(_lookup(values, loc)), 80)
    return f"{key}: got {got}: {'; or '.join(msgs)}"


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
            value = bounded.loads_yaml(raw, f"override {key}") if raw.strip() else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or exc
            raise ConfigError(
                bounded.clip(f"override {key.strip()}=…: the value is not valid YAML ({problem})")
            ) from None
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
        text = bounded.read_text(path, bounded.MAX_YAML_BYTES)
    except bounded.TooLarge as exc:
        raise ConfigError(f"{exc}; a config file is a few KB of settings") from None
    except bounded.BoundedInputError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        data = bounded.loads_yaml(text, str(path), _UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{path}:{where} is not valid YAML: {problem}") from None
    if data is None:
        raise ConfigError(
            f"{path} is empty; a config names at least one setting (e.g. `train: {{epochs: 3}}`), "
            "or leave --config out for the built-in default"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config must be a mapping of sections, got {type(data).__name__}"
        )
    return data


class _UniqueKeyLoader(bounded.BoundedLoader):
    """PyYAML's safe loader with imgclf's bounds (`infra.bounded`), refusing a key given twice
    in one mapping (plain YAML keeps the last one silently, so a typo'd duplicate would change
    a run without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: keys merged in may be overridden here, as YAML allows
            key = self.construct_object(key_node, deep=deep)
            try:
                again = key in seen
                seen.add(key)
            except TypeError:  # a list or mapping as a key
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"a key must be a plain name, not a {type(key).__name__}",
                    key_node.start_mark,
                ) from None
            if again:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def build_config(values: dict[str, Any]) -> Config:
    """Validate a nested dict (sections missing from it take their defaults)."""
    # A section given in a file replaces nothing it does not name: start from the defaults.
    merged = _merge(Config().model_dump(mode="python"), values)
    try:
        config = Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_error(err, merged)) from None
    check_model(config.model)
    return config


def check_model(cfg: ModelConfig) -> None:
    """The model checks that need the registry: `model.name` is registered, and published
    weights (`imagenet`, a .h5 file) go to a family that has them. Raises ConfigError."""

    names = available_models()
    if cfg.name not in names:
        raise ConfigError(f"model.name: unknown model {cfg.name!r}; available: {', '.join(names)}")
    if cfg.weights is None:
        return
    published = cfg.weights.lower() == "imagenet" or cfg.weights.endswith(".h5")
    if published and not is_pretrainable(cfg.name):
        raise ConfigError(
            f"model.weights={cfg.weights!r} needs a pretrained backbone family "
            f"(efficientnet_lite0, resnet50, mobilenetv2, ...); `{cfg.name}` has no published "
            "weights: use null, or a run directory (runs/<run>) to re-use your own model"
        )


def augment_overrides(enabled: bool, base: Config) -> list[str]:
    """Overrides that switch augmentation off (every transform to its off value) or on: `base`'s
    own transforms if it has any, else the built-in default config's. For forms with one
    "augmentation" switch (the app)."""
    if enabled == base.augment.enabled:
        return []
    source = AugmentConfig() if not enabled else build_config({}).augment
    return [f"augment.{key}={value}" for key, value in source.model_dump().items()]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load `path` (or the embedded default) and apply dotted `key=value` overrides.

    Raises:
        ConfigError: the file is missing or not YAML, an override is not `key=value`, a key is
            unknown (with the nearest valid one), a value has the wrong type or range, or the
            model is not registered; one line, naming the key, the value and what is valid.
    """
    values = read_yaml(path) if path is not None else {}
    return build_config(_merge(values, parse_overrides(overrides or [])))


class _Dumper(yaml.SafeDumper):
    """Block-style mappings with flow-style lists: `image_size: [28, 28]`."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True)
)


def dump_config(config: Config) -> str:
    """The resolved config as YAML; `load_config` of this text gives back an equal config."""
    return yaml.dump(
        config.model_dump(mode="json"), Dumper=_Dumper, sort_keys=False, allow_unicode=True
    )
