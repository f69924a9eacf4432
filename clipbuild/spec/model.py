"""The resolved species profile: frozen dataclasses that are also the profile schema.

Each field's `spec()` gives its type, its documentation and its default. docs/profiles.md documents every key
path (a test checks it); `clipbuild profile show SPECIES --resolved --json` prints these objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from portage.dep import isvalidatom
from portage.versions import ververify

from clipbuild.core.errors import Location
from clipbuild.spec import cmdline
from clipbuild.spec.schema import (
    Choice,
    Flag,
    Integer,
    ListOf,
    MapOf,
    Nullable,
    Size,
    Struct,
    Text,
    nearest_origin,
    spec,
)

DISTRIBUTIONS = ("clip", "rm")
PARTS = ("core", "apps")
FILESYSTEMS = ("vfat", "ext4", "squashfs", "erofs", "swap")
READ_ONLY_FILESYSTEMS = ("squashfs", "erofs")
SLOTS = ("a", "b")
# Mount options clipbuild writes to fstab (CLIP's own set, plus the usual hardening ones).
MOUNT_OPTIONS = ("ro", "rw", "nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime", "sync",
                 "errors=panic", "errors=remount-ro", "barrier=1", "discard", "nosymfollow", "defaults")
BOOTLOADERS = ("syslinux", "systemd-boot")


def _atom_error(text: str) -> str | None:
    return None if isvalidatom(text, allow_repo=True) else f"'{text}' is not a Portage package atom"


def _version_error(text: str) -> str | None:
    return None if ververify(text) else f"'{text}' is not a Gentoo version"


def _relative_path_error(text: str) -> str | None:
    parts = text.split("/")
    if text.startswith("/") or ".." in parts or not text:
        return f"'{text}' must be a path inside the project, without '..'"
    return None


def _portage_profile_error(text: str) -> str | None:
    if any(part in (".", "..") for part in text.split("/")):
        return f"'{text}' leaves the overlay's profiles/: '.' and '..' are not allowed"
    return None


KERNEL_ARGUMENT = Text("a kernel argument", hint="boot.cmdline in docs/profiles.md lists what is accepted",
                       validate=cmdline.refusal)
ATOM = Text("a package atom", hint="like clip-conf/clip-core-conf or =app-clip/foo-1.2",
            validate=_atom_error)
USE_FLAG = Text("a USE flag", r"-?[A-Za-z0-9][A-Za-z0-9+_@-]*", "like hardened or -nls")
KEYWORD = Text("a keyword", r"[-~]?[A-Za-z0-9][A-Za-z0-9_-]*|\*\*|~?\*|-\*", "like amd64, ~amd64 or **")
# make.conf variables clipbuild writes itself (those with a key of their own say which), and Portage's that
# choose where files are read from or written to, or what is fetched: a profile's `env` may not set them.
OWN_VARIABLES = {"FEATURES": "portage.features", "CFLAGS": "portage.cflags", "CXXFLAGS": "portage.cflags",
                 "LDFLAGS": "portage.ldflags", "USE": "portage.use", "ACCEPT_KEYWORDS": "portage.accept_keywords",
                 "DEB_DISTRIBUTION": "the package set", "DEB_PRIORITY": "the package set",
                 "CPREFIX": "the package set"}
PLACES = ("DISTDIR", "PKGDIR", "ROOT", "EROOT", "EPREFIX", "SYSROOT", "BROOT", "PORTDIR", "PORTDIR_OVERLAY",
          "EMERGE_LOG_DIR", "CCACHE_DIR", "MAKEOPTS", "ACCEPT_LICENSE", "CLEAN_DELAY", "BINPKG_FORMAT",
          "BINPKG_COMPRESS", "FETCHCOMMAND", "RESUMECOMMAND", "GENTOO_MIRRORS", "SYNC", "CONFIG_PROTECT",
          "CONFIG_PROTECT_MASK", "INSTALL_MASK", "PKG_INSTALL_MASK")


def _env_name_error(name: str) -> str | None:
    if name in OWN_VARIABLES:
        return f"{name} is written by clipbuild: set it with {OWN_VARIABLES[name]}"
    if name in PLACES or name.startswith("PORTAGE_"):
        return f"{name} is written by clipbuild or steers where Portage reads, writes or fetches"
    return None


ENV_NAME = Text("a variable name", r"[A-Z_][A-Z0-9_]*", "upper case, digits and _", validate=_env_name_error)
ENV = MapOf(ENV_NAME, Text("a string"))
PROJECT_PATH = Text("a path inside the project", validate=_relative_path_error,
                    hint="relative to the project root, e.g. kernel-patches/series")
NAME = Text("a name", r"[a-z][a-z0-9_]{0,30}", "lower case letters, digits and _, starting with a letter")
MOUNT_POINT = Text("an absolute mount point", r"/([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?",
                   "an absolute path such as /var/log, without '..' or a trailing /",
                   validate=lambda p: "'..' is not allowed in a mount point" if ".." in p.split("/") else None)


@dataclass(frozen=True)
class PortageSettings:
    profile: str = spec(Text("a Portage profile path", r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*",
                             "relative to the overlay's profiles/, e.g. clip-build/amd64",
                             validate=_portage_profile_error),
                        "Portage profile inside the project overlay (CLIP's profiles/clip-build/<arch>).",
                        default="clip-build/amd64")
    use: tuple[str, ...] = spec(ListOf(USE_FLAG), "Global USE flags; `-flag` turns one off, as in make.conf.",
                                default=())
    features: tuple[str, ...] = spec(ListOf(Text("a FEATURES word", r"-?[a-z0-9][a-z0-9_-]*")),
                                     "Portage FEATURES.", default=())
    cflags: str = spec(Text(), "CFLAGS (and CXXFLAGS) for every package.", default="")
    ldflags: str = spec(Text(), "LDFLAGS for every package.", default="")
    accept_keywords: tuple[str, ...] = spec(ListOf(KEYWORD), "ACCEPT_KEYWORDS, e.g. amd64.", default=())
    package_use: dict[str, tuple[str, ...]] = spec(MapOf(ATOM, ListOf(USE_FLAG)),
                                                   "package.use: atom to USE flags.", default={})
    package_mask: tuple[str, ...] = spec(ListOf(ATOM), "package.mask: atoms never to build.", default=())
    package_unmask: tuple[str, ...] = spec(ListOf(ATOM), "package.unmask: atoms to allow despite a mask.",
                                           default=())
    package_accept_keywords: dict[str, tuple[str, ...]] = spec(
        MapOf(ATOM, ListOf(KEYWORD)), "package.accept_keywords: atom to keywords.", default={})
    env: dict[str, str] = spec(ENV, "Extra make.conf variables (CLIP's DEB_* packaging variables...).",
                               default={})


@dataclass(frozen=True)
class PackageSet:
    atoms: tuple[str, ...] = spec(ListOf(ATOM), "Package atoms to build and install for this part.",
                                  default=())
    use: tuple[str, ...] = spec(ListOf(USE_FLAG), "USE flags added for this (distribution, part) only.",
                                default=())
    env: dict[str, str] = spec(ENV, "make.conf variables for this (distribution, part) only.", default={})


PACKAGE_SET = Struct(PackageSet, shorthand="atoms", what="a list of atoms or a mapping")


@dataclass(frozen=True)
class Distribution:
    core: PackageSet | None = spec(PACKAGE_SET, "The core part: Priority Required, installed in the A/B slot.",
                                   default=None)
    apps: PackageSet | None = spec(PACKAGE_SET, "The apps part: Priority Important, updated live.",
                                   default=None)


@dataclass(frozen=True)
class Packages:
    clip: Distribution | None = spec(Struct(Distribution), "Distribution clip: the core system and CLIP jails.",
                                     default=None)
    rm: Distribution | None = spec(Struct(Distribution), "Distribution rm: the RM_H and RM_B level jails.",
                                   default=None)

    def sets(self) -> list[tuple[str, str, PackageSet]]:
        """Every defined (distribution, part, set), in CLIP's order."""
        out = []
        for dist in DISTRIBUTIONS:
            distribution = getattr(self, dist)
            for part in PARTS:
                if distribution is not None and getattr(distribution, part) is not None:
                    out.append((dist, part, getattr(distribution, part)))
        return out


