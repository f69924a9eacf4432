"""Gentoo names, versions and dependencies as CLIP OS 4's gencontrol.pl mapped them to Debian's (clipos4.md §1.6).

- name: PN with `_` -> `-`, lower case (plus DEB_NAME_SUFFIX);
- version: PVR with the underscore of a suffix dropped: `4.2_p48-r1` -> `4.2p48-r1`;
- dependencies: USE conditionals resolved against the package's USE; category, `[use]` and `:slot` dropped;
  `>` -> `>>`, `<` -> `<<`, `~` or a trailing `*` -> `>=`, `>=`, `<=` and `=` kept; `!` atoms become
  Conflicts; `|| ( a b )` becomes `a | b`. Items are joined with `, `.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from portage.dep import Atom, use_reduce
from portage.versions import catpkgsplit

OPERATORS = {">": ">>", "<": "<<", ">=": ">=", "<=": "<=", "=": "=", "~": ">="}


def deb_name(pn: str, suffix: str = "") -> str:
    return pn.replace("_", "-").lower() + suffix


def deb_version(pvr: str) -> str:
    """`4.2_p48-r1` -> `4.2p48-r1`: CLIP dropped the underscore of Gentoo suffixes."""
    return pvr.replace("_", "")


def _relation(atom: Atom) -> str:
    name = deb_name(atom.cp.split("/", 1)[1])
    operator = atom.operator
    if operator is None:
        return name
    version = atom.cpv.split("/", 1)[1][len(atom.cp.split("/", 1)[1]) + 1:]
    if operator == "=*":
        return f"{name} (>= {deb_version(version)})"
    return f"{name} ({OPERATORS[operator]} {deb_version(version)})"


@dataclass(frozen=True)
class Relations:
    depends: tuple[str, ...]
    conflicts: tuple[str, ...]


def relations(dependency: str, use: Sequence[str]) -> Relations:
    """Depends and Conflicts for a Portage dependency string under `use`."""
    tree = use_reduce(dependency, uselist=list(use), token_class=Atom, eapi="8")
    depends: list[str] = []
    conflicts: list[str] = []

    def walk(items: list, in_any_of: bool = False) -> None:
        index = 0
        while index < len(items):
            item = items[index]
            if item == "||":
                choices = [c for c in _flatten(items[index + 1]) if not c.blocker]
                depends.append(" | ".join(dict.fromkeys(_relation(c) for c in choices)))
                index += 2
                continue
            if isinstance(item, list):
                walk(item, in_any_of)
            elif item.blocker:
                conflicts.append(_relation(Atom(str(item).lstrip("!"))))
            else:
                depends.append(_relation(item))
            index += 1

    walk(tree)
    return Relations(tuple(dict.fromkeys(depends)), tuple(dict.fromkeys(conflicts)))


def _flatten(items: list | Atom) -> list[Atom]:
    if isinstance(items, Atom):
        return [items]
    out: list[Atom] = []
    for item in items:
        if isinstance(item, list):
            out += _flatten(item)
        elif item != "||":
            out.append(item)
    return out


def split_pf(pf: str, category: str) -> tuple[str, str]:
    """(PN, PVR) of a PF."""
    _category, pn, version, revision = catpkgsplit(f"{category}/{pf}")
    return pn, version if revision == "r0" else f"{version}-{revision}"


def relation_names(field: str) -> list[list[str]]:
    """A Debian relation field read back (Depends, Pre-Depends, Provides): per comma-separated clause, the package
    names of its alternatives, version and architecture qualifiers dropped; empty clauses left out.
    "a (>= 1), b:amd64 | c" -> [["a"], ["b", "c"]]."""
    clauses = []
    for clause in field.split(","):
        names = [re.split(r"[\s(:]", alt.strip(), maxsplit=1)[0] for alt in clause.split("|")]
        if names := [n for n in names if n]:
            clauses.append(names)
    return clauses
