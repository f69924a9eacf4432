"""A small schema engine: validate a located YAML tree into frozen dataclasses, collecting every problem.

The schema *is* the dataclasses: each field is declared with `spec(TYPE, doc)`, so one definition gives the
resolved data type, the validation rules and the documentation (docs/profiles.md is tested against it).
Validation never stops at the first problem: an invalid optional value falls back to its default, an invalid
required one drops its parent, and every problem becomes an Issue with file, line and key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field
from typing import Any

from clipbuild.core.errors import Issue, Location
from clipbuild.core.sizes import SizeError, parse_size
from clipbuild.spec.yamlnodes import Node, join_path


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()


def spec(type_: Type, doc: str, *, default: Any = MISSING, required: bool = False) -> Any:
    """A dataclass field carrying its schema type and documentation."""
    meta = {"schema": type_, "doc": doc, "required": required}
    if default is MISSING:
        return field(metadata=meta)
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Checker:
    """Collects issues and the location of every accepted value (by key path)."""

    issues: list[Issue] = field(default_factory=list)
    origins: dict[str, Location] = field(default_factory=dict)  # every key path written, valid or not
    invalid: set[str] = field(default_factory=set)  # key paths whose value was rejected

    def problem(self, node: Node | None, path: str, message: str, hint: str = "", *,
                at_key: bool = False) -> Any:
        loc = None if node is None else (node.where if at_key else node.loc)
        self.issues.append(Issue(loc, path, message, hint))
        self.invalid.add(path)
        return INVALID


def nearest_origin(origins: dict[str, Location], path: str) -> Location | None:
    """Where the value at key path `path` was written: its own origin, else its nearest written ancestor's."""
    while path:
        if path in origins:
            return origins[path]
        path = path.rsplit(".", 1)[0] if "." in path else ""
    return None


