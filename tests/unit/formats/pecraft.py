"""PE images for the tests, made by the real tools: unified kernel images (objcopy onto systemd-boot-efi's
stub), Authenticode signatures (sbsign, with keys made here), and the digest sbsign wrote into a signature."""

from __future__ import annotations

import datetime
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from clipbuild.core.run import run

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


@dataclass(frozen=True)
class SigningKey:
    key: Path  # PEM, unencrypted
    cert: Path  # PEM
    der: bytes
    owner: str  # the GUID enrolled with it


def signing_key(folder: Path, name: str) -> SigningKey:
    """A fresh RSA-2048 key and self-signed certificate (what OVMF accepts in db)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clipbuild test {name}")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650)).sign(key, hashes.SHA256()))
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return SigningKey(key_path, cert_path, cert.public_bytes(serialization.Encoding.DER), str(uuid.uuid4()))


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


def sign(image: Path, key: SigningKey, out: Path | None = None) -> Path:
    out = out or image.with_suffix(".signed.efi")
    run(["sbsign", "--key", str(key.key), "--cert", str(key.cert), "--output", str(out), str(image)])
    return out


def signed_digest(signed: bytes) -> bytes:
    """The Authenticode digest sbsign computed and signed (the last DigestInfo in the file: the signature is
    at its end)."""
    at = signed.rfind(DIGEST_INFO_SHA256)
    assert at > 0, "no SHA-256 DigestInfo in the signature"
    start = at + len(DIGEST_INFO_SHA256)
    return signed[start:start + 32]
