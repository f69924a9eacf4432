"""Reading an image back: `clipbuild inspect IMAGE [--verify]`.

Everything comes from the image file itself: the GPT, the manifest the image stage wrote on the boot
partition, the A/B switch (`extlinux.conf`) and each slot's boot entry. `--verify` re-checks, without root:
the GPT against the manifest; each slot's root against the root hash its boot entry passes to the kernel
(veritysetup verify over the partitions); each slot's kernel against the digest recorded at build; and every
package of the local mirror in each mounts partition, both signatures against the trust policy, and its
digest against the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipbuild.core import beneath, safefile
from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import ImageError
from clipbuild.core.run import run
from clipbuild.formats import pe
from clipbuild.image import bootloader, esp, fsimage, gpt, uefi
from clipbuild.image.manifest import EMBEDDED_MANIFEST, SYSTEMD_BOOT, boot_loader, check_shape
from clipbuild.signing import secureboot, trust


@dataclass
class Inspection:
    image: Path
    disk_guid: str
    entries: list[gpt.Entry]
    manifest: dict[str, Any]
    active_slot: str | None
    boot_hashes: dict[str, str]  # slot -> root hash in that slot's current entry
    table_digest: str = ""  # SHA-256 of the GPT's primary header and entries (gpt.Table.digest)
    esp: uefi.EspState | None = None  # the UEFI path's ESP (None on the BIOS path)
    secureboot_cert: Path | None = None  # the db certificate verify() checks the ESP's signatures with

    def entry(self, label: str) -> gpt.Entry:
        for e in self.entries:
            if e.label == label:
                return e
        raise ImageError(f"{self.image}: no partition labelled {label} in the GPT")

    def boot(self) -> gpt.Entry:
        label = next((p["label"] for p in self.manifest["partitions"] if p["mount"] == "/boot"), None)
        if label is None:
            raise ImageError(f"{self.image}: the manifest names no /boot partition")
        return self.entry(label)

    def mtools(self) -> str:
        """The boot partition as mtools addresses it inside the image file."""
        return f"{self.image}@@{self.boot().start}"

    def slices(self) -> list[gpt.Slice]:
        """The partitions: what each holds from the manifest, where it is (start, size, GUID) from the GPT,
        whose layout `gpt.read_gpt` checked: an edited manifest never moves a write."""
        out = []
        for part in self.manifest["partitions"]:
            e = self.entry(part["label"])
            out.append(gpt.Slice.from_dict({**part, "start": e.start, "size": e.size, "guid": e.guid}))
        return out

    def slice(self, label: str) -> gpt.Slice:
        found = next((s for s in self.slices() if s.label == label), None)
        if found is None:
            raise ImageError(f"{self.image}: the manifest describes no partition labelled {label}")
        return found

    def check_writable(self) -> str:
        """Refuse, before any write, an image whose parts disagree: the switch naming no slot of the image, a
        manifest partition that is not the GPT's, a slot without its partitions or with a root larger than its
        partition. Returns the active slot."""
        by_label = {e.label: e for e in self.entries}
        for part in self.manifest["partitions"]:
            entry = by_label.get(part["label"])
            if entry is None or (entry.start, entry.size, entry.guid) != (part["start"], part["size"], part["guid"]):
                raise ImageError(f"{self.image}: partition {part['label']}: the manifest on the boot partition "
                                 "disagrees with the GPT; refused before any write",
                                 hint="the boot partition was edited or damaged: restore the image")
        for name, info in self.manifest["slots"].items():
            root = self.entry(info["root_partition"])
            self.entry(info["verity_partition"])
            self.entry(f"mounts_{name}")
            if not 0 < info["data_blocks"] * fsimage.VERITY_BLOCK <= root.size:
                raise ImageError(f"{self.image}: slot {name}: {info['data_blocks']} data blocks do not fit "
                                 f"partition {root.label}; refused before any write")
        if self.active_slot not in self.manifest["slots"]:
            raise ImageError(f"{self.image}: extlinux.conf selects slot {self.active_slot!r}, which the image does "
                             f"not have (slots: {', '.join(sorted(self.manifest['slots']))}); refused before any "
                             "write", hint="restore the image's boot partition")
        return self.active_slot or ""

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "image": str(self.image), "species": m["species"], "version": m["version"], "release": m["release"],
            "signing": m["signing"], "active_slot": self.active_slot, "disk_guid": self.disk_guid,
            "partitions": [{"number": e.number, "label": e.label, "start": e.start, "size": e.size,
                            "guid": e.guid, "type": e.type_guid} for e in self.entries],
            "slots": {slot: {"version": info["version"], "root_hash": info["root_hash"],
                             "boot_entry_root_hash": self.boot_hashes.get(slot), **self._uefi_slot(slot, info)}
                      for slot, info in sorted(m["slots"].items())},
            "packages": [{k: p[k] for k in ("set", "package", "version", "sha256")} for p in m["packages"]],
            "signers": m["signers"], "boot": m.get("boot") or {"loader": "syslinux"},
        }

    def _uefi_slot(self, slot: str, info: dict[str, Any]) -> dict[str, Any]:
        """A slot's UKI as the ESP names it now (its boot counter), and its PCR predictions; {} on the BIOS path."""
        if self.esp is None:
            return {}
        entry = self.esp.entries.get(slot)
        return {"uki": entry.path if entry else None, "pcrs": info.get("pcrs", {})}


