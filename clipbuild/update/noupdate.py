"""The rolled-back release, marked so `update apply` does not apply it again (CLIP's /var/pkg/clip_core_noupdate).

`update rollback` from a slot whose core is newer than the other's writes that core's version to
`clip/core_noupdate` on the boot partition (beside the manifest, written with the same helper). `update apply`
then applies nothing from a repository whose core is that release, or an older one, with a note saying why;
a newer core applies and the marker is removed. A rollback to a newer slot (going forward again) removes it.

This is not a security control: the boot partition is not authenticated, and removing or editing the marker
only lets a release that is signed, and passes every check, be applied again (docs/security.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from clipbuild.image import fsimage, inspection
from clipbuild.update import imageedit

MARKER = "clip/core_noupdate"
_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~:-]{0,63}")  # a Debian version


def read(found: inspection.Inspection, scratch: Path) -> tuple[str, list[str]]:
    """The release marked rolled back ("" when none), and a note when the marker holds no version (ignored)."""
    if not fsimage.vfat_exists(found.mtools(), MARKER):
        return "", []
    text = inspection.read_boot_file(found.image, found.boot().start, MARKER, scratch).strip()
    if not _VERSION.fullmatch(text):
        return "", [f"{MARKER} on the boot partition holds no release version: ignored"]
    return text, []


def holding(marked: str, offered: str, installed: str, compare: Callable[[str, str], int]) -> str:
    """Why the repository's core `offered` is not applied ("" when it may be): it is the release rolled back
    on this image, or older than it, and not the one installed."""
    if not marked or compare(offered, installed) == 0 or compare(offered, marked) > 0:
        return ""
    what = f"its core is {offered}" if offered == marked else f"its core {offered} is not newer"
    return (f"release {marked} was rolled back on this image; waiting for a newer release: the repository is not "
            f"applied ({what}; `update rollback` wrote {MARKER} on the boot partition)")


def rolled_back(left: str, back_to: str, compare: Callable[[str, str], int]) -> str:
    """The release a rollback leaves, when it is newer than the one it goes back to; else ""."""
    if not (_VERSION.fullmatch(left) and _VERSION.fullmatch(back_to)):
        return ""
    return left if compare(left, back_to) > 0 else ""


def mark(found: inspection.Inspection, version: str, scratch: Path) -> None:
    imageedit.write_boot_file(found.mtools(), MARKER, f"{version}\n", scratch, found.manifest["source_date_epoch"])


def clear(found: inspection.Inspection) -> None:
    fsimage.vfat_delete(found.mtools(), MARKER)
