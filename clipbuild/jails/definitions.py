"""Jails: their definitions in jails/, resolved onto jails/_defaults.yaml, rendered from Jinja templates into
the /etc/jails/<name>/ directories vsctl reads (clipos4.md §5), with the trees they mount.

A jail file merges onto the defaults with the profiles' rules (clipbuild.spec.merge) and is validated by the same
schema engine, so every value keeps its file and line. Strings in the defaults may use {name}, {root_source}
and {priv}, replaced by the jail's own values. Templates render with undefined variables as errors, and every
value reaching a template has passed a pattern that forbids whitespace and newlines where a file is
line-oriented, so no jail file can smuggle an extra line into another.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2

from clipbuild.core.errors import InputError, Issue, Location, ProfileError
from clipbuild.core.project import Project
from clipbuild.jails.mountopts import Flags, effective, normal_path
from clipbuild.spec.merge import merge
from clipbuild.spec.schema import INVALID, Checker, Integer, ListOf, MapOf, Nullable, Struct, Text, nearest_origin, spec
from clipbuild.spec.yamlnodes import Node, load_file

DEFAULTS = "_defaults.yaml"
TEMPLATES = "templates"
# Files of /etc/jails/<name>/, each rendered from templates/<file>.j2.
FILES = ("context", "root", "addr", "cmd", "hostname", "bcaps", "ccaps", "cflags", "nflags", "nsopts",
         "fstab.internal", "fstab.external", "nscleanup", "veriexec.ctx", "veriexec.level", "ssh")

PATH = r"/([A-Za-z0-9._@{}-]+(/[A-Za-z0-9._@{}-]+)*)?"
WORD = Text("a word", r"[A-Za-z0-9_*/][A-Za-z0-9_.@=*/:-]*", "letters, digits and _ . @ = * / : -, no spaces")
CAP = Text("a capability name", r"[A-Z][A-Z_]*", "without CAP_, e.g. NET_BIND_SERVICE")
PSEUDO_SOURCES = {"tmpfs": "tmpfs", "proc": "proc"}  # mount sources that are not paths, with their type


def path_problem(path: str) -> str | None:
    """Why `path` is not an absolute path in its one spelling (see mountopts.normal_path), or None."""
    if path in PSEUDO_SOURCES:
        return None
    if ".." in path.split("/"):
        return "'..' is not allowed in a path"
    try:
        normal = normal_path(path)
    except InputError as exc:
        return str(exc)
    return None if normal == path else f"'{path}' is {normal} written another way: write {normal}"


ANY_PATH = r"/[A-Za-z0-9._@{}/-]*"  # spellings normal_path settles, refused with a precise message
PATH_TEXT = Text("an absolute path", ANY_PATH, "absolute, without spaces", validate=path_problem)
ADDR = Text("an address", r"\d{1,3}(\.\d{1,3}){3}/\d{1,3}(\.\d{1,3}){3}", "a.b.c.d/m.m.m.m")
LINE = Text("one line of text", r"[^\n\r]*[^\n\r ]|", "a single line")


@dataclass(frozen=True)
class Mount:
    src: str = spec(Text("a mount source", "|".join(PSEUDO_SOURCES) + "|" + ANY_PATH, "a path, tmpfs or proc",
                         validate=path_problem), "Host source (a path), tmpfs or proc.", required=True)
    dst: str = spec(PATH_TEXT, "Destination inside the jail.", required=True)
    type: str = spec(Text("a filesystem type", r"[a-z0-9]+"), "Filesystem type (none for bind).", default="none")
    options: tuple[str, ...] = spec(ListOf(WORD), "Mount options.", default=())
    kind: str = spec(Text("dir or file", r"dir|file"), "What the bind mounts: a directory, or a file (its mount "
                     "point in the jail is then an empty file). Not written to fstab.", default="dir")

    @property
    def flags(self) -> Flags:
        """What the kernel applies for the options (the last of each pair wins; `defaults` expanded)."""
        return effective(self.options)

    @property
    def writable(self) -> bool:
        return not self.flags.read_only

    def line(self) -> str:
        return f"{self.src} {self.dst} {self.type} {','.join(self.options) or 'defaults'} 0 0"


@dataclass(frozen=True)
class Veriexec:
    ctx: str = spec(LINE, "veriexec.ctx: <level> <caps> <privileges>.", default="")
    level: str = spec(WORD, "veriexec.level, e.g. active:enforce_mntro or lvl-up.", default="")


@dataclass(frozen=True)
class Ssh:
    addr: str = spec(Text("an IPv4 address", r"\d{1,3}(\.\d{1,3}){3}"), "Listening address.", required=True)
    port: int = spec(Integer(1), "Listening port.", required=True)
    host_key: str = spec(PATH_TEXT, "Host key path inside the jail.", default="/etc/ssh/ssh_host_ed25519_key")


@dataclass(frozen=True)
class Jail:
    name: str = spec(Text("a jail name", r"[a-z][a-z0-9_]*"), "The jail's name (its file name).", default="")
    description: str = spec(LINE, "What the jail is for.", default="")
    context: int = spec(Integer(1), "The context (xid, also used as nid).", default=0, required=True)
    root: str = spec(PATH_TEXT, "Where the jail's / is assembled on the host.", default="",
                    required=True)
    root_source: str = spec(PATH_TEXT, "The tree bound read-only as the jail's /.", default="",
                           required=True)
    priv: str = spec(PATH_TEXT, "The jail's private writable tree.", default="", required=True)
    addr: tuple[str, ...] = spec(ListOf(ADDR), "Network addresses, 1 to 4.", default=())
    cmd: str = spec(Text("a command", r"<invalid>|" + PATH + r"( [!-~]+)*", "<invalid>, or a path and its arguments "
                         "separated by single spaces"), "The command clip-jail's init runs in the jail.",
                    default="<invalid>")
    idle: str = spec(Text("a reason", r"([A-Za-z0-9(][A-Za-z0-9 ,.:;()/_-]*)?", "letters, digits, spaces and "
                          ",.:;()/_-"), "Non-empty: rendered but not started at boot, and why.", default="")
    hostname: str = spec(Text("a host name", r"[a-z0-9][a-z0-9_-]*"), "Host name.", default="")
    bcaps: tuple[str, ...] = spec(ListOf(CAP), "Capability bounding set.", default=())
    ccaps: tuple[str, ...] = spec(ListOf(WORD), "Context capabilities (util-vserver keywords).", default=())
    cflags: tuple[str, ...] = spec(ListOf(WORD), "Context flags.", default=())
    nflags: tuple[str, ...] = spec(ListOf(WORD), "Network flags.", default=())
    nsopts: tuple[str, ...] = spec(ListOf(Text("a namespace", r"pid|net|ipc|uts|mnt|user")), "Namespaces.",
                                   default=())
    nscleanup: tuple[str, ...] = spec(ListOf(WORD), "Paths unmounted from the jail's namespace.", default=())
    veriexec: Veriexec = spec(Struct(Veriexec), "CLIP veriexec settings.", default=Veriexec())
    ssh: Ssh | None = spec(Nullable(Struct(Ssh)), "SSH service of the jail (ADMIN, AUDIT).", default=None)
    mounts: tuple[Mount, ...] = spec(ListOf(Struct(Mount)), "fstab.external: host source to jail path.",
                                     default=())
    internal: tuple[Mount, ...] = spec(ListOf(Struct(Mount)), "fstab.internal: both under the jail root.",
                                       default=())
    justify: dict[str, str] = spec(MapOf(CAP, LINE), "Why the jail holds a denied capability.", default={})
    allow_exec: dict[str, str] = spec(MapOf(PATH_TEXT, LINE), "Writable mounts allowed without noexec, and why.",
                                      default={})
    origins: dict[str, Location] = field(default_factory=dict, compare=False, repr=False)

    def origin(self, key: str) -> Location | None:
        return nearest_origin(self.origins, key)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("origins")
        return data


JAIL_SCHEMA = Struct(Jail)


def _substitute(node: Node, values: dict[str, str]) -> Node:
    if node.is_map():
        return replace(node, value={k: _substitute(v, values) for k, v in node.value.items()})
    if node.is_list():
        return replace(node, value=[_substitute(v, values) for v in node.value])
    if isinstance(node.value, str) and "{" in node.value:
        text = node.value
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return replace(node, value=text)
    return node


def load(project: Project, name: str) -> Jail:
    """The jail `name` merged onto the defaults and validated; raises ProfileError with file and line."""
    issues: list[Issue] = []
    nodes = []
    for path in (project.jails_dir / DEFAULTS, project.jails_dir / f"{name}.yaml"):
        node, problems = load_file(path, project.display(path))
        issues += problems
        if node is not None:
            nodes.append(node)
    if issues or len(nodes) != 2:
        raise ProfileError(issues)
    merged = merge(merge(None, nodes[0], "", issues), nodes[1], "", issues)
    plain = merged.value
    values = {"name": name}
    for key in ("root_source", "priv"):
        raw = plain.get(key)
        values[key] = (raw.value if raw is not None and isinstance(raw.value, str) else "").replace("{name}", name)
    merged = _substitute(merged, values)
    merged.value["name"] = Node(name, Location(project.display(project.jails_dir / f"{name}.yaml"), 1))
    checker = Checker()
    jail = JAIL_SCHEMA.check(merged, "", checker)
    issues += [replace(i, key=f"{name}: {i.key}") for i in checker.issues]
    if issues or jail is INVALID:
        raise ProfileError(issues)
    return replace(jail, origins=checker.origins)


def load_all(project: Project, names: tuple[str, ...]) -> list[Jail]:
    """Every jail of a species; all problems of all jails at once."""
    jails, issues = [], []
    for name in names:
        try:
            jails.append(load(project, name))
        except ProfileError as exc:
            issues += exc.issues
    if issues:
        raise ProfileError(issues)
    return jails


def environment(project: Project) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(project.jails_dir / TEMPLATES),
                              undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class Rendered:
    files: dict[str, str]  # path under the image root -> content
    directories: tuple[str, ...]  # paths under the image root to create


def render(project: Project, jails: list[Jail], species: str) -> Rendered:
    try:
        return _render(project, jails, species)
    except jinja2.TemplateError as exc:
        where = f"{project.display(project.jails_dir / TEMPLATES / exc.name)}:{exc.lineno}" \
            if isinstance(exc, jinja2.TemplateSyntaxError) and exc.name else f"{project.jails_dir / TEMPLATES}"
        raise InputError(f"{where}: template error: {exc.message}") from None


def _render(project: Project, jails: list[Jail], species: str) -> Rendered:
    env = environment(project)
    files: dict[str, str] = {}
    directories: set[str] = set()
    for jail in jails:
        for name in FILES:
            if name == "ssh" and jail.ssh is None:
                continue
            files[f"etc/jails/{jail.name}/{name}"] = env.get_template(f"{name}.j2").render(jail=jail)
        for tree in (jail.root, jail.root_source, jail.priv, f"{jail.priv}/var", f"{jail.priv}/dev"):
            directories.add(tree.lstrip("/"))
        skeleton(jail, files, directories)
    files["etc/conf.d/jail-net"] = env.get_template("jail-net.j2").render(jails=jails, species=species)
    files["etc/conf.d/jails"] = env.get_template("jails.j2").render(jails=jails, species=species)
    directories.add("mounts/viewers")
    return Rendered(dict(sorted(files.items())), tuple(sorted(directories)))


# The writable /var every jail starts with (in its priv tree): sshd's empty privilege-separation directory,
# crond's spool, the usual places for state and logs.
VAR_SKELETON = ("empty", "lib", "log", "run", "spool/cron/crontabs")


def skeleton(jail: Jail, files: dict[str, str], directories: set[str]) -> None:
    """What the jail's mounts need to exist, so clip-jail never creates anything at boot: each bind's source, and
    each mount point inside the tree mounted above it when that tree is the jail's own (root_source or priv).
    A mount point inside a core tree (/usr/local in /usr) is the core's; clip-jail reports it if missing."""
    own = (jail.root_source, jail.priv)
    directories.update(f"{jail.priv}/var/{sub}".lstrip("/") for sub in VAR_SKELETON)
    directories.add(f"{jail.root_source}/proc".lstrip("/"))
    for index, mount in enumerate(jail.mounts):
        if mount.src.startswith("/") and mount.kind == "dir" and not mount.src.startswith("/run/"):
            directories.add(mount.src.lstrip("/"))  # /run is a tmpfs: what a jail binds from it is made at boot
        if index == 0:
            continue
        above = max((m for m in jail.mounts[:index] if (mount.dst + "/").startswith(m.dst.rstrip("/") + "/")),
                    key=lambda m: len(m.dst))
        base = above.src if above.src.startswith("/") else ""
        if not any(base == tree or base.startswith(tree + "/") for tree in own):
            continue
        point = f"{base}{mount.dst[len(above.dst.rstrip('/')):]}".lstrip("/")
        if mount.kind == "file":
            files[point] = ""
        else:
            directories.add(point)


def write(rendered: Rendered, out: Path) -> None:
    for directory in rendered.directories:
        (out / directory).mkdir(parents=True, exist_ok=True)
    for relative, content in rendered.files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        os.chmod(path, 0o644)


def to_json(jails: list[Jail]) -> str:
    return json.dumps([j.to_dict() for j in jails], indent=2, sort_keys=True)
