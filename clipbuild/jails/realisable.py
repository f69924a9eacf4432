"""What clip-jail, the jail manager in the image, can realise: the vocabulary its parser accepts, checked when
the jails are rendered so a jail the manager would refuse at boot never reaches a package.

clip-jail (overlays/clip/app-clip/clip-jail) realises util-vserver's flags with Linux namespaces and refuses the
rest: the two lists below are the same as its own, and a test keeps them so (tests/unit/test_jail_manager.py).
"""

from __future__ import annotations

from clipbuild.core.errors import Issue, Location
from clipbuild.jails.definitions import Jail

# cflags and what realises them: fakeinit = a PID namespace whose pid 1 is clip-jail's init; hide_mount = the
# mount namespace and pivot_root; hide_vinfo = the UTS namespace; virt_uptime = a time namespace.
CFLAGS = ("fakeinit", "hide_mount", "hide_vinfo", "virt_uptime")
# nflags: hide_netif = a network namespace; no_sp = no per-socket IPsec policy (the kernel wants NET_ADMIN).
NFLAGS = ("hide_netif", "no_sp")
NSOPTS = ("pid", "net")  # mount, IPC, UTS and cgroup namespaces are always made
MOUNT_OPTIONS = ("bind", "ro", "rw", "nosuid", "nodev", "noexec", "nosymfollow")
TMPFS_DATA = ("size=", "mode=")
WHY_NOT = {
    "virt_mem": "util-vserver only: no Linux namespace virtualises /proc/meminfo",
    "virt_cpu": "util-vserver only: no Linux namespace virtualises the CPU list",
    "virt_load": "util-vserver only: no Linux namespace virtualises the load average",
    "user": "user namespaces: clip-jail does not make them",
    "nolock": "no Linux bind mount can disable locks (nolock is an NFS option)",
}


def _issue(jail: Jail, key: str, message: str, hint: str) -> Issue:
    return Issue(jail.origin(key) or Location("", 0), f"jail {jail.name}: {key}", message, hint)


def _words(jail: Jail, key: str, words: tuple[str, ...], known: tuple[str, ...]) -> list[Issue]:
    return [_issue(jail, f"{key}[{i}]", f"clip-jail cannot realise {word}" +
                   (f" ({WHY_NOT[word]})" if word in WHY_NOT else ""), f"known: {', '.join(known)}; remove it")
            for i, word in enumerate(words) if word not in known]


def check(jail: Jail) -> list[Issue]:
    """Every setting of `jail` is one clip-jail realises; the flags' preconditions hold."""
    issues = (_words(jail, "cflags", jail.cflags, CFLAGS) + _words(jail, "nflags", jail.nflags, NFLAGS) +
              _words(jail, "nsopts", jail.nsopts, NSOPTS))
    issues += [_issue(jail, f"ccaps[{i}]", f"context capability {cap} has no Linux counterpart",
                      "remove it: a jail's privileges are its bcaps") for i, cap in enumerate(jail.ccaps)]
    if "fakeinit" in jail.cflags and "pid" not in jail.nsopts:
        issues.append(_issue(jail, "cflags", "fakeinit needs a PID namespace", "add pid to nsopts"))
    if "hide_netif" in jail.nflags and "net" not in jail.nsopts:
        issues.append(_issue(jail, "nflags", "hide_netif needs a network namespace", "add net to nsopts"))
    if "no_sp" in jail.nflags and "NET_ADMIN" in jail.bcaps:
        issues.append(_issue(jail, "nflags", "no_sp cannot hold with NET_ADMIN (it sets per-socket IPsec policies)",
                             "drop no_sp or NET_ADMIN"))
    for key, mounts in (("mounts", jail.mounts), ("internal", jail.internal)):
        for index, mount in enumerate(mounts):
            for option in mount.options:
                tmpfs_data = mount.type == "tmpfs" and option.startswith(TMPFS_DATA)
                if option not in MOUNT_OPTIONS and not tmpfs_data:
                    issues.append(_issue(jail, f"{key}[{index}].options",
                                         f"clip-jail cannot realise the mount option {option}" +
                                         (f" ({WHY_NOT[option]})" if option in WHY_NOT else ""),
                                         f"known: {', '.join(MOUNT_OPTIONS)}, and size=/mode= for a tmpfs"))
            if mount.type not in ("none", "tmpfs"):
                issues.append(_issue(jail, f"{key}[{index}].type", f"clip-jail mounts binds and tmpfs, not "
                                     f"{mount.type}", "type none with bind, or a tmpfs"))
    return issues
