"""Named semantic checks on a resolved profile, run after the schema pass.

Each check reads the resolved `Profile`, returns the problems it finds with their location and how to fix
them, and never stops the others: a user sees everything wrong with a profile in one run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from clipbuild.core.errors import Issue, Location
from clipbuild.core.project import OVERLAY, Project
from clipbuild.core.sizes import MIB, format_size
from clipbuild.spec.layout import minimum_disk_size, partition_footprint
from clipbuild.spec.model import READ_ONLY_FILESYSTEMS, SLOTS, Partition, Profile

# The A/B set of CLIP OS 4: root (partitions 5 and 10) and /mounts (6 and 11). Everything else is shared.
SLOTTED_MOUNTS = ("/", "/mounts")

Check = Callable[[Profile, Project], Iterator[Issue]]
CHECKS: list[Check] = []


def check(func: Check) -> Check:
    CHECKS.append(func)
    return func


def run_checks(profile: Profile, project: Project) -> list[Issue]:
    return [issue for func in CHECKS for issue in func(profile, project)]


def _part_key(part: Partition, key: str = "") -> str:
    return f"disk.partitions[{part.name}]" + (f".{key}" if key else "")


def _issue(profile: Profile, key: str, message: str, hint: str = "") -> Issue:
    loc = profile.origin(key)
    if loc is None and profile.files:
        loc = Location(profile.files[-1])
    return Issue(loc, key, message, hint)


@check
def check_species_complete(profile: Profile, project: Project) -> Iterator[Issue]:
    """A buildable (non-abstract) species needs a version, a disk and a core package set. Keys written with
    a rejected value are already reported by the schema pass."""
    if profile.abstract:
        return
    where = profile.files[-1] if profile.files else "the profile"

    def absent(key: str) -> bool:
        return key not in profile.origins

    if absent("version"):
        yield _issue(profile, "version", f"missing in {where} and its parents", "e.g. version: 4.5.0")
    if absent("disk.size"):
        yield _issue(profile, "disk.size", "missing: the disk image size", "e.g. disk: {size: 4GiB}")
    partitions_rejected = any(key.startswith("disk.partitions") for key in profile.invalid)
    if not partitions_rejected and not any(p.mount == "/" for p in profile.disk.partitions):
        yield _issue(profile, "disk.partitions", "no partition is mounted on /",
                     "add {name: root, fs: squashfs, mount: /, slots: [a, b], verity: true, size: ...}")
    if absent("packages.clip.core"):
        yield _issue(profile, "packages.clip.core", "missing: the core package set",
                     "e.g. packages: {clip: {core: [clip-conf/clip-core-conf]}}")


@check
def check_partition_names_unique(profile: Profile, project: Project) -> Iterator[Issue]:
    counts = Counter(p.name for p in profile.disk.partitions)
    for name, count in counts.items():
        if count > 1:
            yield _issue(profile, f"disk.partitions[{name}]", f"{count} partitions are named '{name}'",
                         "partition names must be unique")


@check
def check_mount_points_unique(profile: Profile, project: Project) -> Iterator[Issue]:
    seen: dict[str, str] = {}
    for part in profile.disk.partitions:
        if part.mount is None:
            continue
        if part.mount in seen:
            yield _issue(profile, _part_key(part, "mount"), f"{part.mount} is already the mount point of "
                         f"partition '{seen[part.mount]}'", "each mount point belongs to one partition")
        seen.setdefault(part.mount, part.name)


@check
def check_mount_matches_fs(profile: Profile, project: Project) -> Iterator[Issue]:
    for part in profile.disk.partitions:
        if part.fs == "swap" and part.mount is not None:
            yield _issue(profile, _part_key(part, "mount"), "a swap partition has no mount point",
                         "remove mount")
        if part.fs != "swap" and part.mount is None:
            yield _issue(profile, _part_key(part, "mount"), f"missing: where the {part.fs} filesystem is mounted",
                         "e.g. mount: /var/log")
        if "ro" in part.options and "rw" in part.options:
            yield _issue(profile, _part_key(part, "options"), "both ro and rw", "keep one")


@check
def check_slots(profile: Profile, project: Project) -> Iterator[Issue]:
    """Slots are [a, b] and only on CLIP's A/B set (/ and /mounts); the rest is shared between slots."""
    for part in profile.disk.partitions:
        if not part.slots:
            continue
        key = _part_key(part, "slots")
        if sorted(part.slots) != sorted(SLOTS) or len(part.slots) != len(SLOTS):
            yield _issue(profile, key, f"slots {list(part.slots)}: an A/B partition has exactly [a, b]",
                         "write slots: [a, b], or remove slots for a shared partition")
        if part.mount not in SLOTTED_MOUNTS:
            what = "swap" if part.fs == "swap" else part.mount
            yield _issue(profile, key, f"partition '{part.name}' ({what}) cannot have slots: only / and "
                         "/mounts are duplicated for A/B updates; the others are shared by both slots",
                         "remove slots")


