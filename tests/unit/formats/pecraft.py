"""PE images for the tests, made by the real tools: unified kernel images with any sections (objcopy onto
systemd-boot-efi's stub), Authenticode signatures (sbsign, through clipbuild's Secure Boot key code), and the
digest sbsign wrote into a signature."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clipbuild.core.run import run
from clipbuild.signing import secureboot

EFI = Path("/usr/lib/systemd/boot/efi")
STUB = EFI / "linuxx64.efi.stub"
SYSTEMD_BOOT = EFI / "systemd-bootx64.efi"
# In a PKCS#7 Authenticode signature, SpcIndirectDataContent's DigestInfo: AlgorithmIdentifier(sha256, NULL),
# then OCTET STRING of 32 bytes: the image digest the signer computed.
DIGEST_INFO_SHA256 = bytes.fromhex("300d06096086480165030402010500" "0420")
PAGE = 0x1000


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    if not STUB.is_file():
        pytest.skip("needs systemd-boot-efi (the UKI stub and systemd-boot)")


def keys(folder: Path, name: str = "keys") -> secureboot.SecureBootKeys:
    """A fresh PK/KEK/db set (RSA-2048), made by clipbuild's own Secure Boot key code."""
    return secureboot.init(folder / name, f"clipbuild test {name}")


def stub_end() -> int:
    """The first page after the stub's last section, read by objdump (binutils), not by the code under test."""
    end = 0
    for line in run(["objdump", "-h", str(STUB)]).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[0].isdigit():
            end = max(end, int(fields[3], 16) + int(fields[2], 16))
    return (end + PAGE - 1) // PAGE * PAGE


def uki(folder: Path, sections: dict[str, bytes], name: str = "uki.efi") -> Path:
    """The stub with `sections` (".name": contents) added in order, each at the next free page."""
    args, at = [], stub_end()
    for section, content in sections.items():
        path = folder / f"section{section}"
        path.write_bytes(content)
        args += ["--add-section", f"{section}={path}", "--change-section-vma", f"{section}={at:#x}"]
        at = (at + len(content) + PAGE - 1) // PAGE * PAGE
    out = folder / name
    run(["objcopy", *args, str(STUB), str(out)])
    return out


def sign(image: Path, keys: secureboot.SecureBootKeys) -> Path:
    """`image` signed with the db key (sbsign under clipbuild's frozen clock), beside it."""
    out = image.with_suffix(".signed.efi")
    secureboot.sign(image, out, keys, 1_700_000_000)
    return out


def signed_digest(signed: bytes) -> bytes:
    """The Authenticode digest sbsign computed and signed (the last DigestInfo in the file: the signature is
    at its end)."""
    at = signed.rfind(DIGEST_INFO_SHA256)
    assert at > 0, "no SHA-256 DigestInfo in the signature"
    start = at + len(DIGEST_INFO_SHA256)
    return signed[start:start + 32]
