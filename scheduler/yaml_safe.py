"""YAML for configuration files, bounded: no duplicate keys, no alias bombs, no deep nesting.

``yaml.safe_load`` already refuses arbitrary tags, but it accepts ``a: 1`` twice (the last one
silently wins), shares anchored nodes between aliases (a 271-byte "billion laughs" document
becomes a tree with 10^9 leaves as soon as anything walks it) and composes nested collections
recursively (5,000 ``[`` end in ``RecursionError``). :func:`load` refuses all three while
composing, before any value is built, so a hostile file costs milliseconds and kilobytes.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_EXPANDED_NODES = 100_000
"""Nodes the document has once every alias is expanded: a config file has a few hundred."""


class ConfigYamlError(yaml.YAMLError):
    """A YAML document that parses but is refused (duplicate key, bomb, depth, size)."""


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ConfigYamlError(
                    f"nesting deeper than {MAX_DEPTH} levels at line {mark.line + 1}"
                )
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise ConfigYamlError(f"key {key!r} at line {line} must be a string")
            if key in seen:
                raise ConfigYamlError(
                    f"duplicate key {key!r} at line {line} (first at line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: Node) -> None:
    """Size and depth of the document with aliases expanded, in time linear in its text.

    Iterative, memoised by node: an alias chain (``b: [*a]``, ``c: [*b]``, ...) is as deep as
    the anchors it chains, whatever the composer's own depth was.
    """
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, expanded depth)
    opened: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if key in done:
            continue
        children = _children(node)
        if not expanded:
            if key in opened:  # reached again below itself: an alias to an enclosing anchor
                line = node.start_mark.line + 1
                raise ConfigYamlError(f"recursive alias to the node at line {line}")
            opened.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in done)
            continue
        size = 1 + sum(done[id(child)][0] for child in children)
        depth = 1 + max((done[id(child)][1] for child in children), default=0)
        if size > MAX_EXPANDED_NODES:
            raise ConfigYamlError(
                f"aliases expand to more than {MAX_EXPANDED_NODES} nodes (an alias bomb?)"
            )
        if depth > MAX_DEPTH:
            raise ConfigYamlError(f"nesting deeper than {MAX_DEPTH} levels (through aliases)")
        done[key] = (size, depth)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


_BRACKETS = re.compile(r"[\[\]{}]")
MAX_BRACKET_DEPTH = 4 * MAX_DEPTH


def _check_brackets(text: str) -> None:
    """Refuse deep flow nesting before PyYAML's scanner, which looks ahead over all of it.

    Counts brackets inside quoted strings too, hence the generous bound; the composer's
    :data:`MAX_DEPTH` is the exact check.
    """
    depth = 0
    for match in _BRACKETS.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_BRACKET_DEPTH:
            line = text.count("\n", 0, match.start()) + 1
            raise ConfigYamlError(f"nesting deeper than {MAX_DEPTH} levels at line {line}")


def load(text: str) -> Any:
    """Parse one YAML document with the bounds above; raises :class:`yaml.YAMLError`."""
    if len(text) > MAX_BYTES:
        raise ConfigYamlError(f"file is larger than {MAX_BYTES} bytes")
    _check_brackets(text)
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
