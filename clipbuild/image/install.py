"""Installing verified packages into the trees of an image with the real `dpkg --root`, without root.

dpkg runs unprivileged and without chroot, so two things are checked first, for every package: it has no
maintainer scripts (they would run on the build host), and no path in its data archive is absolute, holds
`..`, or passes through a symbolic link some package installs (dpkg would follow it out of the tree); no hard
link names anything but a regular file of the same package, earlier in its archive; and no member is a device
or a FIFO, or has a setuid or setgid mode, unless the trust policy's `special_files` grants that package that
kind. Every error names the package file, the member and the rule. After dpkg, every file operation on the
trees goes through clipbuild.core.beneath, so a package's link never leads this work out of the tree.

CLIP's layout (clipos4.md §4) is then made from the installed tree: what the apps part installed under
/usr/local goes to the mounts partition's usr/ (bound on /usr/local at boot), /var to its var/ (bound on /var,
dpkg's database included), the baselayout's /mounts tree to the partition itself; the root keeps empty mount
points. Files under /var/log go to the log partition.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from debian.deb822 import Deb822

from clipbuild.core import beneath
from clipbuild.core.errors import ImageError
from clipbuild.core.run import run, run_bytes

SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config")


@dataclass(frozen=True)
class Installed:
    package: str
    version: str
    architecture: str
    size: int = 0  # bytes: dpkg's Installed-Size (KiB) times 1024


def _members(deb: Path) -> list[tarfile.TarInfo]:
    data = _fsys_tarfile(deb)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return archive.getmembers()


def _fsys_tarfile(deb: Path) -> bytes:
    return run_bytes(["dpkg-deb", "--fsys-tarfile", deb], b"")


GRANTABLE = "no package installs one unless its policy allows"
SPECIAL_HINT = ("a trust policy allows it for one package with `special_files: {PACKAGE: [setuid, setgid, "
                "device, fifo]}` (docs/security.md says who may grant it)")


def check_packages(debs: list[Path], allow: Mapping[str, Collection[str]] | None = None) -> None:
    """Refuse packages dpkg could not install safely without chroot (see the module's docstring), and special
    files (setuid/setgid modes, devices, FIFOs) unless `allow` (the trust policy's `special_files`) grants them
    to that package."""
    links: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    for deb in debs:
        info = run(["dpkg-deb", "--info", deb]).stdout
        scripts = [word for line in info.splitlines() for word in line.split() if word in SCRIPTS]
        if scripts:
            raise ImageError(f"{deb.name}: has maintainer scripts ({', '.join(scripts)})",
                             hint="clipbuild installs without running package scripts on the build host; "
                                  "move what they do into the package's files")
        granted = set((allow or {}).get(_package_name(info), ()))
        for path, member in _checked_members(deb, granted):
            if member.issym():
                links[path] = deb.name
            files.setdefault(deb.name, []).append(path)
    for name, paths in files.items():
        for path in paths:
            parents = PurePosixPath(path).parents
            through = next((p.as_posix() for p in parents if p.as_posix() in links), None)
            if through:
                raise ImageError(f"{name}: '{path}' lies below '{through}', a symbolic link installed by "
                                 f"{links[through]}", hint="dpkg would follow the link out of the image tree")


def _package_name(info: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.strip().startswith("Package:")), "")


def _member_path(deb: Path, name: str) -> str:
    path = PurePosixPath(name.removeprefix("./"))
    if name.startswith("/") or ".." in path.parts:
        raise ImageError(f"{deb.name}: archive path '{name}' is absolute or holds '..'")
    return path.as_posix()


def _checked_members(deb: Path, granted: set[str]) -> list[tuple[str, tarfile.TarInfo]]:
    """Each member of the data archive with its normalised path, once checked (see `_member_problem`)."""
    out: list[tuple[str, tarfile.TarInfo]] = []
    regular: set[str] = set()
    for member in _members(deb):
        path = _member_path(deb, member.name)
        problem = _member_problem(member, regular, granted)
        if problem:
            raise ImageError(f"{deb.name}: '{path}': {problem}",
                             hint=SPECIAL_HINT if problem.endswith(GRANTABLE) else "")
        if member.isreg():
            regular.add(path)
        out.append((path, member))
    return out


def _member_problem(member: tarfile.TarInfo, regular: set[str], granted: set[str]) -> str:
    """Why one data archive member may not be installed, or ''."""
    if member.islnk():
        target = member.linkname.removeprefix("./")
        if member.linkname.startswith("/") or ".." in PurePosixPath(target).parts or target not in regular:
            return (f"a hard link to '{member.linkname}', not a file of this package before it: a hard link "
                    "may only name a regular file the same package installs")
    elif member.ischr() or member.isblk() or member.isfifo():
        kind = "a FIFO" if member.isfifo() else "a device node"
        if ("fifo" if member.isfifo() else "device") not in granted:
            return f"{kind}: the root is mounted without nodev; {GRANTABLE}"
    elif not (member.isreg() or member.isdir() or member.issym()):
        return f"an archive member of type {member.type!r}: only files, directories and links are installed"
    for bit, name in ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid")):
        if member.mode & bit and name not in granted:
            return f"mode {member.mode:o} is {name}: {GRANTABLE}"
    return ""


def prepare(root: Path) -> None:
    for sub in ("info", "updates", "triggers"):
        beneath.mkdir(root, f"var/lib/dpkg/{sub}")
    with beneath.opened(root, "var/lib/dpkg/status", os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK):
        pass


def install(debs: list[Path], root: Path, log: Path,
            allow: Mapping[str, Collection[str]] | None = None) -> list[Installed]:
    """dpkg -i every package into `root` (dependencies checked by dpkg); returns what dpkg now lists."""
    check_packages(debs, allow)
    prepare(root)
    run(["dpkg", f"--root={root}", f"--log={log}", "--force-not-root", "--force-script-chrootless",
         "--no-triggers", "-i", *debs], env={"SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "0")})
    return installed(root)


def control_fields(deb: Path) -> dict[str, str]:
    text = run(["dpkg-deb", "--field", deb]).stdout
    return dict(Deb822(text.splitlines()))


def installed(root: Path) -> list[Installed]:
    out = []
    with io.BytesIO(beneath.read_bytes(root, "var/lib/dpkg/status")) as stream:
        for para in Deb822.iter_paragraphs(stream):
            if para.get("Status", "").endswith(" installed"):
                size = para.get("Installed-Size", "0").strip()
                out.append(Installed(para["Package"], para["Version"], para.get("Architecture", ""),
                                     int(size) * 1024 if size.isdigit() else 0))
    return sorted(out, key=lambda p: p.package)


def move_contents(tree: Path, source: str, target_tree: Path, target: str) -> None:
    """What `source` holds in `tree` moved to `target` in `target_tree`, every path resolved beneath its tree
    (a package's link out, at `var/log` or deeper, is refused, never followed)."""
    if not beneath.is_dir(tree, source):
        return
    if target:
        beneath.mkdir(target_tree, target)
    for name, mode in beneath.entries(tree, source):
        child, destination = f"{source}/{name}", f"{target}/{name}" if target else name
        if stat.S_ISDIR(mode) and beneath.is_dir(target_tree, destination):
            move_contents(tree, child, target_tree, destination)
            beneath.remove_tree(tree, child)
            continue
        beneath.replace(tree, child, target_tree, destination)  # TreeError if a folder stands there


def split_core(tree: Path, mounts: Path, log: Path) -> None:
    """CLIP's split of an installed core+apps tree: root (tree), mounts partition, log partition."""
    for root in (mounts, log):
        root.mkdir(parents=True, exist_ok=True)  # the trees' roots, chosen by clipbuild
    move_contents(tree, "var/log", log, "")
    move_contents(tree, "mounts", mounts, "")
    move_contents(tree, "usr/local", mounts, "usr")
    move_contents(tree, "var", mounts, "var")
    for mount_point in ("mounts", "usr/local", "var", "var/log"):
        beneath.mkdir(tree, mount_point)
    beneath.mkdir(mounts, "var/log")


def split_shared(tree: Path, partitions: Mapping[str, Path]) -> list[str]:
    """What the core's packages install under a shared partition's mount point (the jails' trees under
    /vservers/rm_h, /home/user) moved onto that partition's tree, where the booted system sees it; the root
    keeps the empty mount point. The partitions' trees exist. Returns the mount points that held something."""
    moved = []
    for mount, target in sorted(partitions.items()):
        relative = mount.strip("/")
        if not relative or not beneath.is_dir(tree, relative) or not beneath.entries(tree, relative):
            continue
        move_contents(tree, relative, target, "")
        beneath.mkdir(tree, relative)
        moved.append(mount)
    return moved


def normalise_tree(tree: Path, date: int) -> None:
    """Every path's mtime set to `date` (ownership is set by the filesystem builders)."""
    for path in [*tree.rglob("*"), tree]:
        os.utime(path, (date, date), follow_symlinks=False)
