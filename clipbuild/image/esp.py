"""The EFI system partition of the UEFI boot path: signed systemd-boot, one signed unified kernel image per
A/B slot with boot counting, and a loader.conf that pins nothing.

    EFI/BOOT/BOOTX64.EFI        systemd-boot, signed with the db key (the firmware's removable-media path)
    EFI/Linux/clip-a.efi        slot A's UKI, blessed (its boots succeeded)
    EFI/Linux/clip-b+3-0.efi    slot B's UKI, new: three tries left, none done yet
    loader/loader.conf          timeout, editor off; no `default`
    clip/manifest.json          the image manifest (as on the BIOS path's boot partition)

How a slot is chosen (systemd-boot 252, boot loader specification "boot counting"): entries whose tries are used
up sort last, then the newest IMAGE_VERSION (os-release in the UKI) first, then the entry name. systemd-boot
renames `+3-0` to `+2-1` before starting it, so a slot that never reports success falls back to the other by
itself; the booted system renames its entry to the plain name once its boot check passed (clip-sysinfo). A
pinned `default` would defeat that (it keeps booting a slot whose tries are used up), and loader.conf is not
authenticated anyway: anyone who can write the ESP can choose any signed UKI on it. Hence only the two slots'
UKIs are ever on the ESP, an update removes the one it supersedes, and a slot that is not to boot first carries
`+0` (no tries left): listed, bootable by hand, chosen only when nothing else is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOADER_PATH = "EFI/BOOT/BOOTX64.EFI"
LINUX_DIR = "EFI/Linux"
LOADER_CONF = "loader/loader.conf"
TRIES = 3
ENTRY = re.compile(r"clip-([a-z][a-z0-9]{0,7})(?:\+(\d{1,3})(?:-(\d{1,3}))?)?\.efi")


@dataclass(frozen=True)
class Entry:
    """A slot's UKI file name: the slot, and its boot counter (None when blessed)."""

    slot: str
    left: int | None = None
    done: int = 0

    @property
    def name(self) -> str:
        counter = "" if self.left is None else f"+{self.left}-{self.done}"
        return f"clip-{self.slot}{counter}.efi"

    @property
    def path(self) -> str:
        return f"{LINUX_DIR}/{self.name}"

    @property
    def exhausted(self) -> bool:
        return self.left == 0

    @classmethod
    def parse(cls, name: str) -> Entry | None:
        found = ENTRY.fullmatch(name)
        if found is None:
            return None
        slot, left, done = found.groups()
        return cls(slot, None if left is None else int(left), int(done or 0))


def trying(slot: str) -> Entry:
    """A newly written slot: TRIES boots to prove itself."""
    return Entry(slot, TRIES, 0)


def standby(slot: str) -> Entry:
    """A slot kept as the other entry: no tries left, so never chosen while the active one is bootable."""
    return Entry(slot, 0, 0)


def loader_conf() -> str:
    """No menu unless a key is held at boot, no editing of the command line, no default, no automatic entries
    (the firmware setup and other loaders are not the device's business)."""
    return ("# systemd-boot on a CLIP ESP, written by clipbuild. No `default`: boot counting chooses the slot\n"
            "# (docs/boot.md). Unauthenticated like everything on the ESP but the signed binaries.\n"
            "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n")


def _version_words(version: str) -> tuple[tuple[int, int | str], ...]:
    """A version as systemd's strverscmp_improved orders it, near enough for release versions: runs of digits
    compare as numbers, other runs as text."""
    return tuple((0, int(w)) if w.isdigit() else (1, w) for w in re.findall(r"\d+|[^\d.~-]+", version))


def first_choice(entries: list[Entry], versions: dict[str, str]) -> Entry | None:
    """The entry systemd-boot boots when no key is pressed (its config_entry_compare): entries with tries
    left before exhausted ones, then the newest version, then the name, descending; `versions` maps each
    slot to its UKI's IMAGE_VERSION."""
    ordered = sorted(entries, key=lambda e: e.name, reverse=True)
    ordered.sort(key=lambda e: _version_words(versions.get(e.slot, "")), reverse=True)
    ordered.sort(key=lambda e: e.exhausted)
    return ordered[0] if ordered else None
