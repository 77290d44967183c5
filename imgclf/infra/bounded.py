"""Readers for what imgclf did not just write itself: run files received from someone else,
config files, command-line overrides, queue files. Each is bounded before the library parses it,
so no file or value can exhaust the memory, the stack or the time of a command or the app:

- size: a file larger than its limit is refused before it is read (`read_text`);
- depth: JSON or YAML nested deeper than MAX_DEPTH is refused (the standard `json` module and
  PyYAML's composer recurse once per level: 100,000 levels was a RecursionError);
- expansion: YAML aliases (`*name`) may be used, but a document whose aliases expand to more
  than MAX_NODES nodes ("billion laughs") is refused while it is still a graph of shared nodes,
  before anything is built from it;
- messages: `clip` cuts any text shown as an error to one line of at most MAX_MESSAGE
  characters, so a 10 KB value gives a one-line error, not a 10 KB one.

Every refusal is a ValueError (`BoundedInputError`) whose text names the file (or the value)
and the limit. Parsing is left to the libraries (`json`, PyYAML's safe loader).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 64  # nesting of lists and mappings; imgclf's own files use fewer than 8
MAX_NODES = 100_000  # YAML nodes after aliases are expanded; a config has a few hundred
MAX_JSON_BYTES = 64 * 2**20  # a run file (metrics.json of 1,000 classes is about 5 MB)
MAX_YAML_BYTES = 1 * 2**20  # a config file (imgclf's are 2-3 KB)
MAX_MESSAGE = 1000  # characters of an error line (a config error lists the valid keys)


class BoundedInputError(ValueError):
    """A file or value over one of this module's limits (or malformed); says which and why."""


class TooLarge(BoundedInputError):
    """A file larger than its limit (refused before it is read)."""


def clip(text: object, limit: int = MAX_MESSAGE) -> str:
    """`text` as one line of at most `limit` characters: line breaks become ` / `, and a longer
    text is cut with `… (N more characters)`."""
    line = " / ".join(part for part in str(text).splitlines() if part.strip()) or str(text)
    if len(line) <= limit:
        return line
    return f"{line[:limit]}… ({len(line) - limit} more characters)"


def read_text(path: str | Path, limit: int) -> str:
    """The UTF-8 text of `path`, refused (BoundedInputError) when it is larger than `limit`
    bytes or not UTF-8. OSError (missing, unreadable) passes through."""
    path = Path(path)
    # O_NONBLOCK: a FIFO (or a device) in a received folder cannot block the open or the read.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BoundedInputError(f"{path}: not a regular file (a FIFO, a device, ...)")
        if info.st_size > limit:
            raise TooLarge(f"{path}: {info.st_size:,} bytes, more than the {limit:,} allowed")
        data = fh.read(limit + 1)  # a file that grew since the stat is still cut
    if len(data) > limit:
        raise TooLarge(f"{path}: more than the {limit:,} bytes allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BoundedInputError(
            f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None


def _check_depth(value: Any, where: str) -> None:
    """Refuse lists and dicts nested deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_DEPTH:
            raise BoundedInputError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children)


def loads_json(text: str, where: str) -> Any:
    """Parse JSON `text` (from `where`, named in errors) with `json.loads`, refusing nesting
    deeper than MAX_DEPTH. Raises BoundedInputError (a ValueError), never RecursionError."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise BoundedInputError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise BoundedInputError(clip(f"{where}: not valid JSON ({exc})")) from None
    _check_depth(value, where)
    return value


def read_json(path: str | Path, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file read with every bound above (BoundedInputError; OSError passes through)."""
    return loads_json(read_text(path, limit), str(path))


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the depth and expansion limits: composing refuses a node
    deeper than MAX_DEPTH, and the composed document is measured (each shared node counted
    as often as the aliases repeat it) before any Python object is built."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        depth = getattr(self, "_depth", 0) + 1
        if depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", mark
            )
        self._depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth - 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and expanded_size(node) > MAX_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"its aliases expand to more than {MAX_NODES:,} values (a YAML bomb?); "
                "write the values out instead of repeating anchors",
                node.start_mark,
            )
        return node


def expanded_size(node: yaml.Node) -> int:
    """The number of nodes of a composed YAML document once its aliases are expanded, capped
    at MAX_NODES + 1: each node's size is computed once (memoised), so a "billion laughs"
    graph is measured in linear time without being expanded. A node that contains itself (a
    recursive alias) expands without end and counts as over the cap."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        key = id(current)
        if isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        elif isinstance(current, yaml.MappingNode):
            children = [n for pair in current.value for n in pair]
        else:
            sizes[key] = 1
            continue
        if children_done:
            visiting.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_NODES + 1)
            continue
        if key in sizes:
            continue
        if key in visiting or any(id(c) in visiting for c in children):
            return MAX_NODES + 1  # recursive
        visiting.add(key)
        stack.append((current, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(node)]


def loads_yaml(text: str, where: str, loader: type[BoundedLoader] = BoundedLoader) -> Any:
    """Parse YAML `text` with `loader` (a BoundedLoader). Raises yaml.YAMLError (the
    library's, naming the line) for malformed or over-limit YAML, never RecursionError."""
    try:
        return yaml.load(text, Loader=loader)  # a SafeLoader subclass
    except RecursionError:  # a deep scalar structure the composer's check did not see
        raise yaml.YAMLError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None


def read_yaml(path: str | Path, limit: int = MAX_YAML_BYTES) -> Any:
    """A YAML file read with every bound above: BoundedInputError for size or encoding,
    yaml.YAMLError for malformed or over-limit YAML; OSError passes through."""
    return loads_yaml(read_text(path, limit), str(path))
