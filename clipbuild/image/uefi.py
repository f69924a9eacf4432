"""The UEFI boot path of an image: per slot a signed unified kernel image carrying the slot's dm-verity root
hash on its command line, signed systemd-boot, the ESP's files (clipbuild.image.esp) and what a genuine boot
of each slot measures into the TPM (PCR 4, 7, 11: clipbuild.image.measure), recorded in the manifest.

Everything the firmware runs is signed with the db key of the species' Secure Boot set; nothing else on the
ESP is trusted. The command line is inside the signed UKI, so a root modified together with the ESP's files
no longer boots: its root hash would need a new signature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipbuild.core import beneath
from clipbuild.core.errors import InputError
from clipbuild.formats import pe
from clipbuild.image import bootloader, esp, fsimage, measure, slot, uki
from clipbuild.image.manifest import SYSTEMD_BOOT
from clipbuild.signing import secureboot
from clipbuild.signing.devpki import DEVELOPMENT

# A device on this path must reboot when its boot fails, so that boot counting can fall back to the other
# slot (a kernel panic, e.g. a corrupted root block under dm-verity, reboots after 5 s).
UEFI_ARGUMENTS = ("panic=5",)


@dataclass(frozen=True)
class EspSettings:
    guids: dict[str, str]  # partition label -> GUID
    cmdline: tuple[str, ...]  # the profile's kernel arguments
    keys_dir: Path
    keys_digest: str  # what the plan saw: the step's key depends on it
    date: int
    work: Path


def keys_of(settings: EspSettings) -> secureboot.SecureBootKeys:
    keys = secureboot.load(settings.keys_dir)
    if keys.digest() != settings.keys_digest:
        raise InputError(f"{settings.keys_dir}: the Secure Boot certificates changed since the plan was made",
                         hint="run the command again")
    return keys


def cmdline(name: str, info: dict[str, Any], settings: EspSettings) -> str:
    return bootloader.slot_boot(name, info, settings.guids).cmdline((*settings.cmdline, *UEFI_ARGUMENTS))


def slot_uki(name: str, info: dict[str, Any], kernel: Path, command: str, os_release: str, release: str,
             settings: EspSettings, keys: secureboot.SecureBootKeys) -> Path:
    """Slot `name`'s signed UKI (in settings.work), booting `kernel` with `command`."""
    scratch = settings.work / f"uki-{name}"
    scratch.mkdir()
    text = uki.os_release(os_release, release=release, slot=name, version=info["version"])
    unsigned = scratch / "unsigned.efi"
    uki.build(uki.UkiParts(kernel, command, text), unsigned, scratch, settings.date)
    signed = settings.work / f"clip-{name}.efi"
    secureboot.sign(unsigned, signed, keys, settings.date)
    return signed


def signed_loader(settings: EspSettings, keys: secureboot.SecureBootKeys) -> Path:
    out = settings.work / "BOOTX64.EFI"
    secureboot.sign(uki.LOADER, out, keys, settings.date)
    return out


def secure_boot_facts(keys: secureboot.SecureBootKeys) -> dict[str, Any]:
    """The manifest's record of the keys an image was signed for."""
    return {"owner": keys.owner, **{role: {"subject": keys.subject(role), "sha256": keys.fingerprint(role)}
                                    for role in secureboot.ROLES}}


def record_slot(info: dict[str, Any], entry: esp.Entry, signed: Path, loader: Path, vars_file: Path,
                keys: secureboot.SecureBootKeys, command: str) -> None:
    """A slot's manifest entry gains its UKI (path, digest), command line and PCR predictions."""
    data = signed.read_bytes()
    info["uki"] = entry.path
    info["uki_sha256"] = hashlib.sha256(data).hexdigest()
    info["cmdline"] = command
    info["pcrs"] = measure.predict(vars_file, loader.read_bytes(), data, keys.der("db"), keys.owner).to_dict()


def esp_files(progress: Callable[[str], None], settings: EspSettings, root: Path, slots: dict[str, dict[str, Any]],
              manifest: dict[str, Any], release: str, scratch: Path) -> dict[str, Path]:
    """Everything the ESP holds (path in the FAT image -> file) for a new image: slot A (the first) blessed,
    the others on standby; the manifest gains the boot facts."""
    keys = keys_of(settings)
    loader = signed_loader(settings, keys)
    vars_file = settings.work / "OVMF_VARS.fd"
    secureboot.enrolled_vars(keys, vars_file)
    os_release = beneath.read_text(root, "etc/os-release")
    kernel = slot.kernel(root)
    names = sorted(slots)
    conf = scratch / "loader.conf"
    conf.write_text(esp.loader_conf())
    files = {esp.LOADER_PATH: loader, esp.LOADER_CONF: conf}
    for name in names:
        progress(f"unified kernel image of slot {name}, signed with {keys.subject('db')}")
        command = cmdline(name, slots[name], settings)
        signed = slot_uki(name, slots[name], kernel, command, os_release, release, settings, keys)
        entry = esp.Entry(name) if name == names[0] else esp.standby(name)
        record_slot(slots[name], entry, signed, loader, vars_file, keys, command)
        files[entry.path] = signed
    manifest["boot"] = {"loader": SYSTEMD_BOOT, "secure_boot": secure_boot_facts(keys)}
    return files


