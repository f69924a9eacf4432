"""One A/B slot's system, shared by image assembly and updates: the installed trees in CLIP's layout, the
root's configuration, the local mirror, the read-only root filesystem and its dm-verity hash tree."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from clipbuild.core import beneath
from clipbuild.image import elfcheck, fsimage, gpt, install
from clipbuild.signing.devpki import DEVELOPMENT

CLIP_SETS = ("clip-core", "clip-apps")
RM_SETS = ("rm-core", "rm-apps")


def core_trees(debs: list[Path], scratch: Path, progress: Callable[[str], None],
               allow: Mapping[str, Collection[str]] | None = None) -> dict[str, Path]:
    """clip/core and clip/apps installed with dpkg --root, checked as a whole (clipbuild.image.elfcheck: the root
    with /usr/local, as the slot runs it), then split into the root, mounts and log trees."""
    trees = {name: scratch / name for name in ("root", "mounts", "log")}
    for tree in trees.values():
        tree.mkdir(parents=True)
    progress(f"dpkg --root: {len(debs)} clip packages")
    install.install(debs, trees["root"], scratch / "dpkg-clip.log", allow)
    checked(trees["root"], "clip (root and /usr/local)", progress)
    install.split_core(trees["root"], trees["mounts"], trees["log"])
    return trees


def checked(tree: Path, name: str, progress: Callable[[str], None]) -> elfcheck.TreeReport:
    """The whole-tree checks of an installed tree; an ImageError listing every failure."""
    report = elfcheck.check_tree(tree, name)
    report.raise_failures()
    progress(f"{name}: {len(report.files)} ELF files hardened and resolved, one owner per file")
    return report


KERNEL = "boot/vmlinuz-clip"
RELEASE = "etc/shared/clip-release"


def kernel(root: Path) -> Path:
    """The installed kernel's path, checked to be a regular file inside the root (no link out)."""
    return beneath.regular_path(root, KERNEL)


def release(root: Path) -> str:
    """CLIP's release string, as the installed clip-release file says."""
    return beneath.read_text(root, RELEASE).strip()


def configure_root(root: Path, slices: list[gpt.Slice], *, mode: str, species: str, version: str) -> None:
    """/etc/fstab from the partitions, and os-release marked for a development image."""
    beneath.write_text(root, "etc/fstab", fstab(slices))
    text = beneath.read_text(root, "etc/os-release") if beneath.exists(root, "etc/os-release") else ""
    if mode == DEVELOPMENT:
        text += 'VARIANT="development image (packages signed by the clipbuild development PKI)"\nVARIANT_ID=dev\n'
    text += f"IMAGE_ID={species}\nIMAGE_VERSION={version}\n"
    beneath.unlink(root, "etc/os-release")  # often a link to ../usr/lib/os-release: replaced, not written through
    beneath.write_text(root, "etc/os-release", text)


def add_mirror(mounts: Path, pool: dict[str, list[Path]]) -> None:
    """Every signed package in the mounts partition's local mirror, /var/pkg/mirrors/<dist>/ (CLIP's /var/pkg)."""
    for set_name, debs in pool.items():
        target = f"var/pkg/mirrors/{set_name.split('-')[0]}"
        beneath.mkdir(mounts, target)
        for deb in debs:
            beneath.copy_in(deb, mounts, f"{target}/{deb.name}")


def root_filesystem(part: gpt.Slice, tree: Path, out: Path, date: int, species: str) -> None:
    if part.fs == "erofs":
        fsimage.erofs(tree, out, date, part.size, gpt.stable_guid(species, "fs", part.name).lower())
    else:
        fsimage.squashfs(tree, out, date, part.size)


def ext4_filesystem(part: gpt.Slice, tree: Path | None, out: Path, date: int, species: str) -> None:
    """An ext4 partition's filesystem, its UUID fixed by species and partition label (the same at first
    install and after updates)."""
    fsimage.ext4(tree, out, date, part.size, gpt.stable_guid(species, "fs", part.label).lower(), label=part.label)


def salt(species: str, label: str) -> str:
    return hashlib.sha256(f"clipbuild:{species}:salt:{label}".encode()).hexdigest()


def verity(part: gpt.Slice, data: Path, hashes: Path, species: str, version: str) -> dict[str, Any]:
    """The slot's hash tree, with a salt of its own: each slot has its own root hash."""
    result = fsimage.verity_format(data, hashes, salt(species, part.label),
                                   gpt.stable_guid(species, "verity", part.label))
    return {"version": version, "fs": part.fs, "root_partition": part.label,
            "verity_partition": f"{part.label}_verity", "root_hash": result.root_hash,
            "salt": salt(species, part.label), "data_blocks": result.data_blocks}


def fstab(slices: list[gpt.Slice]) -> str:
    """CLIP's fstab (clipos4.md §4) from the profile's partitions: slotted ones by /dev/clip/<name> (the
    booted slot's, linked by rcS), shared ones by GPT label; binds of /mounts/var and /mounts/usr after
    /mounts; /var/log after the /var bind."""
    lines = ["# /etc/fstab written by clipbuild from the species profile's partitions.",
             "# <device>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>"]
    seen: set[str] = set()
    data = [s for s in slices if s.role == "data" and s.mount and s.fs != "swap"]
    order = sorted(data, key=lambda s: (s.mount != "/", s.mount == "/var/log", (s.mount or "").count("/"),
                                        s.mount))
    for part in order:
        if part.name in seen:
            continue
        seen.add(part.name)
        device = f"/dev/clip/{part.name}" if part.slot else f"/dev/disk/by-partlabel/{part.label}"
        if part.mount == "/":
            device = "/dev/dm-0"
        options = ",".join(part.options) or "defaults"
        if part.mount == "/boot":
            options += ",noauto"
        passno = 0 if part.mount in ("/", "/boot") else 2
        lines.append(f"{device}\t{part.mount}\t{part.fs}\t{options}\t0\t{passno}")
        if part.mount == "/mounts":
            lines += ["/mounts/var\t/var\tnone\tbind,nosuid,nodev\t0\t0",
                      "/mounts/usr\t/usr/local\tnone\tbind,nodev\t0\t0"]
    lines.append("tmpfs\t/tmp\ttmpfs\tnosuid,nodev,noexec,mode=1777\t0\t0")
    return "\n".join(lines) + "\n"
