"""Reading the config file's YAML, with limits: a config is written by people, so whatever a
person would never write (duplicate keys, nesting hundreds of levels deep, aliases that expand
a few hundred bytes into billions of values) is refused with a clear message, at once.

Without the limits a 628-byte alias bomb took 48 s and 3.8 GB before any check ran (PyYAML
shares aliased values, but everything that walks the tree afterwards expands them), and 5,000
nested brackets ended in a RecursionError traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from worker.core.errors import ConfigError

# Far beyond any real config (a feed entry is 3 levels deep), far below Python's recursion limit.
MAX_DEPTH = 50
# Values that aliases may add to the document: generous for anchors reused across hundreds of
# alerts or feeds, while a bomb's billions are refused before anything expands them.
MAX_ALIAS_EXPANSION = 100_000


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep only the last one),
    nesting deeper than MAX_DEPTH and aliases that expand past MAX_ALIAS_EXPANSION values."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            distinct: set[int] = set()
            expanded = _expanded_size(node, {}, distinct, set())
            if expanded - len(distinct) > MAX_ALIAS_EXPANSION:
                raise yaml.composer.ComposerError(
                    None, None,
                    f"aliases (*name) would expand the document by more than {MAX_ALIAS_EXPANSION} "
                    "values; refused (an alias bomb?)",
                    None,
                )  # fmt: skip
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )  # fmt: skip
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], distinct: set[int], open_: set[int]) -> int:
    """How many values the tree holds once every alias is expanded; each node is visited once
    (its size remembered), so this costs the size of the document, not of its expansion."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.composer.ComposerError(None, None, "an alias refers to itself", node.start_mark)
    distinct.add(key)
    open_.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes, distinct, open_) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            size += _expanded_size(key_node, sizes, distinct, open_)
            size += _expanded_size(value_node, sizes, distinct, open_)
    open_.discard(key)
    sizes[key] = size
    return size


def read_yaml(path: str) -> Any:
    """The parsed YAML of a config file; ConfigError naming the file (and line) otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError([f"{path}: file not found"]) from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: cannot read ({e.__class__.__name__})"]) from e
    try:
        return yaml.load(text, Loader=StrictLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}{where}: {problem}"]) from e
