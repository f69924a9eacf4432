"""`clipbuild jails run`: realise a rendered jail on the build machine, so its rules can be seen to hold.

Without root: `unshare` makes a user, mount, PID, IPC and (when the jail's nsopts say so) network namespace;
inside it a fresh tmpfs holds a staged system: the rendered jail trees, the jail's root populated with a
userland (BusyBox from busybox-static unless given another tree). The jail's fstab.external is applied for real,
each bind remounted with its own ro / nosuid / nodev / noexec flags, a fresh /proc is mounted, then capsh
drops every capability outside the jail's bounding set and chroots into the jail. So a script written into a
writable mount cannot run, the root cannot be written, a dropped capability is absent from CapBnd.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from clipbuild.core.run import Result, require, run
from clipbuild.jails.definitions import Jail, Rendered, write
from clipbuild.jails.rules import KERNEL_CAPS

APPLETS = ("sh", "cat", "ls", "touch", "id", "grep", "echo", "chmod", "mkdir", "rm", "test", "[", "mount",
           "head", "stat", "true", "false")


def stage(jail: Jail, rendered: Rendered, target: Path, userland: Path | None = None) -> None:
    """The system tree the jail is assembled from: rendered files, mount sources, a userland in its root."""
    write(rendered, target)
    root = target / jail.root_source.lstrip("/")
    # The userland goes where the image has it, the staged system's own /bin (and /lib, /usr with --userland),
    # which the jail binds read-only; and into the jail's root too, for a jail that binds none of them.
    for tree in (target, root):
        if userland is not None:
            shutil.copytree(userland, tree, symlinks=True, dirs_exist_ok=True)
            continue
        (tree / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(shutil.which("busybox") or "/bin/busybox", tree / "bin" / "busybox")
        for applet in APPLETS:
            (tree / "bin" / applet).unlink(missing_ok=True)
            (tree / "bin" / applet).symlink_to("busybox")
    for sub in ("etc", "proc"):
        (root / sub).mkdir(exist_ok=True)
    for index, mount in enumerate(jail.mounts):
        if mount.src.startswith("/") and mount.kind == "file":
            (target / mount.src.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (target / mount.src.lstrip("/")).touch()
        elif mount.src.startswith("/"):
            (target / mount.src.lstrip("/")).mkdir(parents=True, exist_ok=True)
        # A mount point must exist in whatever is mounted above it: the closest earlier mount containing it.
        parent = max((m for m in jail.mounts[:index] if m.src.startswith("/") and
                      (mount.dst + "/").startswith(m.dst.rstrip("/") + "/")), key=lambda m: len(m.dst),
                     default=None)
        base = target / (parent.src if parent else jail.root_source).lstrip("/")
        inside = mount.dst[len(parent.dst.rstrip("/")):] if parent else mount.dst
        point = base / inside.lstrip("/")
        if mount.kind == "file":
            point.parent.mkdir(parents=True, exist_ok=True)
            point.touch()
        else:
            point.mkdir(parents=True, exist_ok=True)


def script(jail: Jail, staged: Path, command: Sequence[str]) -> str:
    """The shell script run in the new namespaces."""
    sysroot, jroot = "$S/sys", "$S/jail"
    lines = ["set -e", "S=$(mktemp -d)", "mount -t tmpfs -o mode=0755 clipbuild-jail $S",
             f"mkdir -p {sysroot} {jroot}", f"cp -a {shlex.quote(str(staged))}/. {sysroot}/"]
    for mount in jail.mounts:
        flags = mount.flags.words()  # as the rules read them (jails/mountopts)
        dst = jroot + shlex.quote(mount.dst if mount.dst != "/" else "")
        if mount.type == "tmpfs":
            extra = [o for o in mount.options if o.startswith(("size=", "mode="))]
            lines.append(f"mount -t tmpfs -o {','.join(flags + extra)} tmpfs {dst}")
            continue
        lines.append(f"mount --bind {sysroot}{shlex.quote(mount.src)} {dst}")
        lines.append(f"mount -o remount,bind,{','.join(flags)} {dst}")
    lines.append(f"mount -t proc -o nosuid,nodev,noexec proc {jroot}/proc")
    dropped = ",".join(f"cap_{cap.lower()}" for cap in KERNEL_CAPS if cap not in jail.bcaps)
    shell_command = " ".join(shlex.quote(word) for word in command)
    lines.append(f"exec capsh --drop={dropped} --chroot={jroot} --shell=/bin/sh -- -c {shlex.quote(shell_command)}")
    return "\n".join(lines) + "\n"


def run_in_jail(jail: Jail, rendered: Rendered, command: Sequence[str], userland: Path | None = None,
                *, capture: bool = True) -> Result:
    require("unshare", "capsh", "mount")
    with tempfile.TemporaryDirectory(prefix=f"clipbuild-jail-{jail.name}-") as tmp:
        staged = Path(tmp) / "system"
        stage(jail, rendered, staged, userland)
        namespaces = ["--user", "--map-root-user", "--mount", "--pid", "--fork", "--ipc"]
        if "net" in jail.nsopts:
            namespaces.append("--net")
        return run(["unshare", *namespaces, "sh", "-c", script(jail, staged, command)], check=False,
                   capture=capture)
