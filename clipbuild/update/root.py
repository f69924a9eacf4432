"""What an update reads from the running slot's root: only once the root verifies against the root hash its boot
entry hands the kernel, and only a few paths, extracted into a scratch folder.

`read_root(found, active, scratch)` copies the running root and its hash tree out of the image, checks them
(veritysetup verify against the boot entry's root hash, which must also be the manifest's), then extracts
`EXTRACTED` into `scratch/root-<slot>/` and returns a `RootFacts`: the root's IMAGE_VERSION and VARIANT_ID
(etc/os-release) and the folder. The extraction writes links as links (unsquashfs, debugfs rdump), so read
what it holds with `clipbuild.core.beneath`: a link out of the folder is refused, never followed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from clipbuild.core import beneath
from clipbuild.core.errors import ImageError
from clipbuild.core.run import run
from clipbuild.image import fsimage, inspection

OS_RELEASE = "etc/os-release"
# The paths an update reads from the root: its version, its update rules (update/rules), its update
# configuration and trust store (etc/clip_update: conffiles.list, keys).
EXTRACTED = (OS_RELEASE, "etc/admin/clip_download", "etc/admin/clip_install", "etc/clip_update")


@dataclass(frozen=True)
class RootFacts:
    """The running root, verified: its version, its variant ("dev" on a development image, else "") and the
    folder holding the EXTRACTED paths (read them with core.beneath)."""

    version: str
    tree: Path
    variant: str = ""


def read_root(found: inspection.Inspection, active: str, scratch: Path) -> RootFacts:
    """The running root's facts, after it verified against its boot entry's root hash (ImageError if not)."""
    info = found.manifest["slots"][active]
    boot_hash = found.boot_hashes.get(active, "")
    copied = inspection.copy_root(found, active, info, scratch)
    if copied is None or boot_hash != info["root_hash"] or not fsimage.verity_verify(*copied, boot_hash):
        raise ImageError(f"{found.image}: slot {active}'s root does not verify against the root hash its boot "
                         "entry gives the kernel (or the manifest disagrees with that entry); refused before any "
                         "write", hint="clipbuild inspect IMAGE --verify says more; restore the image from a copy")
    data, hashes = copied
    tree = scratch / f"root-{active}"
    try:
        extract(data, info["fs"], tree, EXTRACTED)
    finally:
        data.unlink()
        hashes.unlink()
    text = beneath.read_text(tree, OS_RELEASE) if beneath.exists(tree, OS_RELEASE) else ""
    version = _field(text, "IMAGE_VERSION")
    if not version:
        raise ImageError(f"{found.image}: slot {active}'s root has no IMAGE_VERSION in /{OS_RELEASE}; cannot tell "
                         "what is installed, refused before any write")
    return RootFacts(version, tree, _field(text, "VARIANT_ID"))


def _field(text: str, name: str) -> str:
    match = re.search(rf"^{name}=\"?([^\s\"]+)\"?$", text, re.MULTILINE)
    return match.group(1) if match else ""


def extract(data: Path, fs: str, tree: Path, paths: tuple[str, ...]) -> None:
    """`paths` (relative, those present) of the filesystem in `data` into the new folder `tree`, links as links."""
    if fs == "squashfs":
        run(["unsquashfs", "-no-progress", "-quiet", "-no-xattrs", "-d", tree, data, *paths])
        tree.mkdir(exist_ok=True)  # nothing matched: unsquashfs made no folder
        return
    tree.mkdir()
    for path in paths:
        parent = path.rpartition("/")[0]
        if parent:
            beneath.mkdir(tree, parent)
        run(["debugfs", "-R", f"rdump /{path} {tree / parent if parent else tree}", data])