@check
def check_verity_read_only(profile: Profile, project: Project) -> Iterator[Issue]:
    for part in profile.disk.partitions:
        if part.verity and part.fs not in READ_ONLY_FILESYSTEMS and "ro" not in part.options:
            yield _issue(profile, _part_key(part, "verity"), f"dm-verity needs a read-only filesystem, and "
                         f"{part.fs} on {part.mount} is mounted read-write",
                         f"use fs: {' or '.join(READ_ONLY_FILESYSTEMS)}, or add ro to options")


@check
def check_bootable_layout(profile: Profile, project: Project) -> Iterator[Issue]:
    """What image assembly and the boot chain need: an A/B verity root on a read-only filesystem, an A/B
    /mounts, a FAT /boot for SYSLINUX, and a partition under /vservers/ for each RM level when the rm
    distribution has packages."""
    if profile.abstract or any(key.startswith("disk.partitions") for key in profile.invalid):
        return
    parts = {p.mount: p for p in profile.disk.partitions if p.mount}
    root = parts.get("/")
    if root is not None and (not root.verity or not root.slots):
        yield _issue(profile, _part_key(root), "the root must be under dm-verity in both slots",
                     f"fs: {' or '.join(READ_ONLY_FILESYSTEMS)}, verity: true, slots: [a, b]")
    elif root is not None and root.fs not in READ_ONLY_FILESYSTEMS and "ro" in root.options:
        yield _issue(profile, _part_key(root, "fs"), f"clipbuild builds the verity root as "
                     f"{' or '.join(READ_ONLY_FILESYSTEMS)}, not {root.fs}", "fs: squashfs")
    mounts = parts.get("/mounts")
    if mounts is None or mounts.fs != "ext4" or not mounts.slots:
        key = _part_key(mounts) if mounts else "disk.partitions"
        yield _issue(profile, key, "CLIP needs an ext4 /mounts partition in both slots (the apps part: "
                     "/usr/local and /var)", "{name: mounts, fs: ext4, mount: /mounts, slots: [a, b], size: ...}")
    boot = parts.get("/boot")
    if boot is None or boot.fs != "vfat":
        key = _part_key(boot) if boot else "disk.partitions"
        yield _issue(profile, key, "SYSLINUX needs a vfat partition mounted on /boot",
                     "{name: boot, fs: vfat, mount: /boot, size: 64MiB}")
    if profile.packages.rm is not None and not any(m.startswith("/vservers/") for m in parts):
        yield _issue(profile, "packages.rm", "the rm distribution needs the RM levels' partitions",
                     "add {name: rm_h, fs: ext4, mount: /vservers/rm_h, size: ...} (and rm_b)")