@dataclass(frozen=True)
class Partition:
    name: str = spec(NAME, "Partition name, unique; slotted ones get _a and _b appended.", required=True)
    size: int = spec(Size(), "Size of one copy of the partition (per slot when slotted).", required=True)
    fs: str = spec(Choice(FILESYSTEMS), "Filesystem.", required=True)
    mount: str | None = spec(Nullable(MOUNT_POINT), "Mount point; none for swap.", default=None)
    options: tuple[str, ...] = spec(ListOf(Choice(MOUNT_OPTIONS)), "Mount options written to fstab.",
                                    default=())
    slots: tuple[str, ...] = spec(ListOf(Choice(SLOTS)), "[a, b] for an A/B partition; empty when shared.",
                                  default=())
    verity: bool = spec(Flag(), "Protect with dm-verity (read-only filesystems only).", default=False)
    grow: bool = spec(Flag(), "Take the disk's free space on top of `size` (at most one partition).",
                      default=False)


@dataclass(frozen=True)
class Disk:
    size: int | None = spec(Nullable(Size()), "Total disk image size.", default=None)
    partitions: tuple[Partition, ...] = spec(ListOf(Struct(Partition)),
                                             "Partitions in disk order; children merge entries by name.",
                                             default=())


@dataclass(frozen=True)
class Kernel:
    package: str = spec(ATOM, "The kernel package atom built from overlays/.",
                        default="sys-kernel/clip-kernel")
    source: str | None = spec(Nullable(Text("a distfile name", r"[A-Za-z0-9][A-Za-z0-9+_.-]*")),
                              "Distfile holding the kernel source tree.", default=None)
    series: str = spec(PROJECT_PATH, "Patch series file: patches applied in order.",
                       default="kernel-patches/series")
    fragments: tuple[str, ...] = spec(ListOf(PROJECT_PATH), "Kernel configuration fragments, merged in order.",
                                      default=())


