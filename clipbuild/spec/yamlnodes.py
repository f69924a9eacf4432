"""YAML loaded into a small tree that remembers where every value was written.

Profiles are merged across files before they are validated, so each value keeps its own file and line: an error
about a value inherited from base.yaml points at base.yaml. Two tags are understood: `!remove ITEM` in a list
removes an inherited item, `!replace` on a list or map replaces the inherited value instead of merging.
Duplicate keys, other tags and non-string keys are errors (PyYAML would silently keep the last duplicate).

Hostile input gets an Issue, never a traceback or a hang (docs/profiles.md, "What is refused"): only regular
files are read (a FIFO, a device, a directory or a dangling link is refused before it is opened for reading),
at most MAX_BYTES of them; nesting deeper than MAX_DEPTH, more than MAX_NODES nodes (alias bombs), tags other
than YAML's plain ones (`!!python/...`, `!!binary`, `!!set`...), `<<` merge keys (they hide where a value comes
from) and integers longer than MAX_INT_DIGITS are refused.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from clipbuild.core.errors import Issue, Location

TAGS = ("!remove", "!replace")
MAX_NODES = 100_000  # guards against alias bombs
MAX_DEPTH = 64  # profiles nest 5 deep; PyYAML's composer (and everything after it) recurses per level
MAX_BYTES = 1 << 20  # a profile or jail file is a few KiB
MAX_INT_DIGITS = 40  # Python refuses to convert integers of more than 4300 digits; none of ours needs 40
YAML_TAG = "tag:yaml.org,2002:"
PLAIN_SCALAR_TAGS = {YAML_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
MERGE_TAG = YAML_TAG + "merge"
COLLECTION_TAGS = {"mapping": YAML_TAG + "map", "sequence": YAML_TAG + "seq"}


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


def read_text(path: Path, display: str) -> tuple[str | None, list[Issue]]:
    """The UTF-8 text of the regular file `path`, or the Issue saying why it cannot be read. The file's type is
    checked before it is opened (a FIFO would block an open for reading) and again on the open descriptor."""
    problem = _not_a_file(path)
    if problem:
        return None, [Issue(Location(display), "", problem)]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None, [Issue(Location(display), "", "not a regular file (it changed while being read)")]
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        return None, [Issue(Location(display), "", f"cannot read: {exc.strerror}")]
    if len(data) > MAX_BYTES:
        return None, [Issue(Location(display), "", f"larger than {MAX_BYTES >> 20} MiB: not a profile",
                            "profiles and jail definitions are a few KiB of YAML")]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, [Issue(Location(display, line), "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]


def _not_a_file(path: Path) -> str | None:
    """Why `path` is not a regular file clipbuild may read (None when it is one), without opening it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a dangling symbolic link (to {_link_target(path)})"
        return "does not exist"
    except OSError as exc:  # ELOOP, EACCES, ENAMETOOLONG, ENOTDIR
        return f"cannot read: {exc.strerror}"
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"{kind}, not a regular file"


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def load_file(path: Path, display: str) -> tuple[Node | None, list[Issue]]:
    """Load `path`; errors name `display` (the path as the user should see it)."""
    text, issues = read_text(path, display)
    if text is None:
        return None, issues
    return load_text(text, display)


class _TooDeep(Exception):
    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


class _TooBig(Exception):
    pass


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with a bound on nesting: its composer recurses once per level."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:  # type: ignore[override]
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self.depth -= 1


def load_text(text: str, display: str) -> tuple[Node | None, list[Issue]]:
    try:
        root = yaml.compose(text, Loader=_Loader)
        if root is None:
            return Node({}, Location(display, 1)), []
        converter = _Converter(display)
        return converter.convert(root), converter.issues
    except _TooDeep as exc:
        return None, [Issue(Location(display, exc.line), "", f"nested more than {MAX_DEPTH} levels deep",
                            "profiles nest a few levels; a recursive alias nests forever")]
    except _TooBig:
        return None, [Issue(Location(display), "", f"more than {MAX_NODES} YAML nodes (alias expansion?)")]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        what = exc.problem or exc.context or "invalid YAML"
        return None, [Issue(Location(display, line), "", f"YAML syntax error: {what}")]
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        line = text.count("\n", 0, exc.position) + 1
        return None, [Issue(Location(display, line), "", f"character #x{char:04x} is not allowed in YAML")]
    except yaml.YAMLError as exc:
        return None, [Issue(Location(display), "", f"YAML error: {exc}")]


