"""The search space of `imgclf-tune`: a YAML file whose keys are dotted config keys and whose
values say what to try (read and checked here, without TensorFlow):

    train.learning_rate: {log: [1.0e-4, 1.0e-2]}     a float, log-uniform between the bounds
    model.dropout: {range: [0.0, 0.5]}                a float, uniform (ints: an int range)
    model.hidden_dropout: {range: [0.0, 0.3], step: 0.1}
    model.filters: [[16, 32], [32, 64]]               a list: these values, one of them
    data.image_size: [[96, 96], [128, 128]]
    model.name: [cnn, resnet]

A list is always a set of choices (`[0.0, 0.5]` tries 0.0 and 0.5, nothing between); a range is
a mapping. Every value a dimension can take is checked against the config schema with the base
recipe before the search starts, so a typo or an impossible value fails at once, in one line.
Keys that would change what validation means (the data, its split, the seed, the name) cannot
be searched: trials are compared on one validation split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imgclf.config import load_config, read_yaml
from imgclf.infra.errors import ConfigError

# Keys a search may not vary: they change the validation split (or the run's identity).
FIXED_KEYS = (
    "name", "seed", "data.source", "data.path", "data.val_fraction", "data.test_fraction",
    "data.split", "data.classes", "data.duplicates", "data.conflicting_labels",
)  # fmt: skip
MAX_CHOICES = 64


@dataclass(frozen=True)
class Dimension:
    """One searched key: `kind` choice (values: the YAML text of each choice), float or int
    (low, high, log-uniform or not, an optional step)."""

    key: str
    kind: str
    values: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    def override(self, value: Any) -> str:
        """The `key=value` override of a value this dimension took (a choice's YAML text, or a
        number)."""
        return f"{self.key}={value}"

    def samples(self) -> list[Any]:
        """Values to check against the schema before searching: every choice, or both bounds
        (and, for a float, a value between them that is not whole: an int key refuses it)."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high, self.low + 0.37 * (self.high - self.low)]


def _text(value: Any) -> str:
    """A choice as YAML flow text ("[96, 96]", "cnn", "0.5"): what an override parses back."""
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...")
    )


def _number(value: Any) -> Any:
    """YAML reads `1e-5` (no dot) as text: take it as the number it means."""
    if isinstance(value, str):
        try:
            return int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            return value
    return value


def _bounds(key: str, spec: dict[str, Any], form: str) -> tuple[float, float]:
    bounds = spec[form]
    if isinstance(bounds, list):
        bounds = spec[form] = [_number(b) for b in bounds]
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
    ):
        raise ConfigError(f"space: {key}: {form} takes [low, high], two numbers; got {bounds!r}")
    low, high = float(bounds[0]), float(bounds[1])
    if not low < high or not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"space: {key}: {form} needs low < high, got {bounds!r}")
    if form == "log" and low <= 0:
        raise ConfigError(f"space: {key}: log needs bounds above 0, got {bounds!r}")
    return low, high


def dimension(key: str, spec: Any) -> Dimension:
    """One entry of the space file as a Dimension; ConfigError (one line) when malformed."""
    if isinstance(spec, list):
        if not 1 <= len(spec) <= MAX_CHOICES:
            raise ConfigError(f"space: {key}: give 1 to {MAX_CHOICES} choices, got {len(spec)}")
        texts = tuple(_text(v) for v in spec)
        if len(set(texts)) != len(texts):
            raise ConfigError(f"space: {key}: a choice is listed twice in {spec!r}")
        return Dimension(key, "choice", texts)
    forms = [f for f in ("log", "range") if isinstance(spec, dict) and f in spec]
    extra = set(spec) - {"log", "range", "step"} if isinstance(spec, dict) else set()
    if len(forms) != 1 or extra:
        raise ConfigError(
            f"space: {key}: expected a list of choices, {{range: [low, high]}} or "
            f"{{log: [low, high]}} (optionally with step), got {spec!r}"
        )
    low, high = _bounds(key, spec, forms[0])
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | float)):
        raise ConfigError(f"space: {key}: step must be a number, got {step!r}")
    if step is not None and not 0 < step <= high - low:
        raise ConfigError(f"space: {key}: step must be above 0 and at most {high - low:g}")
    if step is not None and forms[0] == "log":
        raise ConfigError(f"space: {key}: a log range takes no step; use range with a step")
    whole = all(isinstance(b, int) for b in spec[forms[0]]) and (step is None or step == int(step))
    kind = "int" if whole else "float"  # [16, 256] under log: log-uniform integers
    return Dimension(key, kind, (), low, high, forms[0] == "log", step)


def read_space(path: str | Path) -> list[Dimension]:
    """The dimensions of a space file, in file order. Raises ConfigError for a missing or
    unreadable file, a malformed entry, a duplicate or fixed key."""
    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--space {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--space {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--space {path}: not a UTF-8 text file; save it as UTF-8") from None
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(
            f"--space {path}: expected a mapping of dotted config keys to what to try, e.g. "
            "`train.learning_rate: {log: [1.0e-4, 1.0e-2]}`"
        )
    dims = []
    for key, spec in tree.items():
        if not isinstance(key, str):
            raise ConfigError(f"--space {path}: key {key!r} is not a dotted config key")
        if key in FIXED_KEYS or key.startswith("data.path"):
            raise ConfigError(
                f"space: {key} cannot be searched: it changes the validation split that trials "
                "are compared on; set it in the config instead"
            )
        dims.append(dimension(key, spec))
    return dims


def check_space(dims: list[Dimension], config: str | Path | None, overrides: list[str]) -> None:
    """Every value each dimension can take, checked with the base recipe through the config's
    own validation (ConfigError naming the key and value otherwise)."""
    if config is not None:
        read_yaml(config)  # a missing base recipe: its own error first
    for dim in dims:
        for value in dim.samples():
            try:
                load_config(config, [*overrides, dim.override(value)])
            except ConfigError as exc:
                raise ConfigError(f"space: {dim.key}={value}: {exc}") from None