# -- updates -----------------------------------------------------------------------------------------------

def keys_for(manifest: dict[str, Any], keys_dir: Path | None, where: str) -> secureboot.SecureBootKeys:
    """The Secure Boot keys of an image of the UEFI path (to boot, check or update it): `keys_dir`, else the
    development set for a development image; either way the set the image was signed for (same db
    certificate)."""
    if keys_dir is None and manifest["signing"] != DEVELOPMENT:
        raise InputError(f"{where} is a release image of the UEFI path: give its Secure Boot key folder with "
                         "--secureboot-keys DIR")
    keys = secureboot.load(keys_dir) if keys_dir else secureboot.development()
    enrolled = (manifest.get("boot") or {}).get("secure_boot", {}).get("db", {}).get("sha256")
    if enrolled != keys.fingerprint("db"):
        raise InputError(f"{where} was signed for the db certificate {enrolled}, not {keys.cert('db')} "
                         f"({keys.fingerprint('db')})", hint="give the image's key folder with --secureboot-keys")
    return keys


def install_slot(mtools: str, target: str, info: dict[str, Any], kernel: Path, os_release: str, release: str,
                 settings: EspSettings, keys: secureboot.SecureBootKeys) -> None:
    """An updated slot's signed UKI onto the ESP with TRIES boots to prove itself, every older UKI of that slot
    removed (a superseded signed UKI left there could be chosen by anyone who can write the ESP); `info` gains
    the UKI and its PCR predictions."""
    command = cmdline(target, info, settings)
    signed = slot_uki(target, info, kernel, command, os_release, release, settings, keys)
    for name in fsimage.vfat_list(mtools, esp.LINUX_DIR):
        entry = esp.Entry.parse(name)
        if entry is not None and entry.slot == target:
            fsimage.vfat_delete(mtools, entry.path)
    entry = esp.trying(target)
    fsimage.vfat_replace(mtools, entry.path, signed, settings.date)
    vars_file, loader = prediction_inputs(mtools, keys, settings.work)
    record_slot(info, entry, signed, loader, vars_file, keys, command)


def prediction_inputs(mtools: str, keys: secureboot.SecureBootKeys, scratch: Path) -> tuple[Path, Path]:
    """What PCR predictions for an existing ESP need besides a UKI, in `scratch`: OVMF's variables with `keys`
    enrolled, and the signed systemd-boot read from the ESP."""
    vars_file, loader = scratch / "OVMF_VARS.fd", scratch / "BOOTX64.EFI"
    secureboot.enrolled_vars(keys, vars_file)
    fsimage.vfat_read(mtools, esp.LOADER_PATH, loader)
    return vars_file, loader


def switch_to(mtools: str, state: EspState, slot_name: str) -> None:
    """Make `slot_name` the slot systemd-boot boots first (rollback): its entry blessed, every other slot's
    on standby (no tries left), by renaming only."""
    for name, entry in state.entries.items():
        wanted = esp.Entry(name) if name == slot_name else esp.standby(name)
        if entry.name != wanted.name:
            fsimage.vfat_rename(mtools, entry.path, wanted.path)


# -- reading an ESP back ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class EspState:
    """What an image's ESP says: each slot's entry, the slot systemd-boot boots first, the root hash each
    slot's UKI commands (from its signed .cmdline), and any other file in EFI/Linux (a stale or foreign UKI
    anyone with access to the ESP could choose)."""

    entries: dict[str, esp.Entry]
    active: str | None
    root_hashes: dict[str, str]
    foreign: tuple[str, ...]


def read_esp(mtools: str, manifest: dict[str, Any], scratch: Path) -> EspState:
    """The ESP of an image of the UEFI path (`mtools`: the partition as mtools addresses it)."""
    entries: dict[str, esp.Entry] = {}
    foreign = []
    for name in fsimage.vfat_list(mtools, esp.LINUX_DIR):
        entry = esp.Entry.parse(name)
        if entry is None or entry.slot not in manifest["slots"] or entry.slot in entries:
            foreign.append(name)
        else:
            entries[entry.slot] = entry
    hashes = {}
    for slot_name, entry in entries.items():
        command = (pe.section_data(uki_bytes(mtools, entry, scratch), ".cmdline") or b"").decode(errors="replace")
        found = bootloader.VERITY_ROOT_HASH.search(command + " ")
        hashes[slot_name] = found.group(1) if found else ""
    versions = {name: info["version"] for name, info in manifest["slots"].items()}
    chosen = esp.first_choice(list(entries.values()), versions)
    return EspState(entries, chosen.slot if chosen else None, hashes, tuple(foreign))


def uki_bytes(mtools: str, entry: esp.Entry, scratch: Path) -> bytes:
    out = scratch / f"uki-{entry.slot}.efi"
    out.unlink(missing_ok=True)
    fsimage.vfat_read(mtools, entry.path, out)
    return out.read_bytes()
