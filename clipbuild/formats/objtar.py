"""An executor's step object as one tar file, for sharing it (clipbuild.gentoo.stepobjects).

The tar holds the committed object folder (manifest.json, out/, log.txt) under one top directory named by the
object's key. It is deterministic: members sorted by name, mtime 0, owner 0:0 without names, modes reduced to
0644/0755 (0755 for directories and executables), no compression. The same object always gives the same bytes,
so a tar's SHA-256 names its content.

Unpacking checks every member first (clipbuild.formats.gpkg.check_members: no absolute path, no `..`, no link
out of the object, no device or FIFO, nothing through a symlink) and refuses absolute symlinks as well: an
object is unpacked on the host, where an absolute link would point out of it.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

from clipbuild.core.errors import UnsafeArchive
from clipbuild.formats.gpkg import extract_checked


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if not info.issym():
        info.mode = 0o755 if info.isdir() or info.mode & stat.S_IXUSR else 0o644
    return info


def write(obj: Path, key: str, target: Path) -> None:
    """Write the object folder `obj` as `target` (under a temporary name, then renamed)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    paths = sorted(obj.rglob("*"), key=lambda p: p.relative_to(obj).as_posix())
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(_normalised(archive.gettarinfo(obj, key)))
        for path in paths:
            info = _normalised(archive.gettarinfo(path, f"{key}/{path.relative_to(obj).as_posix()}"))
            if info.isfile():
                with path.open("rb") as data:
                    archive.addfile(info, data)
            else:
                archive.addfile(info)
    os.replace(tmp, target)


def unpack(tar: Path, key: str, target: Path) -> None:
    """Unpack the object `key` from `tar` into the folder `target`; raises UnsafeArchive on a bad member."""
    with tarfile.open(tar, "r:") as archive:
        for info in archive.getmembers():
            if info.issym() and info.linkname.startswith("/"):
                raise UnsafeArchive(f"symlink {info.name!r} -> {info.linkname!r}: absolute links are refused in "
                                    "a step object")
        extract_checked(archive, target, key)
