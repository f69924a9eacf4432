"""Installing verified packages into the trees of an image with the real `dpkg --root`, without root.

dpkg runs unprivileged and without chroot, so two things are checked first, for every package: it has no
maintainer scripts (they would run on the build host), and no path in its data archive is absolute, holds
`..`, or passes through a symbolic link some package installs (dpkg would follow it out of the tree).

CLIP's layout (clipos4.md §4) is then made from the installed tree: what the apps part installed under
/usr/local goes to the mounts partition's usr/ (bound on /usr/local at boot), /var to its var/ (bound on /var,
dpkg's database included), the baselayout's /mounts tree to the partition itself; the root keeps empty mount
points. Files under /var/log go to the log partition.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from debian.deb822 import Deb822

from clipbuild.core.errors import ImageError
from clipbuild.core.run import run, run_bytes

SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config")


@dataclass(frozen=True)
class Installed:
    package: str
    version: str
    architecture: str


def _members(deb: Path) -> list[tarfile.TarInfo]:
    data = _fsys_tarfile(deb)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return archive.getmembers()


def _fsys_tarfile(deb: Path) -> bytes:
    return run_bytes(["dpkg-deb", "--fsys-tarfile", deb], b"")


def check_packages(debs: list[Path]) -> None:
    """Refuse packages dpkg could not install safely without chroot (see the module's docstring)."""
    links: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    for deb in debs:
        info = run(["dpkg-deb", "--info", deb]).stdout
        scripts = [word for line in info.splitlines() for word in line.split() if word in SCRIPTS]
        if scripts:
            raise ImageError(f"{deb.name}: has maintainer scripts ({', '.join(scripts)})",
                             hint="clipbuild installs without running package scripts on the build host; "
                                  "move what they do into the package's files")
        for member in _members(deb):
            path = PurePosixPath(member.name.removeprefix("./"))
            if member.name.startswith("/") or ".." in path.parts:
                raise ImageError(f"{deb.name}: archive path '{member.name}' is absolute or holds '..'")
            if member.issym():
                links[path.as_posix()] = deb.name
            files.setdefault(deb.name, []).append(path.as_posix())
    for name, paths in files.items():
        for path in paths:
            parents = PurePosixPath(path).parents
            through = next((p.as_posix() for p in parents if p.as_posix() in links), None)
            if through:
                raise ImageError(f"{name}: '{path}' lies below '{through}', a symbolic link installed by "
                                 f"{links[through]}", hint="dpkg would follow the link out of the image tree")


def prepare(root: Path) -> None:
    for sub in ("info", "updates", "triggers"):
        (root / "var" / "lib" / "dpkg" / sub).mkdir(parents=True, exist_ok=True)
    (root / "var" / "lib" / "dpkg" / "status").touch()


def install(debs: list[Path], root: Path, log: Path) -> list[Installed]:
    """dpkg -i every package into `root` (dependencies checked by dpkg); returns what dpkg now lists."""
    check_packages(debs)
    prepare(root)
    run(["dpkg", f"--root={root}", f"--log={log}", "--force-not-root", "--force-script-chrootless",
         "--no-triggers", "-i", *debs], env={"SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "0")})
    return installed(root)


def control_fields(deb: Path) -> dict[str, str]:
    text = run(["dpkg-deb", "--field", deb]).stdout
    return dict(Deb822(text.splitlines()))


def installed(root: Path) -> list[Installed]:
    status = root / "var" / "lib" / "dpkg" / "status"
    out = []
    with status.open("rb") as stream:
        for para in Deb822.iter_paragraphs(stream):
            if para.get("Status", "").endswith(" installed"):
                out.append(Installed(para["Package"], para["Version"], para.get("Architecture", "")))
    return sorted(out, key=lambda p: p.package)


def _move_contents(source: Path, target: Path) -> None:
    if not source.is_dir():
        return
    target.mkdir(parents=True, exist_ok=True)
    for child in sorted(source.iterdir()):
        destination = target / child.name
        if destination.is_dir() and child.is_dir() and not child.is_symlink():
            _move_contents(child, destination)
            child.rmdir()
        else:
            shutil.move(child, destination)


def split_core(tree: Path, mounts: Path, log: Path) -> None:
    """CLIP's split of an installed core+apps tree: root (tree), mounts partition, log partition."""
    _move_contents(tree / "var" / "log", log)
    _move_contents(tree / "mounts", mounts)
    _move_contents(tree / "usr" / "local", mounts / "usr")
    _move_contents(tree / "var", mounts / "var")
    for mount_point in ("mounts", "usr/local", "var", "var/log"):
        (tree / mount_point).mkdir(parents=True, exist_ok=True)
    (mounts / "var" / "log").mkdir(parents=True, exist_ok=True)


def normalise_tree(tree: Path, date: int) -> None:
    """Every path's mtime set to `date` (ownership is set by the filesystem builders)."""
    for path in [*tree.rglob("*"), tree]:
        os.utime(path, (date, date), follow_symlinks=False)