def slot_packages(manifest: dict[str, Any], slot: str) -> list[dict[str, Any]]:
    """What the manifest says a slot holds (images from before per-slot lists: the image's list)."""
    return manifest["slots"][slot].get("packages") or manifest["packages"]


MAX_BOOT_FILE = 4 << 20  # a manifest or a SYSLINUX config is far smaller


def read_boot_file(image: Path, start: int, name: str, scratch: Path) -> str:
    """A text file of the boot partition: bounded in size, UTF-8, else an ImageError naming it."""
    out = scratch / Path(name).name
    fsimage.vfat_read(f"{image}@@{start}", name, out)
    with os.fdopen(safefile.open_regular(out, follow=False, max_size=MAX_BOOT_FILE), "rb") as stream:
        data = stream.read()
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise ImageError(f"{image}: {name} on the boot partition is not UTF-8 text (byte {exc.start})",
                         hint="the boot partition was changed or damaged; restore the image") from None


def _manifest(image: Path, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ImageError(f"{image}: {EMBEDDED_MANIFEST} on the boot partition is not JSON ({str(exc)[:80]})",
                         hint="was it made by clipbuild image?") from None
    return check_shape(data, f"{image}: {EMBEDDED_MANIFEST}")


def read(image: Path) -> Inspection:
    table = gpt.read_gpt(image)  # a regular file (never a FIFO, folder or dangling link), its GPT checked
    disk_guid, entries = table.disk_guid, table.entries
    boot = next((e for e in entries if e.label == "boot"), None) or next(
        (e for e in entries if e.type_guid == gpt.TYPES["esp"]), None)
    if boot is None:
        raise ImageError(f"{image}: no boot partition in the GPT")
    with tempfile.TemporaryDirectory(prefix="clipbuild-inspect-") as tmp:
        scratch = Path(tmp)
        manifest = _manifest(image, read_boot_file(image, boot.start, EMBEDDED_MANIFEST, scratch))
        if boot_loader(manifest) == SYSTEMD_BOOT:
            state = uefi.read_esp(f"{image}@@{boot.start}", manifest, scratch)
            return Inspection(image, disk_guid, entries, manifest, state.active, state.root_hashes, table.digest,
                              state)
        active = bootloader.active_slot(read_boot_file(image, boot.start, bootloader.SWITCH, scratch))
        hashes = {}
        for slot in manifest.get("slots", {}):
            text = read_boot_file(image, boot.start, f"{bootloader.DIRECTORY}/"
                                   f"{bootloader.slot_config_name(slot)}", scratch)
            hashes[slot] = current_root_hash(text)
    return Inspection(image, disk_guid, entries, manifest, active, hashes, table.digest)


def current_root_hash(slot_config: str) -> str:
    """The root hash in the dm-verity table of the config's default (first) entry."""
    match = re.search(r"APPEND .*?" + bootloader.VERITY_ROOT_HASH.pattern, slot_config)
    return match.group(1) if match else ""


@dataclass
class Report:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, what: str, ok: bool, detail: str = "") -> None:
        self.checks.append((what, ok, detail))

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [{"check": w, "ok": ok, "detail": d} for w, ok, d in self.checks]}


def verify(found: Inspection, policy: trust.Policy) -> Report:
    report = Report()
    _verify_table(found, report)
    with tempfile.TemporaryDirectory(prefix="clipbuild-verify-") as tmp:
        scratch = Path(tmp)
        if found.esp is not None:
            _verify_esp(found, scratch, report)
        for slot, info in sorted(found.manifest["slots"].items()):
            verify_slot(found, slot, info, scratch, report)
        _verify_packages(found, policy, scratch, report)
    return report


def _verify_table(found: Inspection, report: Report) -> None:
    by_label = {e.label: e for e in found.entries}
    for part in found.manifest["partitions"]:
        entry = by_label.get(part["label"])
        same = entry is not None and (entry.start, entry.size, entry.guid) == (part["start"], part["size"],
                                                                                part["guid"])
        report.add(f"partition {part['label']}", same, "" if same else "differs from the manifest")


def copy_root(found: Inspection, slot: str, info: dict[str, Any], scratch: Path) -> tuple[Path, Path] | None:
    """A slot's root data and its hash tree copied out of the image (sparse), or None when the manifest's
    data block count does not fit the root partition."""
    data, hashes = scratch / f"root_{slot}.img", scratch / f"root_{slot}_verity.img"
    root, tree = found.entry(info["root_partition"]), found.entry(info["verity_partition"])
    if not 0 < info["data_blocks"] * fsimage.VERITY_BLOCK <= root.size:
        return None
    gpt.copy_out(found.image, root.start, info["data_blocks"] * fsimage.VERITY_BLOCK, data)
    gpt.copy_out(found.image, tree.start, tree.size, hashes)
    return data, hashes


