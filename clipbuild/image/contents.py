"""What an image's installed trees hold, read back for `clipbuild inspect`: per package its installed size and the
results of the whole-tree checks (clipbuild.image.elfcheck).

The active slot's tree is rebuilt in a scratch folder as the slot runs it: its root filesystem extracted
(unsquashfs, or fsck.erofs for an erofs root), its mounts partition's `usr/` put back on /usr/local and `var/`
on /var (dpkg's database with it), the rest on /mounts. Each RM partition (/vservers/...) is read as its own
tree. Extraction writes links as links, and the checks read the trees only through clipbuild.core.beneath.
"""

from __future__ import annotations

import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipbuild.core import beneath
from clipbuild.core.errors import ClipbuildError
from clipbuild.core.run import run
from clipbuild.image import elfcheck, gpt, inspection, install


def _extract_root(found: inspection.Inspection, slot: str, scratch: Path) -> Path | None:
    info = found.manifest["slots"][slot]
    copied = inspection.copy_root(found, slot, info, scratch)
    if copied is None:
        return None
    data, hashes = copied
    tree = scratch / f"root-{slot}"
    try:
        if info.get("fs") == "erofs":
            run(["fsck.erofs", f"--extract={tree}", "--no-preserve", data])
        else:
            run(["unsquashfs", "-no-progress", "-quiet", "-no-xattrs", "-d", tree, data])
    finally:
        data.unlink()
        hashes.unlink()
    return tree


def _extract_ext4(found: inspection.Inspection, label: str, scratch: Path) -> Path:
    """An ext4 partition's top-level entries (but lost+found) dumped into a new folder, links as links."""
    entry = found.entry(label)
    part = scratch / f"{label}.img"
    gpt.copy_out(found.image, entry.start, entry.size, part)
    folder = scratch / label
    folder.mkdir()
    try:
        # `ls -p`: one /inode/mode/uid/gid/name/size/ line per entry
        listing = run(["debugfs", "-R", "ls -p /", part]).stdout
        names = [line.split("/")[5] for line in listing.splitlines() if line.count("/") >= 6]
        for name in names:
            if name not in (".", "..", "lost+found") and "/" not in name:
                run(["debugfs", "-R", f"rdump /{name} {folder}", part])
    finally:
        part.unlink()
    return folder


def slot_tree(found: inspection.Inspection, slot: str, scratch: Path) -> Path | None:
    """The slot's root as it runs: its mounts partition on /mounts, with the partition's usr/ on /usr/local and
    var/ on /var; or None when the manifest's root does not fit its partition."""
    tree = _extract_root(found, slot, scratch)
    if tree is None:
        return None
    mounts = _extract_ext4(found, f"mounts_{slot}", scratch)
    install.move_contents(mounts, "usr", tree, "usr/local")
    install.move_contents(mounts, "var", tree, "var")
    for name, mode in beneath.entries(mounts, "."):  # the rest is CLIP's /mounts (the jails' trees)
        if stat.S_ISDIR(mode):
            install.move_contents(mounts, name, tree, f"mounts/{name}")
        else:
            beneath.replace(mounts, name, tree, f"mounts/{name}")
    return tree


def tree_summary(tree: Path, name: str) -> dict[str, Any]:
    """One tree's packages (installed size, ELF files checked, failures) and its failures."""
    report = elfcheck.check_tree(tree, name)
    results = report.by_package()
    packages = []
    for item in install.installed(tree):
        result = results.pop(item.package, {"elf_files": 0, "failures": []})
        packages.append({"package": item.package, "version": item.version, "installed_size": item.size,
                         **result})
    packages += [{"package": name, "version": "", "installed_size": 0, **result}
                 for name, result in sorted(results.items())]  # files no installed package lists
    return {"tree": name, "ok": report.ok, "elf_files": len(report.files),
            "failures": [f.to_dict() for f in report.failures], "packages": packages}


def installed(found: inspection.Inspection) -> list[dict[str, Any]]:
    """The summaries of the active slot's tree and of every RM partition; a tree that cannot be read (a damaged
    filesystem, no dpkg database) is one entry with `ok` false and the `error`, the others are still read."""
    out = []
    with tempfile.TemporaryDirectory(prefix="clipbuild-contents-") as tmp:
        scratch = Path(tmp)
        slot = found.active_slot if found.active_slot in found.manifest["slots"] else \
            sorted(found.manifest["slots"])[0]
        trees: list[tuple[str, Callable[[], Path | None]]] = [
            (f"slot {slot} (root and /usr/local)", lambda: slot_tree(found, slot, scratch))]
        for part in found.manifest["partitions"]:
            if (part.get("mount") or "").startswith("/vservers/") and part.get("fs") == "ext4":
                trees.append((f"{part['label']} ({part['mount']})",
                              lambda label=part["label"]: _extract_ext4(found, label, scratch)))
        for name, extract in trees:
            try:
                tree = extract()
                out.append(tree_summary(tree, name) if tree is not None else
                           {"tree": name, "ok": False, "error": "the manifest's root does not fit its partition"})
            except ClipbuildError as exc:
                out.append({"tree": name, "ok": False, "error": " ".join(exc.lines())})
    return out
