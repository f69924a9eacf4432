"""The boot partition: SYSLINUX (BIOS) with CLIP OS 4's A/B switch.

As in CLIP (clipos4.md §4), `extlinux.conf` holds only `include extlinux_<slot>.conf`: switching slots is
rewriting that one line. Each slot's file has the current entry (its own kernel, with its root hash in the
dm-verity table on the command line) and "version precedente", which boots the other slot. The FAT image is
made with mtools and SYSLINUX is installed with its mtools installer (`syslinux --install`), never
`extlinux`, which needs a mounted filesystem. The disk's MBR gets syslinux's gptmbr.bin.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipbuild.core.run import run
from clipbuild.image.fsimage import Verity

SYSLINUX_MODULES = Path("/usr/lib/syslinux/modules/bios")
GPTMBR = Path("/usr/lib/syslinux/mbr/gptmbr.bin")
MODULES = ("menu.c32", "libutil.c32", "libcom32.c32")
DIRECTORY = "syslinux"
SWITCH = f"{DIRECTORY}/extlinux.conf"


# The root hash in a dm-verity table as SlotBoot.cmdline writes it (group 1), wherever a command line is read back.
VERITY_ROOT_HASH = re.compile(r"verity 1 \S+ \S+ \d+ \d+ \d+ \d+ \w+ ([0-9a-f]{64}) ")


def slot_config_name(slot: str) -> str:
    return f"extlinux_{slot}.conf"


def kernel_name(slot: str) -> str:
    return f"vmlinuz-{slot}"


@dataclass(frozen=True)
class SlotBoot:
    """What booting one slot takes: its kernel on the boot partition and its root's verity table."""

    slot: str
    version: str
    verity: Verity
    data_guid: str
    hash_guid: str
    fstype: str

    def cmdline(self, extra: tuple[str, ...]) -> str:
        v = self.verity
        data, hashes = f"PARTUUID={self.data_guid.lower()}", f"PARTUUID={self.hash_guid.lower()}"
        table = (f"root,,,ro,0 {v.data_sectors} verity 1 {data} {hashes} 4096 4096 {v.data_blocks} 1 sha256 "
                 f"{v.root_hash} {v.salt} 1 panic_on_corruption")
        words = [f'dm-mod.create="{table}"', f"dm-mod.waitfor={data},{hashes}", "root=/dev/dm-0",
                 f"rootfstype={self.fstype}", "ro", f"clip.slot={self.slot}", *extra]
        return " ".join(words)


def slot_boot(slot: str, info: Mapping[str, Any], guids: Mapping[str, str]) -> SlotBoot:
    """A slot's boot facts from its manifest entry; `guids` maps partition labels to GUIDs."""
    verity = Verity(info["root_hash"], info["salt"], info["data_blocks"], 0)
    return SlotBoot(slot, info["version"], verity, guids[info["root_partition"]], guids[info["verity_partition"]],
                    info["fs"])


def configs(title: str, timeout: int, slots: Mapping[str, Mapping[str, Any]], guids: Mapping[str, str],
            extra: tuple[str, ...]) -> dict[str, str]:
    """extlinux_<slot>.conf for every slot: its own entry first, the other slot as "version precedente"."""
    names = sorted(slots)
    out = {}
    for name in names:
        other = next((o for o in names if o != name), name)
        out[name] = slot_config(title, timeout, slot_boot(name, slots[name], guids),
                                slot_boot(other, slots[other], guids), extra)
    return out


def slot_config(title: str, timeout: int, current: SlotBoot, other: SlotBoot, extra: tuple[str, ...]) -> str:
    return "\n".join([
        f"# CLIP boot entries with slot {current.slot} active; {SWITCH} includes this file to select it.",
        "SERIAL 0 115200",
        "CONSOLE 0",
        "UI menu.c32",
        f"MENU TITLE {title}",
        f"TIMEOUT {timeout}",
        "PROMPT 0",
        "ALLOWOPTIONS 0",
        "NOESCAPE 1",
        "",
        "LABEL CLIP",
        f"  MENU LABEL CLIP, version courante ({current.version}, slot {current.slot})",
        "  MENU DEFAULT",
        f"  KERNEL /{kernel_name(current.slot)}",
        f"  APPEND {current.cmdline(extra)}",
        "",
        "LABEL CLIP-OLD",
        f"  MENU LABEL CLIP, version precedente ({other.version}, slot {other.slot})",
        f"  KERNEL /{kernel_name(other.slot)}",
        f"  APPEND {other.cmdline(extra)} oldclip",
        "",
    ])


def switch_config(slot: str) -> str:
    return f"include {slot_config_name(slot)}\n"


def active_slot(switch_text: str) -> str | None:
    """The slot `extlinux.conf` selects, or None when it is not a plain include of a slot file."""
    words = switch_text.split()
    if len(words) == 2 and words[0].lower() == "include":
        name = words[1]
        slot = name.removeprefix("extlinux_").removesuffix(".conf")
        if name == slot_config_name(slot) and re.fullmatch(r"[a-z][a-z0-9]{0,7}", slot):
            return slot
    return None


def files(configs: dict[str, str], kernels: dict[str, Path], active: str, scratch: Path) -> dict[str, Path]:
    """Everything the boot partition holds (path in the FAT image -> file), configs written to `scratch`."""
    out: dict[str, Path] = {}
    for slot, text in configs.items():
        path = scratch / slot_config_name(slot)
        path.write_text(text)
        out[f"{DIRECTORY}/{slot_config_name(slot)}"] = path
    switch = scratch / "extlinux.conf"
    switch.write_text(switch_config(active))
    out[SWITCH] = switch
    for module in MODULES:
        out[f"{DIRECTORY}/{module}"] = SYSLINUX_MODULES / module
    for slot, kernel in kernels.items():
        out[kernel_name(slot)] = kernel
    return out


def install(boot_image: Path, date: int) -> None:
    """SYSLINUX's loader into the FAT image (mtools installer: no root, no mount)."""
    run(["syslinux", "--install", "--directory", f"/{DIRECTORY}", boot_image],
        env={"SOURCE_DATE_EPOCH": str(date), "MTOOLS_SKIP_CHECK": "1"})


def mbr_code() -> bytes:
    return GPTMBR.read_bytes()