def verify_slot(found: Inspection, slot: str, info: dict[str, Any], scratch: Path, report: Report) -> None:
    copied = copy_root(found, slot, info, scratch)
    if copied is None:
        report.add(f"slot {slot}: root verifies against its root hash (dm-verity)", False,
                   f"the manifest's {info['data_blocks']} data blocks do not fit {info['root_partition']}")
        return
    data, hashes = copied
    boot_hash = found.boot_hashes.get(slot, "")
    report.add(f"slot {slot}: boot entry root hash = manifest", boot_hash == info["root_hash"],
               boot_hash or "no verity table in the boot entry")
    intact = fsimage.verity_verify(data, hashes, boot_hash or info["root_hash"])
    report.add(f"slot {slot}: root verifies against its root hash (dm-verity)", intact,
               "" if intact else f"{info['root_partition']} does not match its hash tree")
    if found.esp is not None:
        _verify_uki(found, slot, info, scratch, report)
    else:
        kernel = scratch / f"vmlinuz-{slot}"
        fsimage.vfat_read(found.mtools(), bootloader.kernel_name(slot), kernel)
        same = sha256_file(kernel) == info["kernel_sha256"]
        report.add(f"slot {slot}: kernel on the boot partition = the one installed in its root", same)
    data.unlink()
    hashes.unlink()


def _verify_esp(found: Inspection, scratch: Path, report: Report) -> None:
    """Nothing on the ESP's EFI/Linux but the slots' UKIs; systemd-boot signed with db."""
    assert found.esp is not None
    report.add("ESP: no unified kernel image but the slots'", not found.esp.foreign, ", ".join(found.esp.foreign))
    if found.secureboot_cert is not None:
        loader = scratch / "BOOTX64.EFI"
        fsimage.vfat_read(found.mtools(), esp.LOADER_PATH, loader)
        signed, said = secureboot.verify(loader, found.secureboot_cert)
        report.add(f"ESP: systemd-boot signed with db ({found.secureboot_cert})", signed, "" if signed else said)


def _verify_uki(found: Inspection, slot: str, info: dict[str, Any], scratch: Path, report: Report) -> None:
    """A slot's UKI on the ESP: there, holding the kernel installed in its root, and (with the db
    certificate the image is checked against) signed by it."""
    assert found.esp is not None
    entry = found.esp.entries.get(slot)
    report.add(f"slot {slot}: unified kernel image on the ESP", entry is not None,
               entry.path if entry else f"no {esp.LINUX_DIR}/clip-{slot}*.efi")
    if entry is None:
        return
    data = uefi.uki_bytes(found.mtools(), entry, scratch)
    kernel = pe.section_data(data, ".linux") or b""
    report.add(f"slot {slot}: kernel in its UKI = the one installed in its root",
               hashlib.sha256(kernel).hexdigest() == info["kernel_sha256"])
    if found.secureboot_cert is not None:
        signed, said = secureboot.verify(scratch / f"uki-{slot}.efi", found.secureboot_cert)
        report.add(f"slot {slot}: UKI signed with db ({found.secureboot_cert})", signed, "" if signed else said)


def _mirror_debs(mirror: Path) -> dict[str, Path]:
    """The .deb files of a mirror copied out of an image, as `dist/file`: a link (in or out) is not a package."""
    folders = [d for d, mode in beneath.entries(mirror, "mirrors") if stat.S_ISDIR(mode)] \
        if beneath.is_dir(mirror, "mirrors") else []
    return {f"{d}/{name}": mirror / "mirrors" / d / name for d in folders
            for name, mode in beneath.entries(mirror, f"mirrors/{d}") if stat.S_ISREG(mode) and name.endswith(".deb")}


def _verify_packages(found: Inspection, policy: trust.Policy, scratch: Path, report: Report) -> None:
    for slot in sorted(found.manifest["slots"]):
        entries = slot_packages(found.manifest, slot)
        expected = {f"{p['set'].split('-')[0]}/{p['file']}": p for p in entries}
        label = f"mounts_{slot}"
        entry = found.entry(label)
        part = scratch / f"{label}.img"
        gpt.copy_out(found.image, entry.start, entry.size, part)
        mirror = scratch / label
        mirror.mkdir()
        run(["debugfs", "-R", f"rdump /var/pkg/mirrors {mirror}", part])
        debs = _mirror_debs(mirror)
        part.unlink()
        missing = sorted(set(expected) - set(debs))
        report.add(f"{label}: every package of the manifest is in the local mirror", not missing,
                   ", ".join(missing))
        for name, path in sorted(debs.items()):
            verdict = trust.verify_file(path, policy)
            # A package the manifest does not list is an older one the mirror keeps for rollback (CLIP's apt cache).
            matches = name not in expected or sha256_file(path) == expected[name]["sha256"]
            detail = "; ".join(verdict.reasons) or ("" if matches else "not the package the manifest lists")
            if name not in expected and not detail:
                detail = "kept in the mirror, not installed"
            report.add(f"{label}: {name} (developer and controller signatures)", verdict.ok and matches, detail)