@dataclass(frozen=True)
class Boot:
    bootloader: str = spec(Choice(BOOTLOADERS), "Boot path: syslinux (BIOS, CLIP's extlinux.conf A/B switch) or "
                           "systemd-boot (UEFI Secure Boot: signed unified kernel images, boot counting, measured "
                           "boot; docs/boot.md).", default="syslinux")
    timeout: int = spec(Integer(0), "Boot menu timeout in tenths of a second (syslinux TIMEOUT; systemd-boot "
                        "shows its menu only when a key is pressed at boot).",
                        default=30)
    cmdline: tuple[str, ...] = spec(ListOf(KERNEL_ARGUMENT),
                                    "Kernel command line arguments, added to what clipbuild sets (root, verity); "
                                    "only those docs/profiles.md lists are accepted.", default=())


@dataclass(frozen=True)
class Signing:
    policy: str | None = spec(Nullable(PROJECT_PATH), "Trust policy file; none means development signing.",
                              default=None)


def _mirror_error(text: str) -> str | None:
    kind, _, where = text.partition(":")
    if text.startswith("/") or (kind in ("dir", "debian", "debian-source", "debian-binary") and where):
        return None
    if kind in ("http", "https") and where.startswith("//") and len(where) > 2:
        return None
    return f"'{text}' is not a mirror"


@dataclass(frozen=True)
class Sources:
    mirrors: tuple[str, ...] = spec(
        ListOf(Text("a mirror", validate=_mirror_error,
                    hint="dir:PATH, an absolute path, http://HOST/PATH/, https://... or debian:SUITE")),
        "Where `clipbuild fetch` looks for distfiles, in order.", default=())


def _species_error(text: str) -> str | None:
    return None if re.fullmatch(r"[a-z][a-z0-9-]*", text) else f"'{text}' is not a species name"


@dataclass(frozen=True)
class Profile:
    species: str = spec(Text("a species name", validate=_species_error), "Species name; defaults to the file name.",
                        default="")
    abstract: bool = spec(Flag(), "A profile only to inherit from (not inherited itself).", default=False)
    description: str = spec(Text(), "One line saying what this species is.", default="")
    version: str = spec(Text("a version", validate=_version_error, hint="a Gentoo version such as 4.5.0"),
                        "System version, as the conf packages pin it.", default="")
    inherits: tuple[str, ...] = spec(ListOf(Text("a profile name"), accept_scalar=True),
                                     "Parent profiles, merged in order before this one.", default=())
    portage: PortageSettings = spec(Struct(PortageSettings), "Portage configuration.",
                                    default=PortageSettings())
    packages: Packages = spec(Struct(Packages), "Package sets per distribution and part.", default=Packages())
    jails: tuple[str, ...] = spec(ListOf(NAME), "Jails of this species; each needs jails/<name>.yaml.",
                                  default=())
    disk: Disk = spec(Struct(Disk), "Disk layout.", default=Disk())
    kernel: Kernel = spec(Struct(Kernel), "Kernel build.", default=Kernel())
    boot: Boot = spec(Struct(Boot), "Boot configuration.", default=Boot())
    signing: Signing = spec(Struct(Signing), "Package signing and trust.", default=Signing())
    sources: Sources = spec(Struct(Sources), "Where distfiles come from.", default=Sources())
    # Not part of the schema: where the profile came from.
    files: tuple[str, ...] = field(default=(), compare=False)
    origins: dict[str, Location] = field(default_factory=dict, compare=False, repr=False)
    invalid: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def origin(self, path: str) -> Location | None:
        """Where the value at key path `path` was written (the nearest written ancestor)."""
        return nearest_origin(self.origins, path)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        data = asdict(self)
        data.pop("origins")
        data.pop("invalid")
        return data


PROFILE_SCHEMA = Struct(Profile)
