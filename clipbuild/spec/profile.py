"""Species profiles: find them, resolve their inheritance, validate them into a `Profile`.

Resolution runs in layers and reports every problem at once, each with file, line and key path:
1. each file is parsed (YAML syntax, duplicate keys, tags);
2. `inherits` is linearised (parents first, each file once) with missing parents and cycles reported;
   Parents are plain names of files beside the profile (profiles/NAME.yaml): a path, absolute or with '..',
   is refused, and so is a file that resolves (through symbolic links) outside that folder;
3. the files are merged in that order (clipbuild.spec.merge), then the merged tree is checked against the schema
   (clipbuild.spec.model), then the named semantic checks run (clipbuild.spec.checks).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from clipbuild.core.errors import Issue, Location, ProfileError
from clipbuild.core.project import Project
from clipbuild.spec.checks import run_checks
from clipbuild.spec.merge import merge
from clipbuild.spec.model import PROFILE_SCHEMA, Profile
from clipbuild.spec.schema import INVALID, Checker
from clipbuild.spec.yamlnodes import Node, load_file

NOT_INHERITED = ("species", "abstract", "inherits")
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class ProfileFile:
    name: str
    path: Path
    display: str
    node: Node


class _Linearizer:
    """Loads a profile and its ancestors, parents before children, each file once."""

    def __init__(self, project: Project, directory: Path):
        self.project = project
        self.directory = directory
        self.inside = _real(directory)
        self.issues: list[Issue] = []
        self.order: list[ProfileFile] = []
        self._done: set[Path] = set()

    def visit(self, path: Path, stack: tuple[str, ...] = ()) -> None:
        display = self.project.display(path)
        real = _real(path)
        if real in self._done:
            return
        if real is None or self.inside is None or not real.is_relative_to(self.inside):
            folder = self.project.display(self.directory)
            where = "cannot be resolved (a symbolic link loop)" if real is None else f"resolves to {real}"
            self.issues.append(Issue(Location(display), "", f"{where}, outside {folder}/",
                                     "profiles are files of that folder, not links out of it"))
            return
        self._done.add(real)
        node, issues = load_file(path, display)
        path = real
        self.issues.extend(issues)
        if node is None:
            return
        if not node.is_map():
            self.issues.append(Issue(node.loc, "", "a profile must be a mapping of keys",
                                     "start with `species: NAME` or `inherits: base`"))
            return
        name = path.stem
        for parent, where in self._parents(node):
            chain = (*stack, name)
            if parent in chain:
                cycle = " -> ".join((*chain[chain.index(parent):], parent))
                self.issues.append(Issue(where, "inherits", f"inheritance cycle: {cycle}",
                                         f"remove '{parent}' from the inherits of {name}"))
                continue
            if refusal := self._name_problem(parent):
                self.issues.append(Issue(where, "inherits", *refusal))
                continue
            parent_path = self.directory / f"{parent}.yaml"
            if not os.path.lexists(parent_path):
                known = sorted(p.stem for p in self.directory.glob("*.yaml"))
                close = difflib.get_close_matches(parent, known, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"profiles there: {', '.join(known) or 'none'}"
                self.issues.append(Issue(where, "inherits", f"no parent profile '{parent}' "
                                         f"({self.project.display(parent_path)} does not exist)", hint))
                continue
            self.visit(parent_path, chain)
        self.order.append(ProfileFile(name, path, display, node))

    def _name_problem(self, parent: str) -> tuple[str, str] | None:
        """Why `parent` is not the plain name of a profile beside this one (message, hint), or None."""
        folder = self.project.display(self.directory)
        if "/" in parent or parent.startswith("."):
            return (f"'{parent}' reaches outside {folder}/: parents are named, not given as paths",
                    f"name a profile of {folder}/ by its file name without .yaml, e.g. inherits: base")
        if not PROFILE_NAME.fullmatch(parent):
            return (f"'{parent}' is not a profile name",
                    "letters, digits, - and _: the file name without .yaml, e.g. inherits: base")
        return None

    def _parents(self, node: Node) -> list[tuple[str, Location]]:
        inherits = node.value.get("inherits")
        if inherits is None:
            return []
        items = inherits.value if inherits.is_list() else [inherits]
        # Wrong types are reported by the schema pass; only strings are followed.
        return [(item.value, item.loc) for item in items if isinstance(item.value, str)]


def resolve_path(project: Project, path: Path) -> Profile:
    """Resolve the profile in `path` (parents are looked up beside it); raise ProfileError on any problem."""
    profile, issues = _resolve(project, path)
    if issues or profile is None:
        raise ProfileError(issues)
    return profile


def resolve(project: Project, species: str) -> Profile:
    return resolve_path(project, species_path(project, species))


def species_path(project: Project, species: str) -> Path:
    if not PROFILE_NAME.fullmatch(species):
        raise ProfileError([Issue(Location(project.display(project.profiles_dir)), "",
                                  f"'{species}' is not a species name", "a file name of it, without .yaml")])
    path = project.profiles_dir / f"{species}.yaml"
    if not os.path.lexists(path):
        known = [p.stem for p in project.species_files()]
        close = difflib.get_close_matches(species, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"species: {', '.join(known) or 'none'}"
        raise ProfileError([Issue(Location(project.display(path)), "", f"no species '{species}'", hint)])
    return path


def _resolve(project: Project, path: Path) -> tuple[Profile | None, list[Issue]]:
    path = path.absolute()
    lin = _Linearizer(project, path.parent)
    lin.visit(path)
    if not lin.order or lin.order[-1].path != _real(path):
        return None, lin.issues
    issues = list(lin.issues)
    merged: Node | None = None
    for index, pfile in enumerate(lin.order):
        node = pfile.node
        if index < len(lin.order) - 1:
            node = Node({k: v for k, v in node.value.items() if k not in NOT_INHERITED}, node.loc)
        merged = merge(merged, node, "", issues)
    assert merged is not None
    checker = Checker()
    profile = PROFILE_SCHEMA.check(merged, "", checker)
    issues.extend(checker.issues)
    if profile is INVALID:
        return None, issues
    own = lin.order[-1]
    if not profile.species:
        profile = replace(profile, species=own.name)
    elif profile.species != own.name:
        issues.append(Issue(checker.origins.get("species"), "species",
                            f"'{profile.species}' does not match the file name {own.path.name}",
                            f"rename the file to {profile.species}.yaml or write species: {own.name}"))
    profile = replace(profile, files=tuple(p.display for p in lin.order), origins=checker.origins,
                      invalid=frozenset(checker.invalid))
    if not lin.issues:  # with a parent missing, the profile is incomplete: semantic checks would mislead
        issues.extend(run_checks(profile, project))
    return profile, issues


@dataclass(frozen=True)
class ProfileSummary:
    species: str
    description: str
    abstract: bool
    inherits: tuple[str, ...]
    version: str
    path: str
    problems: int


def list_profiles(project: Project) -> list[ProfileSummary]:
    """Every profile in profiles/, resolved; broken ones are listed with their number of problems."""
    out = []
    for path in project.species_files():
        profile, issues = _resolve(project, path)
        if profile is None:
            out.append(ProfileSummary(path.stem, "", False, (), "", project.display(path), len(issues)))
            continue
        out.append(ProfileSummary(profile.species, profile.description, profile.abstract, profile.inherits,
                                  profile.version, project.display(path), len(issues)))
    return out


def validate_paths(project: Project, paths: list[Path]) -> dict[str, list[Issue]]:
    """Problems per file (an empty list for a valid one)."""
    return {project.display(p): _resolve(project, p)[1] for p in paths}


def _real(path: Path) -> Path | None:
    """`path` with every symbolic link resolved; None for a link loop (Python 3.11 raises RuntimeError)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None

