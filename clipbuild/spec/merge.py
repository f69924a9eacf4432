"""How a child profile merges onto its parents (docs/profiles.md, "Inheritance").

- Mappings deep-merge key by key.
- Scalars (and values whose type changes) are overridden by the child.
- Lists append the child's items after the inherited ones. A list item that is a mapping with a `name` equal
  to an inherited item's name merges into that item instead (partitions are overridden by name).
- `!remove ITEM` in a child's list removes the inherited item equal to ITEM (or named ITEM); removing what
  was not inherited is an error, so a typo cannot pass silently.
- `!replace` on a list or mapping drops the inherited value and takes the child's as written.
"""

from __future__ import annotations

from clipbuild.core.errors import Issue
from clipbuild.spec.yamlnodes import Node, join_path


def merge(parent: Node | None, child: Node, path: str, issues: list[Issue]) -> Node:
    """The child's value merged onto the parent's; problems are appended to `issues`."""
    if child.tag == "replace":
        return _strip(child, path, issues)
    if parent is None:
        return _strip(child, path, issues)
    if parent.is_map() and child.is_map():
        merged = dict(parent.value)
        for key, value in child.value.items():
            merged[key] = merge(parent.value.get(key), value, join_path(path, key), issues)
        return Node(merged, child.loc, child.key_loc)
    if parent.is_list() and child.is_list():
        return Node(_merge_lists(parent.value, child.value, path, issues), child.loc, child.key_loc)
    if child.tag == "remove":
        issues.append(Issue(child.loc, path, "!remove belongs on an item of a list",
                            "write `key: [!remove ITEM]`"))
    return child


def _merge_lists(inherited: list[Node], items: list[Node], path: str, issues: list[Issue]) -> list[Node]:
    """Inherited items (some removed or merged into), then the child's new items in its order. Only inherited
    items are merged into: two items of the same name written in one file stay two (and fail validation)."""
    result = list(inherited)
    appended: list[Node] = []
    for item in items:
        if item.tag == "remove":
            index = _find(result, item, by_value=True)
            if index is None:
                issues.append(Issue(item.loc, f"{path}[!remove {item.value}]", "removes nothing",
                                    f"'{item.value}' is not inherited; inherited: {_names(inherited)}"))
            else:
                del result[index]
            continue
        index = _find(result, item, by_value=False)
        if index is None:
            appended.append(_strip(item, path, issues))
        else:
            result[index] = merge(result[index], item, f"{path}[{_name(item)}]", issues)
    return result + appended


def _find(items: list[Node], probe: Node, *, by_value: bool) -> int | None:
    """Index of the inherited item `probe` designates: same name (mappings) or, for !remove, same value."""
    probe_name = _name(probe)
    for index, item in enumerate(items):
        name = _name(item)
        if probe_name is not None and name == probe_name and item.is_map():
            return index
        if by_value and not item.is_map() and item.value == probe.value:
            return index
        if by_value and item.is_map() and name == probe.value:
            return index
    return None


def _name(node: Node) -> str | None:
    if node.is_map():
        name = node.value.get("name")
        return name.value if name is not None and isinstance(name.value, str) else None
    return None


def _names(items: list[Node]) -> str:
    shown = [_name(i) or repr(i.plain()) for i in items]
    return ", ".join(str(s) for s in shown) or "nothing"


def _strip(node: Node, path: str, issues: list[Issue]) -> Node:
    """The node with merge tags resolved, when there is nothing to merge onto."""
    if node.is_map():
        value = {k: _strip(v, join_path(path, k), issues) for k, v in node.value.items()}
        return Node(value, node.loc, node.key_loc)
    if node.is_list():
        kept = []
        for item in node.value:
            if item.tag == "remove":
                issues.append(Issue(item.loc, f"{path}[!remove {item.value}]", "removes nothing",
                                    "there is no inherited list here"))
            else:
                kept.append(_strip(item, path, issues))
        return Node(kept, node.loc, node.key_loc)
    if node.tag == "replace":
        return node.untagged()
    return node
