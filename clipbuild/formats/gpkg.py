"""Reading Portage gpkg binary packages: metadata, and the image tree extracted safely.

A gpkg is a tar of `<PF>-<BUILD_ID>/{gpkg-1, metadata.tar.zst, image.tar.zst, Manifest}`. Every member of
image.tar is checked before anything is written: no absolute path, no `..`, no link pointing outside the
tree (absolute symlinks are resolved as the installed system would, from its root), no device or FIFO, no
path through a symlink, nothing but regular files, directories and links.
"""

from __future__ import annotations

import bz2
import io
import posixpath
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from clipbuild.core.errors import ClipbuildError, UnsafeArchive
from clipbuild.core.run import run_bytes


@dataclass(frozen=True)
class Gpkg:
    path: Path
    metadata: dict[str, str]

    @property
    def cpv(self) -> str:
        return f"{self.metadata['CATEGORY']}/{self.metadata['PF']}"


def _member(outer: tarfile.TarFile, suffix: str) -> bytes:
    for info in outer.getmembers():
        if info.name.count("/") == 1 and info.name.endswith("/" + suffix) and info.isfile():
            stream = outer.extractfile(info)
            assert stream is not None
            return stream.read()
    raise ClipbuildError(f"{outer.name}: no {suffix} member: not a gpkg")


def _zstd(data: bytes) -> bytes:
    """Decompressed with the zstd program (Python 3.11 has no zstd module)."""
    return run_bytes(["zstd", "-dc"], data)


def read(path: Path) -> tuple[Gpkg, bytes]:
    """The package's metadata and its image.tar (uncompressed)."""
    with tarfile.open(path) as outer:
        metadata_tar = _zstd(_member(outer, "metadata.tar.zst"))
        image_tar = _zstd(_member(outer, "image.tar.zst"))
    return Gpkg(path, _metadata(metadata_tar)), image_tar


def read_metadata(path: Path) -> Gpkg:
    """The package's metadata alone (its image is not decompressed): CATEGORY, PF, SLOT, USE, RDEPEND..."""
    with tarfile.open(path) as outer:
        return Gpkg(path, _metadata(_zstd(_member(outer, "metadata.tar.zst"))))


def _metadata(metadata_tar: bytes) -> dict[str, str]:
    metadata = {}
    with tarfile.open(fileobj=io.BytesIO(metadata_tar)) as meta:
        for info in meta.getmembers():
            if not info.isfile() or not info.name.startswith("metadata/") or info.name.endswith(".ebuild"):
                continue
            stream = meta.extractfile(info)
            assert stream is not None
            raw = stream.read()
            if info.name == "metadata/environment.bz2":
                metadata.update(ebuild_variables(bz2.decompress(raw).decode(errors="replace")))
            else:
                metadata[info.name.removeprefix("metadata/")] = raw.decode(errors="replace").strip()
    return metadata


# CLIP's per-ebuild packaging variables (clipos4.md §1.6), read from the saved ebuild environment. Those of
# make.conf (DEB_DISTRIBUTION, DEB_PRIORITY, DEB_IMPACT, DEB_URGENCY) come from the plan instead: a binpkg is
# shared by sets whose make.conf differ only there.
EBUILD_VARIABLES = ("DEB_SUGGESTS", "CONF_DEPENDS", "DEB_JAILS", "DEB_NAME_SUFFIX", "DEB_ESSENTIAL")
_DECLARE = re.compile(r'^declare -[-a-zA-Z]* (?P<name>[A-Z_]+)="(?P<value>[^"]*)"$', re.M)


def ebuild_variables(environment: str) -> dict[str, str]:
    return {m["name"]: m["value"].strip() for m in _DECLARE.finditer(environment) if m["name"] in EBUILD_VARIABLES}


def check_members(members: list[tarfile.TarInfo], prefix: str = "image") -> list[tuple[tarfile.TarInfo, str]]:
    """(member, path relative to the tree) for each member; raises UnsafeArchive on the first bad one."""
    out = []
    links: set[str] = set()
    for info in members:
        name = info.name
        if name.startswith("/") or ".." in name.split("/"):
            raise UnsafeArchive(f"member {name!r}: absolute paths and '..' are refused")
        if name.rstrip("/") == prefix:
            continue
        if not name.startswith(prefix + "/"):
            raise UnsafeArchive(f"member {name!r} lies outside {prefix}/")
        relative = posixpath.normpath(name[len(prefix) + 1:])
        parents = relative.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in links:
                raise UnsafeArchive(f"member {name!r} goes through the symlink {'/'.join(parents[:depth])}")
        if not (info.isfile() or info.isdir() or info.issym() or info.islnk()):
            raise UnsafeArchive(f"member {name!r}: devices, FIFOs and other special files are refused")
        if info.issym():
            if _climbs_out(relative, info.linkname):
                raise UnsafeArchive(f"symlink {name!r} -> {info.linkname!r} escapes the root")
            links.add(relative)
        if info.islnk():
            linked = posixpath.normpath(info.linkname)
            if linked.startswith("/") or ".." in linked.split("/") or not linked.startswith(prefix + "/"):
                raise UnsafeArchive(f"hard link {name!r} -> {info.linkname!r} escapes the tree")
        out.append((info, relative))
    return out


def _climbs_out(relative: str, link: str) -> bool:
    """Whether a symlink at `relative` climbs above the root with '..' (normpath would hide it: /.. is /)."""
    depth = 0 if link.startswith("/") else len(relative.split("/")) - 1
    for part in link.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def extract(image_tar: bytes, target: Path) -> None:
    """Extract image.tar into `target` after checking every member; owners are not kept (root:root in .debs)."""
    with tarfile.open(fileobj=io.BytesIO(image_tar)) as image:
        extract_checked(image, target, "image")


def extract_checked(archive: tarfile.TarFile, target: Path, prefix: str) -> None:
    """Extract the tree `prefix/` of `archive` into `target`, every member checked first (`check_members`);
    modes kept, owners and times not."""
    checked = check_members(archive.getmembers(), prefix)
    target.mkdir(parents=True, exist_ok=True)
    for info, relative in checked:
        destination = target / relative
        if info.isdir():
            destination.mkdir(parents=True, exist_ok=True)
            destination.chmod(info.mode & 0o7777)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        if info.issym():
            destination.symlink_to(info.linkname)
        elif info.islnk():
            destination.hardlink_to(target / posixpath.normpath(info.linkname)[len(prefix) + 1:])
        else:
            stream = archive.extractfile(info)
            assert stream is not None
            with destination.open("wb") as out:
                shutil.copyfileobj(stream, out)
            destination.chmod(info.mode & 0o7777)