@check
def check_partitions_fit_disk(profile: Profile, project: Project) -> Iterator[Issue]:
    disk = profile.disk
    growing = [p for p in disk.partitions if p.grow]
    for extra in growing[1:]:
        yield _issue(profile, _part_key(extra, "grow"), "only one partition may grow",
                     f"'{growing[0].name}' already takes the free space")
    for part in disk.partitions:
        if part.size % MIB:
            yield _issue(profile, _part_key(part, "size"), f"{part.size} bytes is not a whole number of MiB",
                         "partitions are aligned to 1MiB")
    if disk.size is None:
        return
    if disk.size % MIB:
        yield _issue(profile, "disk.size", f"{disk.size} bytes is not a whole number of MiB")
    needed = minimum_disk_size(disk)
    if needed > disk.size:
        biggest = sorted(disk.partitions, key=partition_footprint, reverse=True)[:3]
        detail = ", ".join(f"{p.name} {format_size(partition_footprint(p))}" for p in biggest)
        yield _issue(profile, "disk.size", f"the partitions need {format_size(needed)} (largest: {detail}, "
                     "with slots, verity hash trees and the partition table), more than the disk's "
                     f"{format_size(disk.size)}", f"make disk.size at least {format_size(needed)}")


@check
def check_jails(profile: Profile, project: Project) -> Iterator[Issue]:
    """Each jail needs its definition jails/<name>.yaml, and appears once."""
    for name, count in Counter(profile.jails).items():
        if count > 1:
            yield _issue(profile, "jails", f"jail '{name}' is listed {count} times")
    available = sorted(p.stem for p in project.jails_dir.glob("*.yaml") if not p.stem.startswith("_"))
    for index, name in enumerate(profile.jails):
        if not (project.jails_dir / f"{name}.yaml").is_file():
            yield _issue(profile, f"jails[{index}]", f"jail '{name}' has no template "
                         f"({project.display(project.jails_dir / (name + '.yaml'))} does not exist)",
                         f"jails available: {', '.join(available) or 'none'}")


@check
def check_project_files(profile: Profile, project: Project) -> Iterator[Issue]:
    """Files the profile names (kernel series and fragments, trust policy) exist in the project."""
    named = [("kernel.series", profile.kernel.series)]
    named += [(f"kernel.fragments[{i}]", f) for i, f in enumerate(profile.kernel.fragments)]
    if profile.signing.policy:
        named.append(("signing.policy", profile.signing.policy))
    for key, relative in named:
        if key in profile.invalid:
            continue
        if outside := _outside(project, project.root, relative):
            yield _issue(profile, key, f"{relative} {outside}", "files a profile names stay inside the project")
        elif not (project.root / relative).is_file():
            yield _issue(profile, key, f"{relative} does not exist in the project ({project.root})")


@check
def check_portage_profile(profile: Profile, project: Project) -> Iterator[Issue]:
    """The Portage profile is a folder of the overlay's profiles/ tree, and symbolic links do not lead out."""
    if "portage.profile" in profile.invalid:
        return
    tree = project.root / OVERLAY / "profiles"
    relative = profile.portage.profile
    if outside := _outside(project, tree, relative):
        yield _issue(profile, "portage.profile", f"'{relative}' {outside}",
                     f"name a profile folder of {project.display(tree)}/, e.g. clip-build/amd64")
    elif tree.is_dir() and not (tree / relative).is_dir():  # a project without an overlay fails at fetch
        yield _issue(profile, "portage.profile", f"'{relative}' is not a folder of {project.display(tree)}/",
                     "e.g. clip-build/amd64")


def _outside(project: Project, base: Path, relative: str) -> str | None:
    """Why `base/relative` leads outside `base` once symbolic links are followed, or None when it stays in."""
    try:
        inside, real = base.resolve(), (base / relative).resolve()
    except (OSError, RuntimeError):  # a symbolic link loop (RuntimeError in Python 3.11)
        return "cannot be resolved (a symbolic link loop)"
    if real.is_relative_to(inside):
        return None
    return f"resolves to {real}, outside {project.display(base)}/"
