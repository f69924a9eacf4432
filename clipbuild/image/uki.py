"""Unified kernel images: one signed EFI binary per A/B slot holding systemd's EFI stub, the kernel, the slot's
command line (its dm-verity table) and an os-release naming the release and the slot.

Debian 12's systemd 252 has no ukify, so the image is made the way ukify does it: objcopy adds the sections
to the stub (`/usr/lib/systemd/boot/efi/linuxx64.efi.stub`), each at a 4 KiB-aligned address after the
stub's last section (platform-notes §9). Under Secure Boot the stub ignores a command line passed by the
loader when the image carries `.cmdline`, so the signed command line is the one that boots.

Only whole UKIs (and systemd-boot) are ever signed, never a bare kernel: a signed bare kernel would accept
any command line and initrd, and so any root hash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from clipbuild.core.errors import ToolError
from clipbuild.core.run import run
from clipbuild.signing.secureboot import frozen_clock

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
LOADER = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
ALIGN = 0x1000
SECTION = re.compile(r"^\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s", re.MULTILINE)


@dataclass(frozen=True)
class UkiParts:
    kernel: Path
    cmdline: str
    osrel: str


def os_release(root_os_release: str, *, release: str, slot: str, version: str) -> str:
    """The UKI's os-release: the slot root's, with the title systemd-boot shows and the version it sorts
    by (IMAGE_VERSION, newest first), plus the slot."""
    drop = ("PRETTY_NAME=", "IMAGE_VERSION=", "CLIP_SLOT=")
    lines = [line for line in root_os_release.splitlines() if line and not line.startswith(drop)]
    lines += [f'PRETTY_NAME="{release} (slot {slot})"', f"IMAGE_VERSION={version}", f"CLIP_SLOT={slot}"]
    return "\n".join(lines) + "\n"


def _stub_end(stub: Path) -> int:
    """The first free address after the stub's sections."""
    listing = run(["objdump", "-h", stub]).stdout
    ends = [int(vma, 16) + int(size, 16) for _, size, vma in SECTION.findall(listing)]
    if not ends:
        raise ToolError(f"{stub}: objdump lists no sections: not an EFI stub?")
    return max(ends)


def build(parts: UkiParts, out: Path, scratch: Path, date: int, stub: Path = STUB) -> None:
    """An unsigned UKI at `out` (objcopy onto the stub; its PE time stamp is `date`); `scratch` holds the
    section files."""
    address = _stub_end(stub)
    args: list[str | Path] = ["objcopy"]
    osrel, cmdline = scratch / "osrel", scratch / "cmdline"
    osrel.write_text(parts.osrel)
    cmdline.write_text(parts.cmdline)
    for name, source in ((".osrel", osrel), (".cmdline", cmdline), (".linux", parts.kernel)):
        address = (address + ALIGN - 1) // ALIGN * ALIGN
        flags = "contents,alloc,load,readonly," + ("code" if name == ".linux" else "data")
        args += ["--add-section", f"{name}={source}", "--change-section-vma", f"{name}={address:#x}",
                 "--set-section-flags", f"{name}={flags}"]
        address += source.stat().st_size
    run([*frozen_clock(date), *args, stub, out], env={"TZ": "UTC"})  # objcopy stamps the PE header
