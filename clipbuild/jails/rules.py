"""CLIP's isolation rules, checked on every jail render (jails/_policy.yaml holds the tunable parts).

- contexts and addresses are unique across the species' jails;
- the jail's / is mounted read-only;
- every writable mount is nosuid, nodev and noexec, except a destination the jail's `allow_exec` names with a
  reason (then still nosuid and nodev); those exceptions are printed with every check;
- capabilities are Linux capabilities, and none of the deny list unless the jail's `justify` says why;
- mount sources lie in the allowed trees; no path holds `..`.
Each problem names the jail, the file and line where the value was written, and the rule.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from clipbuild.core.errors import InputError, Issue
from clipbuild.core.project import Project
from clipbuild.jails.definitions import Jail, Mount

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
PSEUDO_SOURCES = {"tmpfs": "tmpfs", "proc": "proc"}


@dataclass(frozen=True)
class JailPolicy:
    deny_caps: tuple[str, ...]
    source_trees: tuple[str, ...]


def load_policy(project: Project) -> JailPolicy:
    path = project.jails_dir / POLICY
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{project.display(path)}: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"deny_caps", "source_trees"}:
        raise InputError(f"{project.display(path)}: needs exactly deny_caps and source_trees")
    unknown = [c for c in data["deny_caps"] if c not in KERNEL_CAPS]
    if unknown:
        raise InputError(f"{project.display(path)}: deny_caps: {', '.join(unknown)} are not Linux capabilities")
    return JailPolicy(tuple(data["deny_caps"]), tuple(data["source_trees"]))


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
    issues = _unique(jails)
    exceptions: list[ExecException] = []
    for jail in jails:
        issues += _root_read_only(jail)
        found, allowed = _mounts(jail, policy)
        issues += found
        exceptions += allowed
        issues += _capabilities(jail, policy)
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


def _root_read_only(jail: Jail) -> list[Issue]:
    roots = [(i, m) for i, m in enumerate(jail.mounts) if m.dst == "/"]
    if not roots:
        return [_issue(jail, "mounts", "nothing is mounted on the jail's /", "bind its root tree read-only")]
    return [_issue(jail, f"mounts[{i}]", f"the jail's / ({m.src}) is mounted read-write",
                   "add ro: a jail root is read-only") for i, m in roots if m.writable]


def _in_trees(source: str, trees: tuple[str, ...]) -> bool:
    return any(source == tree or source.startswith(tree.rstrip("/") + "/") for tree in trees)


def _mounts(jail: Jail, policy: JailPolicy) -> tuple[list[Issue], list[ExecException]]:
    issues: list[Issue] = []
    allowed: list[ExecException] = []
    used_exceptions = set()
    for key, mounts in (("mounts", jail.mounts), ("internal", jail.internal)):
        for index, mount in enumerate(mounts):
            where = f"{key}[{index}]"
            issues += _mount_paths(jail, where, mount, policy, internal=key == "internal")
            if not mount.writable:
                continue
            missing = [flag for flag in HARDENING if flag not in mount.options]
            if mount.dst in jail.allow_exec and "noexec" in missing:
                used_exceptions.add(mount.dst)
                missing.remove("noexec")
                if not missing:
                    allowed.append(ExecException(jail.name, mount.dst, jail.allow_exec[mount.dst]))
                    continue
            if missing:
                issues.append(_issue(jail, where, f"writable mount {mount.dst} lacks {', '.join(missing)}",
                                     "every writable mount is nosuid, nodev and noexec (an exception for noexec "
                                     "needs an allow_exec entry with its reason)"))
    for destination in sorted(set(jail.allow_exec) - used_exceptions):
        issues.append(_issue(jail, f"allow_exec.{destination}",
                             f"allows {destination} to be executable, but no writable mount there needs it",
                             "remove the entry"))
    return issues, allowed


def _mount_paths(jail: Jail, where: str, mount: Mount, policy: JailPolicy, *, internal: bool) -> list[Issue]:
    issues = []
    for label, path in (("source", mount.src), ("destination", mount.dst)):
        if ".." in Path(path).parts:
            issues.append(_issue(jail, where, f"{label} {path} holds '..'"))
    if mount.src in PSEUDO_SOURCES:
        if mount.type != PSEUDO_SOURCES[mount.src]:
            issues.append(_issue(jail, where, f"source {mount.src} with type {mount.type}",
                                 f"a {mount.src} mount has type {PSEUDO_SOURCES[mount.src]}"))
    elif not internal and not _in_trees(mount.src, (*policy.source_trees, jail.root_source, jail.priv)):
        issues.append(_issue(jail, where, f"source {mount.src} lies outside the allowed trees",
                             f"allowed: {', '.join(policy.source_trees)}, and the jail's own trees"))
    return issues


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