# Scalars kept as the text written: timestamps (no key wants a date, and `2024-99-99` would not construct),
# and `=` or `<<` written as values (PyYAML resolves them to tags it cannot construct).
TEXT_TAGS = {YAML_TAG + t for t in ("str", "timestamp", "value", "merge")}
CONSTRUCTED_TAGS = {YAML_TAG + t for t in ("int", "float", "bool", "null")}
KIND_TAGS = {yaml.MappingNode: {YAML_TAG + "map"}, yaml.SequenceNode: {YAML_TAG + "seq"},
             yaml.ScalarNode: TEXT_TAGS | CONSTRUCTED_TAGS}


class _Converter:
    def __init__(self, display: str):
        self.display = display
        self.issues: list[Issue] = []
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def loc(self, node: yaml.Node) -> Location:
        return Location(self.display, node.start_mark.line + 1)

    def refuse(self, node: yaml.Node, message: str, hint: str = "", key: str = "") -> None:
        self.issues.append(Issue(self.loc(node), key, message, hint))

    def convert(self, node: yaml.Node, depth: int = 1, path: str = "") -> Node:
        """`node` as a Node; `path` is its key path (portage.use[2]), for the issues found in it."""
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig()
        if depth > MAX_DEPTH:  # only an alias of its own ancestor gets here: the composer bounds the rest
            raise _TooDeep(node.start_mark.line + 1)
        if not self._tag_allowed(node, path):
            return Node(None, self.loc(node))
        tag = node.tag[1:] if node.tag in TAGS else None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, tag, depth, path)
        if isinstance(node, yaml.SequenceNode):
            items = [self.convert(n, depth + 1, f"{path}[{i}]") for i, n in enumerate(node.value)]
            return Node(items, self.loc(node), tag=tag)
        return Node(self._scalar(node, path), self.loc(node), tag=tag)

    def _tag_allowed(self, node: yaml.Node, path: str) -> bool:
        """Local tags other than ours are reported and ignored; global ones must be YAML's plain ones."""
        if node.tag.startswith("!"):
            if node.tag not in TAGS:
                self.refuse(node, f"unknown YAML tag {node.tag}", "clipbuild understands !remove and !replace", path)
            return True
        if node.tag in KIND_TAGS.get(type(node), set()):
            return True
        shown = "!!" + node.tag.removeprefix(YAML_TAG) if node.tag.startswith(YAML_TAG) else node.tag
        self.refuse(node, f"YAML tag {shown} is not allowed",
                    "profiles hold plain strings, numbers, booleans, lists and mappings", path)
        return False

    def _scalar(self, node: yaml.ScalarNode, path: str) -> Any:
        tag = node.tag
        if tag.startswith("!"):  # a local tag: the value is read as if untagged
            tag = _Loader.resolve(_Loader, yaml.ScalarNode, node.value,  # type: ignore[arg-type]
                                  (node.style is None, False))
        if tag in TEXT_TAGS:
            return node.value
        if tag == YAML_TAG + "int" and len(node.value) > MAX_INT_DIGITS:
            self.refuse(node, f"a number of {len(node.value)} characters is too large",
                        f"numbers here have at most {MAX_INT_DIGITS} digits", path)
            return None
        plain = yaml.ScalarNode(tag, node.value, node.start_mark, node.end_mark, node.style)
        try:
            return self.constructor.construct_object(plain, deep=True)
        except (ValueError, LookupError, ArithmeticError, yaml.YAMLError):
            self.refuse(node, f"'{_short(node.value)}' is not a valid {tag.removeprefix(YAML_TAG)}", key=path)
            return None

    def _mapping(self, node: yaml.MappingNode, tag: str | None, depth: int, path: str) -> Node:
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key_loc = self.loc(key_node)
            if key_node.tag == MERGE_TAG:
                self.refuse(key_node, "YAML merge keys are not allowed",
                            "they hide where a value comes from: write the keys out, or use inherits",
                            join_path(path, "<<"))
                continue
            reported = len(self.issues)
            key = self._key(key_node, depth, path)
            if not isinstance(key, str):
                if len(self.issues) == reported:  # a refused tag was reported already
                    self.refuse(key_node, f"keys must be strings, not {_describe(key_node, key)}", key=path)
                continue
            if key in out:
                self.issues.append(Issue(key_loc, join_path(path, key), "duplicate key",
                                         f"first written on line {out[key].where.line}"))
                continue
            child = self.convert(value_node, depth + 1, join_path(path, key))
            child.key_loc = key_loc
            out[key] = child
        return Node(out, self.loc(node), tag=tag)

    def _key(self, key_node: yaml.Node, depth: int, path: str) -> Any:
        if not isinstance(key_node, yaml.ScalarNode):
            return key_node
        return self.convert(key_node, depth + 1, path).value


def _describe(node: yaml.Node, value: Any) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "null" if value is None else type(value).__name__


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def join_path(path: str, key: str) -> str:
    """The key path of `key` below `path`: join_path("disk", "size") == "disk.size"."""
    return f"{path}.{key}" if path else key