def describe(value: Any) -> str:
    """A value as a user would call it in a message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"the string '{value}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


class Type:
    """Base of schema types. `what` names the expected value in messages and docs."""

    what = "a value"

    def check(self, node: Node, path: str, ck: Checker) -> Any:
        raise NotImplementedError

    def wrong_type(self, node: Node, path: str, ck: Checker, hint: str = "") -> Any:
        return ck.problem(node, path, f"expected {self.what}, got {describe(node.value)}", hint)

    def children(self) -> Iterator[tuple[str, Type]]:
        """(suffix, type) pairs below this type, for documentation coverage."""
        return iter(())


@dataclass
class Text(Type):
    what: str = "a string"
    pattern: str | None = None
    hint: str = ""
    validate: Callable[[str], str | None] | None = None  # returns an error message or None

    def check(self, node: Node, path: str, ck: Checker) -> Any:
        value = node.value
        if not isinstance(value, str):
            hint = f"quote it: \"{value}\"" if isinstance(value, int | float) and not isinstance(
                value, bool) else self.hint
            return self.wrong_type(node, path, ck, hint)
        if self.pattern and not re.fullmatch(self.pattern, value):
            return ck.problem(node, path, f"'{value}' is not {self.what}", self.hint)
        if self.validate and (message := self.validate(value)):
            return ck.problem(node, path, message, self.hint)
        return value


@dataclass
class Choice(Type):
    choices: tuple[str, ...] = ()

    @property
    def what(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(self.choices)

    def check(self, node: Node, path: str, ck: Checker) -> Any:
        value = node.value
        if not isinstance(value, str):
            return self.wrong_type(node, path, ck)
        if value not in self.choices:
            hint = suggest(value, self.choices) or f"choose one of: {', '.join(self.choices)}"
            return ck.problem(node, path, f"'{value}' is not allowed here", hint)
        return value


class Flag(Type):
    what = "true or false"

    def check(self, node: Node, path: str, ck: Checker) -> Any:
        return node.value if isinstance(node.value, bool) else self.wrong_type(node, path, ck)


@dataclass
class Integer(Type):
    minimum: int = 0
    what: str = "a whole number"
    maximum: int = 2**31 - 1

    def check(self, node: Node, path: str, ck: Checker) -> Any:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            return self.wrong_type(node, path, ck)
        if value < self.minimum:
            return ck.problem(node, path, f"{value} is below the minimum {self.minimum}")
        if value > self.maximum:
            return ck.problem(node, path, f"{value} is above the maximum {self.maximum}")
        return value


class Size(Type):
    what = "a size (512MiB, 2GiB)"

    def check(self, node: Node, path: str, ck: Checker) -> Any:
        try:
            size = parse_size(node.value)
        except SizeError as exc:
            return ck.problem(node, path, str(exc), exc.hint)
        if size == 0:
            return ck.problem(node, path, "a size of zero", "sizes must be positive")
        return size


@dataclass
class Nullable(Type):
    inner: Type = field(default_factory=Text)

    @property
    def what(self) -> str:  # type: ignore[override]
        return f"{self.inner.what} or null"

    def check(self, node: Node, path: str, ck: Checker) -> Any:
        return None if node.value is None else self.inner.check(node, path, ck)

    def children(self) -> Iterator[tuple[str, Type]]:
        yield "", self.inner


@dataclass
class ListOf(Type):
    item: Type = field(default_factory=Text)
    accept_scalar: bool = False  # `inherits: base` means `inherits: [base]`

    @property
    def what(self) -> str:  # type: ignore[override]
        return f"a list of {_plural(self.item.what)}"

    def check(self, node: Node, path: str, ck: Checker) -> Any:
        if self.accept_scalar and not node.is_list() and not node.is_map():
            items = [node.untagged()]
        elif node.is_list():
            items = node.value
        else:
            return self.wrong_type(node, path, ck)
        out = []
        for index, child in enumerate(items):
            sub = f"{path}[{_item_name(child, index)}]"
            ck.origins[sub] = child.loc
            value = self.item.check(child, sub, ck)
            if value is not INVALID:
                out.append(value)
        return tuple(out)

    def children(self) -> Iterator[tuple[str, Type]]:
        yield "[]", self.item


@dataclass
class MapOf(Type):
    key: Text = field(default_factory=Text)
    value: Type = field(default_factory=Text)

    @property
    def what(self) -> str:  # type: ignore[override]
        return f"a mapping of {self.key.what} to {self.value.what}"

    def check(self, node: Node, path: str, ck: Checker) -> Any:
        if not node.is_map():
            return self.wrong_type(node, path, ck)
        out = {}
        for name, child in node.value.items():
            key_node = Node(name, child.where)
            sub = f"{path}.{name}"
            ck.origins[sub] = child.where
            key = self.key.check(key_node, sub, ck)
            value = self.value.check(child, sub, ck)
            if key is not INVALID and value is not INVALID:
                out[key] = value
        return out

    def children(self) -> Iterator[tuple[str, Type]]:
        yield ".*", self.value


@dataclass
class Struct(Type):
    """A mapping with fixed keys, validated into the dataclass `cls`."""

    cls: type = object
    shorthand: str | None = None  # a list given instead of the mapping fills this field
    what: str = "a mapping"

    def fields(self) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(self.cls) if "schema" in f.metadata]

    def check(self, node: Node, path: str, ck: Checker) -> Any:
        if self.shorthand and node.is_list():
            node = Node({self.shorthand: node}, node.loc, node.key_loc)
        if not node.is_map():
            return self.wrong_type(node, path, ck)
        known = {f.name: f for f in self.fields()}
        for key, child in node.value.items():
            if key not in known:
                ck.problem(child, join_path(path, key), "unknown key", suggest(key, list(known)), at_key=True)
        kwargs: dict[str, Any] = {}
        broken = False
        for name, fld in known.items():
            sub = join_path(path, name)
            child = node.value.get(name)
            if child is None:
                if fld.metadata["required"]:
                    ck.problem(node, sub, "missing", f"{fld.metadata['doc'].split('.')[0].lower()}",
                               at_key=True)
                    broken = True
                continue
            ck.origins[sub] = child.where
            value = fld.metadata["schema"].check(child, sub, ck)
            if value is INVALID:
                broken = broken or fld.metadata["required"]
                continue
            kwargs[name] = value
        return INVALID if broken else self.cls(**kwargs)

    def children(self) -> Iterator[tuple[str, Type]]:
        for fld in self.fields():
            yield f".{fld.name}", fld.metadata["schema"]


def key_paths(type_: Type, prefix: str = "") -> Iterator[tuple[str, Type]]:
    """Every documented key path below `type_`, e.g. 'disk.partitions[].size'."""
    for suffix, child in type_.children():
        path = (prefix + suffix).lstrip(".")
        if suffix.startswith("."):
            yield path, child
        yield from key_paths(child, prefix + suffix)


def _item_name(node: Node, index: int) -> str:
    """List items that are mappings with a name are shown by name: partitions[root]."""
    if node.is_map() and isinstance(getattr(node.value.get("name"), "value", None), str):
        return node.value["name"].value
    return str(index)


def _plural(what: str) -> str:
    """'a package atom' -> 'package atoms', 'a path inside the project' -> 'paths inside the project'."""
    for article in ("a ", "an "):
        if what.startswith(article):
            words = what[len(article):].split(" ")
            stop = next((i for i, w in enumerate(words) if w in {"inside", "of", "to", "or"} or w.startswith("(")),
                        len(words))
            words[stop - 1] += "" if words[stop - 1].endswith("s") else "s"
            return " ".join(words)
    return f"items, each {what}"
