"""The lessons of `configs/lessons/`: recipes in pairs or triples that differ in one switch
(`activations_sigmoid` / `activations_relu`, ...), grouped by the name before their last `_`,
each with the explanation and measured figures of its header comment; and the two diagnostics
a lesson is about, read from a run's diagnostics.json (see `imgclf.training.diagnostics`).

Reading lessons needs neither TensorFlow nor a run; the app's Lessons page and
`benchmarks/lessons.py` use this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _lessons_dir() -> Path:
    """configs/lessons of the source checkout this package is in, else of the working
    directory (a `pip install .` leaves configs/ in the clone the app is run from)."""
    beside = Path(__file__).resolve().parents[1] / "configs" / "lessons"
    return beside if beside.is_dir() else Path.cwd() / "configs" / "lessons"


LESSONS_DIR = _lessons_dir()
TITLES = {
    "activations": "Activations: sigmoid vs ReLU",
    "batchnorm": "Batch-norm on a deep sigmoid MLP",
    "depth_vs_width": "Depth vs width",
    "init": "Initialisation",
    "optimizers": "Optimisers: SGD, momentum, Adam",
    "regularization": "Regularisation",
    "skip": "Skip connections",
}


@dataclass(frozen=True)
class Recipe:
    """One lesson config: its file, the run name it trains (`name:`), the header's explanation
    and its measured line ("test accuracy 0.922, best val 0.959, final train 1.000"), time and
    how it was measured."""

    stem: str
    path: Path
    run_name: str
    explanation: str
    expected: str = ""
    time: str = ""
    measured: str = ""


@dataclass(frozen=True)
class Lesson:
    """Recipes that differ in one switch, in file-name order."""

    key: str
    title: str
    recipes: list[Recipe] = field(default_factory=list)


def parse_header(text: str) -> tuple[str, dict[str, str]]:
    """(explanation, {run, expected, time, measured}) from a recipe's leading `#` comment: the
    paragraph after `Lesson:`, then `key: value` lines."""
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line[1:].strip())
    paragraph, fields = [], {}
    for line in comment:
        found = re.match(r"^(run|expected|time|measured):\s+(.*)$", line)
        if found:
            fields[found[1]] = found[2].strip()
        elif line and not fields:
            paragraph.append(line)
    explanation = " ".join(paragraph).removeprefix("Lesson:").strip()
    return explanation, fields


def _recipe(path: Path) -> Recipe | None:
    """The recipe of `path`, or None when it is not a readable YAML mapping (left out; the
    Train page reports the file's problem when it is chosen as a recipe)."""
    try:
        text = path.read_text(encoding="utf-8")
        values = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(values, dict):
        return None
    explanation, fields = parse_header(text)
    name = str(values.get("name") or path.stem)
    return Recipe(path.stem, path, name, explanation, fields.get("expected", ""),
                  fields.get("time", ""), fields.get("measured", ""))  # fmt: skip


def _group(stem: str) -> str:
    """The lesson a recipe belongs to: the longest known lesson key it starts with
    (`init_normal_small` -> `init`), else its name before the last `_`."""
    known = [key for key in TITLES if stem.startswith(f"{key}_")]
    return max(known, key=len) if known else stem.rsplit("_", 1)[0]


def lessons(folder: str | Path = LESSONS_DIR) -> list[Lesson]:
    """Every lesson of `folder` (groups of 2 or more readable recipes), in title order; none
    when the folder is missing (an installed wheel has no configs/)."""
    groups: dict[str, list[Recipe]] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        recipe = _recipe(path)
        if recipe is not None:
            groups.setdefault(_group(path.stem), []).append(recipe)
    found = [
        Lesson(key, TITLES.get(key, key.replace("_", " ").capitalize()), recipes)
        for key, recipes in groups.items()
        if len(recipes) >= 2
    ]
    return sorted(found, key=lambda lesson: lesson.title)


def _hidden(diag: dict[str, Any]) -> list[str]:
    return [name for name in diag.get("layers", []) if name != "probabilities"]


def gradient_ratio(diag: dict[str, Any], epoch: int = 0) -> float | None:
    """Gradient norm of the last hidden layer's kernel over the first's, at `epoch` (0: at
    initialisation): far above 1 means the gradient vanishes on its way to the first layers.
    None with fewer than two hidden layers or no record; inf when only the first gets none."""
    records = [e for e in diag.get("epochs", []) if e.get("epoch") == epoch]
    hidden = _hidden(diag)
    if len(hidden) < 2 or not records or not records[0].get("grad_norm"):
        return None
    norms = records[0]["grad_norm"]
    first, last = norms.get(hidden[0]), norms.get(hidden[-1])
    if not first or not last:
        return float("inf") if last else None
    return last / first


def dead_fraction(diag: dict[str, Any]) -> float | None:
    """The share of dead ReLU units (zero for every image of the fixed batch) over all ReLU
    activation layers, at the last record; None without ReLU layers."""
    if not diag.get("epochs"):
        return None
    kinds = diag.get("activation_kinds", {})
    last = diag["epochs"][-1].get("activation", {})
    values = [
        stats["dead_fraction"]
        for name, stats in last.items()
        if kinds.get(name) == "relu" and stats.get("dead_fraction") is not None
    ]
    return sum(values) / len(values) if values else None


def gradient_profile(diag: dict[str, Any], epoch: int = 0) -> list[tuple[str, float]]:
    """(layer, gradient norm) of every kernel layer at `epoch`, input side first."""
    records = [e for e in diag.get("epochs", []) if e.get("epoch") == epoch]
    if not records:
        return []
    norms = records[0].get("grad_norm") or {}
    return [(name, norms[name]) for name in diag.get("layers", []) if norms.get(name)]
