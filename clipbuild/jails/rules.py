"""CLIP's isolation rules, checked on every jail render (jails/_policy.yaml holds the tunable parts).

- contexts and addresses are unique across the species' jails;
- a jail is made of the trees the policy names for it (root, root_source, priv), and no two jails share or
  nest trees;
- mounts[0] binds the jail's root_source read-only on its /; no other mount lands on /;
- option lists are read as mount applies them (mountopts): one that states both sides of a pair is refused;
- every writable mount is nosuid, nodev and noexec, except a destination the jail's `allow_exec` names with a
  reason (then still nosuid and nodev); those exceptions are printed with every check;
- capabilities are Linux capabilities, and none of the deny list unless the jail's `justify` says why;
- mount sources lie in the trees the policy names (for every jail, or granted to this one) or the jail's priv,
  and a path source is a bind (type none), never a filesystem the host would mount from a device node;
  every path is checked in its normal form (mountopts.normal_path), and `..` is refused.
Each problem names the jail, the file and line where the value was written, and the rule.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import yaml

from clipbuild.core.errors import InputError, Issue
from clipbuild.core.project import Project
from clipbuild.jails import realisable
from clipbuild.jails.definitions import PSEUDO_SOURCES, Jail, Mount
from clipbuild.jails.mountopts import Flags, contradictions, inside, normal_path, overlap

POLICY = "_policy.yaml"
# include/uapi/linux/capability.h, Linux 6.1.
KERNEL_CAPS = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE")
HARDENING = ("nosuid", "nodev", "noexec")
OWN_TREES = ("root", "root_source", "priv")
# The host's own directories: no jail tree is one of them (a jail named etc would otherwise live on /etc).
HOST_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
             "/mounts", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var",
             "/vservers")
POLICY_KEYS = ("deny_caps", "jail_trees", "source_trees", "read_only_trees", "grants", "internal_trees")


@dataclass(frozen=True)
class JailPolicy:
    deny_caps: tuple[str, ...]
    jail_trees: dict[str, tuple[str, ...]]  # root, root_source, priv -> the trees allowed ({name} = the jail's)
    source_trees: tuple[str, ...]  # fstab.external sources any jail may use
    read_only_trees: tuple[str, ...]  # sources (the core's verity trees) a jail may only bind read-only
    grants: dict[str, tuple[str, ...]]  # jail -> further fstab.external sources only it may use
    internal_trees: tuple[str, ...]  # fstab.internal sources (inside the jail's root)

    def own_trees(self, key: str, jail: str) -> tuple[str, ...]:
        return _named(self.jail_trees.get(key, ()), jail)

    def sources(self, jail: str) -> tuple[str, ...]:
        return _named((*self.source_trees, *self.grants.get(jail, ())), jail)


def _named(trees: tuple[str, ...], jail: str) -> tuple[str, ...]:
    return tuple(tree.replace("{name}", jail) for tree in trees)


def load_policy(project: Project) -> JailPolicy:
    path = project.jails_dir / POLICY
    where = project.display(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise InputError(f"{where}: nested too deeply") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{where}: {exc}") from None
    if not isinstance(data, dict) or set(data) != set(POLICY_KEYS):
        raise InputError(f"{where}: needs exactly {', '.join(POLICY_KEYS)}")
    deny_caps = _words(data, "deny_caps", f"{where}: ")
    unknown = [c for c in deny_caps if c not in KERNEL_CAPS]
    if unknown:
        raise InputError(f"{where}: deny_caps: {', '.join(unknown)} are not Linux capabilities")
    jail_trees = _mapping(data, "jail_trees", where)
    if set(jail_trees) != set(OWN_TREES):
        raise InputError(f"{where}: jail_trees: needs exactly {', '.join(OWN_TREES)}")
    grants = _mapping(data, "grants", where)
    return JailPolicy(deny_caps, {k: _paths(jail_trees, k, f"{where}: jail_trees.") for k in OWN_TREES},
                      _paths(data, "source_trees", f"{where}: "), _paths(data, "read_only_trees", f"{where}: "),
                      {k: _paths(grants, k, f"{where}: grants.") for k in grants},
                      _paths(data, "internal_trees", f"{where}: "))


def _mapping(data: dict, key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InputError(f"{where}: {key}: needs a mapping")
    return value


def _words(data: dict, key: str, prefix: str) -> tuple[str, ...]:
    """data[key], a list of strings; `prefix` (file and parent keys) leads the message otherwise."""
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{prefix}{key}: needs a list of strings")
    return tuple(value)


def _paths(data: dict, key: str, prefix: str) -> tuple[str, ...]:
    """data[key], a list of trees below / in their normal form ({name} stands for a jail's name)."""
    paths = _words(data, key, prefix)
    for path in paths:
        spelled = path.replace("{name}", "name")
        try:
            normal = normal_path(spelled)
        except InputError as exc:
            raise InputError(f"{prefix}{key}: {exc}") from None
        if normal != spelled or normal == "/":
            raise InputError(f"{prefix}{key}: {path} is not a tree below / in its normal form")
    return paths


@dataclass(frozen=True)
class ExecException:
    jail: str
    destination: str
    reason: str

    def __str__(self) -> str:
        return f"{self.jail}: {self.destination} is writable and executable: {self.reason}"


def _issue(jail: Jail, key: str, message: str, hint: str = "") -> Issue:
    return Issue(jail.origin(key), f"jail {jail.name}: {key}", message, hint)


def check(jails: list[Jail], policy: JailPolicy) -> tuple[list[Issue], list[ExecException]]:
    """Every rule on every jail: (problems, the allowed writable-and-executable mounts)."""
    issues = _unique(jails) + _separate_trees(jails)
    exceptions: list[ExecException] = []
    for jail in jails:
        issues += _own_trees(jail, policy)
        issues += _root_mount(jail)
        found, allowed = _mounts(jail, policy)
        issues += found
        exceptions += allowed
        issues += _capabilities(jail, policy)
        issues += realisable.check(jail)
        if not 1 <= len(jail.addr) <= 4:
            issues.append(_issue(jail, "addr", f"{len(jail.addr)} addresses; vsctl takes 1 to 4"))
    return issues, exceptions


def _unique(jails: list[Jail]) -> list[Issue]:
    issues = []
    owners: dict[str, list[Jail]] = defaultdict(list)
    for jail in jails:
        owners[f"context {jail.context}"].append(jail)
        for addr in jail.addr:
            owners[f"address {addr.split('/')[0]}"].append(jail)
    for what, holders in owners.items():
        for jail in holders[1:]:
            key = "context" if what.startswith("context") else "addr"
            issues.append(_issue(jail, key, f"{what} is also jail {holders[0].name}'s",
                                 "contexts and addresses are unique"))
    return issues


def _normal(path: str) -> str | None:
    try:
        return normal_path(path)
    except InputError:
        return None


def _own_trees(jail: Jail, policy: JailPolicy) -> list[Issue]:
    """root, root_source and priv are among the trees the policy names for this jail, and no host directory."""
    issues = []
    for key in OWN_TREES:
        value = getattr(jail, key)
        normal, allowed = _normal(value), policy.own_trees(key, jail.name)
        if normal in HOST_DIRS:
            issues.append(_issue(jail, key, f"{value} is the host's {normal}", "a jail has trees of its own"))
        elif normal not in allowed:
            issues.append(_issue(jail, key, f"{value} is not a tree the policy names for jail {jail.name}",
                                 f"allowed: {', '.join(allowed)} (jails/{POLICY}: jail_trees.{key})"))
    return issues


def _separate_trees(jails: list[Jail]) -> list[Issue]:
    """No two trees of the species' jails (root, root_source, priv) are the same or one inside the other."""
    seen: list[tuple[Jail, str, str]] = []
    issues = []
    for jail in jails:
        for key in OWN_TREES:
            normal = _normal(getattr(jail, key))
            if normal is None:
                continue
            clash = next(((o, k, p) for o, k, p in seen if overlap(normal, p)), None)
            if clash:
                other, other_key, other_path = clash
                owner = "its own" if other is jail else f"jail {other.name}'s"
                issues.append(_issue(jail, key, f"{normal} overlaps {owner} {other_key} {other_path}",
                                     "every jail tree is separate from every other"))
            seen.append((jail, key, normal))
    return issues


def _root_mount(jail: Jail) -> list[Issue]:
    """mounts[0] binds root_source read-only on /."""
    first = jail.mounts[0] if jail.mounts else None
    if first is None or _normal(first.dst) != "/":
        return [_issue(jail, "mounts", "mounts[0] does not mount the jail's /",
                       "mounts[0] binds root_source read-only on /, before anything else")]
    issues = []
    if _normal(first.src) != _normal(jail.root_source):
        issues.append(_issue(jail, "mounts[0].src", f"the jail's / is bound from {first.src}, not from its "
                             f"root_source {jail.root_source}", "a jail's / is its own root_source"))
    if first.writable and not contradictions(first.options):
        issues.append(_issue(jail, "mounts[0]", f"the jail's / ({first.src}) is mounted read-write",
                             "add ro: a jail root is read-only"))
    return issues


def _mounts(jail: Jail, policy: JailPolicy) -> tuple[list[Issue], list[ExecException]]:
    issues: list[Issue] = []
    allowed: list[ExecException] = []
    used_exceptions = set()
    destinations: dict[str, str] = {}
    for key, mounts in (("mounts", jail.mounts), ("internal", jail.internal)):
        for index, mount in enumerate(mounts):
            where = f"{key}[{index}]"
            problems = _mount_paths(jail, where, mount, policy) + _options(jail, where, mount)
            dst = _normal(mount.dst) or mount.dst
            if dst in destinations:
                problems.append(_issue(jail, f"{where}.dst", f"{dst} is already mounted by {destinations[dst]}",
                                       "one mount per destination: a second one would shadow the first"))
            destinations.setdefault(dst, where)
            issues += problems
            if problems or not mount.writable:
                continue
            missing = _missing_hardening(mount.flags)
            if dst in jail.allow_exec and "noexec" in missing:
                used_exceptions.add(dst)
                missing.remove("noexec")
                if not missing:
                    allowed.append(ExecException(jail.name, dst, jail.allow_exec[dst]))
                    continue
            if missing:
                issues.append(_issue(jail, where, f"writable mount {dst} lacks {', '.join(missing)}",
                                     "every writable mount is nosuid, nodev and noexec (an exception for noexec "
                                     "needs an allow_exec entry with its reason)"))
    for destination in sorted(set(jail.allow_exec) - used_exceptions):
        issues.append(_issue(jail, f"allow_exec.{destination}",
                             f"allows {destination} to be executable, but no writable mount there needs it",
                             "remove the entry"))
    return issues, allowed


def _missing_hardening(flags: Flags) -> list[str]:
    return [flag for flag in HARDENING if not getattr(flags, flag)]


def _options(jail: Jail, where: str, mount: Mount) -> list[Issue]:
    """Option lists say one thing: no pair stated both ways, no recursive bind."""
    issues = []
    found = contradictions(mount.options)
    if found:
        issues.append(_issue(jail, f"{where}.options", f"[{', '.join(mount.options)}]: {'; '.join(found)}",
                             "mount applies the last of each pair; state only the one you mean"))
    if "rbind" in mount.options:
        issues.append(_issue(jail, f"{where}.options", "rbind also mounts every mount below the source",
                             "use bind: a jail sees only the trees the policy names"))
    return issues


def _mount_paths(jail: Jail, where: str, mount: Mount, policy: JailPolicy) -> list[Issue]:
    """Source and destination in normal form; nothing but mounts[0] on /; then the source's own rules."""
    issues = []
    for label, path in (("src", mount.src), ("dst", mount.dst)):
        if label == "src" and path in PSEUDO_SOURCES:
            continue
        try:
            normal_path(path)
        except InputError as exc:
            issues.append(_issue(jail, f"{where}.{label}", str(exc), "an absolute path, without '..'"))
    if issues:
        return issues
    is_root = normal_path(mount.dst) == "/"
    if is_root and where != "mounts[0]":
        return [_issue(jail, f"{where}.dst", f"{mount.dst} is the jail's /: this mount would shadow its read-only "
                       "root", "only mounts[0] mounts the jail's /, from its root_source")]
    return _mount_source(jail, where, mount, policy, is_root)


def _mount_source(jail: Jail, where: str, mount: Mount, policy: JailPolicy, is_root: bool) -> list[Issue]:
    """A pseudo source has its own type; a path source is a bind from a tree the policy allows (the root's
    source, root_source, is _root_mount's)."""
    if mount.src in PSEUDO_SOURCES:
        expected = PSEUDO_SOURCES[mount.src]
        return [] if mount.type == expected else [_issue(jail, where, f"source {mount.src} with type {mount.type}",
                                                         f"a {mount.src} mount has type {expected}")]
    issues = []
    if mount.type != "none" or "bind" not in mount.options:
        issues.append(_issue(jail, where, f"source {mount.src} is mounted with type {mount.type}"
                             f"{'' if 'bind' in mount.options else ' and no bind'}: the host would mount what it "
                             "holds (a device's filesystem), not bind the tree",
                             "a path source is a bind: type none, options [bind, ...]"))
    return issues if is_root else issues + _source_allowed(jail, where, mount, policy)


def _source_allowed(jail: Jail, where: str, mount: Mount, policy: JailPolicy) -> list[Issue]:
    source = normal_path(mount.src)
    if where.startswith("internal"):
        trees, rule = _named(policy.internal_trees, jail.name), "internal_trees"
    else:
        own = _normal(jail.priv)
        trees, rule = (*policy.sources(jail.name), *([own] if own else [])), "source_trees, grants"
    if any(inside(source, tree) for tree in trees):
        core = next((tree for tree in policy.read_only_trees if inside(source, tree)), None)
        if core and mount.writable:
            return [_issue(jail, where, f"{source} is mounted writable, but it lies in the core's {core}",
                           f"add ro: the core's trees are read-only in every jail (jails/{POLICY}: read_only_trees)")]
        return []
    return [_issue(jail, f"{where}.src", f"source {source} lies outside the trees jail {jail.name} may mount",
                   f"allowed: {', '.join(trees) or 'none'} (jails/{POLICY}: {rule})")]


def _capabilities(jail: Jail, policy: JailPolicy) -> list[Issue]:
    issues = []
    for index, cap in enumerate(jail.bcaps):
        if cap not in KERNEL_CAPS:
            close = difflib.get_close_matches(cap, KERNEL_CAPS, n=1)
            issues.append(_issue(jail, f"bcaps[{index}]", f"{cap} is not a Linux capability",
                                 f"did you mean {close[0]}?" if close else "see capabilities(7)"))
        elif cap in policy.deny_caps and cap not in jail.justify:
            issues.append(_issue(jail, f"bcaps[{index}]", f"{cap} is on the deny list",
                                 f"drop it, or say why the jail needs it: justify: {{{cap}: REASON}}"))
    for cap in sorted(set(jail.justify) - set(jail.bcaps)):
        issues.append(_issue(jail, f"justify.{cap}", f"justifies {cap}, which the jail does not hold",
                             "remove the entry"))
    return issues
