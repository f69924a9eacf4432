"""YAML loaded into a small tree that remembers where every value was written.

Profiles are merged across files before they are validated, so each value keeps its own file and line: an error
about a value inherited from base.yaml points at base.yaml. Two tags are understood: `!remove ITEM` in a list
removes an inherited item, `!replace` on a list or map replaces the inherited value instead of merging.
Duplicate keys, other tags and non-string keys are errors (PyYAML would silently keep the last duplicate).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from clipbuild.core.errors import Issue, Location

TAGS = ("!remove", "!replace")
MAX_NODES = 100_000  # guards against alias bombs


@dataclass
class Node:
    """A YAML value with its location. `value` is dict[str, Node], list[Node] or a plain scalar."""

    value: Any
    loc: Location
    key_loc: Location | None = None  # where the key naming this value was written
    tag: str | None = None  # "remove" or "replace"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> Location:
        return self.key_loc or self.loc

    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    def is_list(self) -> bool:
        return isinstance(self.value, list)

    def plain(self) -> Any:
        """The value as plain Python data, without locations."""
        if self.is_map():
            return {k: v.plain() for k, v in self.value.items()}
        if self.is_list():
            return [v.plain() for v in self.value]
        return self.value

    def untagged(self) -> Node:
        return replace(self, tag=None)


class _Loader(yaml.SafeLoader):
    pass


def load_file(path: Path, display: str) -> tuple[Node | None, list[Issue]]:
    """Load `path`; errors name `display` (the path as the user should see it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Issue(Location(display), "", f"cannot read: {exc.strerror}")]
    except UnicodeDecodeError as exc:
        return None, [Issue(Location(display), "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    return load_text(text, display)


def load_text(text: str, display: str) -> tuple[Node | None, list[Issue]]:
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        what = exc.problem or exc.context or "invalid YAML"
        return None, [Issue(Location(display, line), "", f"YAML syntax error: {what}")]
    except yaml.YAMLError as exc:
        return None, [Issue(Location(display), "", f"YAML error: {exc}")]
    if root is None:
        return Node({}, Location(display, 1)), []
    converter = _Converter(display)
    try:
        node = converter.convert(root)
    except _TooBig:
        return None, [Issue(Location(display), "", f"more than {MAX_NODES} YAML nodes (alias expansion?)")]
    return node, converter.issues


class _Converter:
    def __init__(self, display: str):
        self.display = display
        self.issues: list[Issue] = []
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def loc(self, node: yaml.Node) -> Location:
        return Location(self.display, node.start_mark.line + 1)

    def convert(self, node: yaml.Node) -> Node:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig()
        tag = None
        if node.tag.startswith("!") and not node.tag.startswith("!!"):
            if node.tag in TAGS:
                tag = node.tag[1:]
            else:
                self.issues.append(Issue(self.loc(node), "", f"unknown YAML tag {node.tag}",
                                         "clipbuild understands !remove and !replace"))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, tag)
        if isinstance(node, yaml.SequenceNode):
            return Node([self.convert(n) for n in node.value], self.loc(node), tag=tag)
        return Node(self._scalar(node, tag is not None), self.loc(node), tag=tag)

    def _scalar(self, node: yaml.ScalarNode, retag: bool) -> Any:
        if retag or node.tag.startswith("!"):
            resolved = _Loader.resolve(_Loader, yaml.ScalarNode, node.value, (True, False))  # type: ignore[arg-type]
            node = yaml.ScalarNode(resolved, node.value, node.start_mark, node.end_mark, node.style)
        return self.constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, tag: str | None) -> Node:
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key_loc = self.loc(key_node)
            key = self._scalar(key_node, False) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.issues.append(Issue(key_loc, "", f"keys must be strings, not {_describe(key)}"))
                continue
            if key in out:
                self.issues.append(Issue(key_loc, key, "duplicate key",
                                         f"first written on line {out[key].where.line}"))
                continue
            child = self.convert(value_node)
            child.key_loc = key_loc
            out[key] = child
        return Node(out, self.loc(node), tag=tag)


class _TooBig(Exception):
    pass


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__

