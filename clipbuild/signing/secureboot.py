"""UEFI Secure Boot keys (PK, KEK, db), kept apart from the package-signing PKI, and what is done with them:
signing EFI binaries (sbsign), checking them (sbverify), and OVMF variables with the keys enrolled.

    DIR/PK.crt  PK.key      the platform key: signs KEK updates (firmware owner)
    DIR/KEK.crt KEK.key     the key exchange key: signs db/dbx updates
    DIR/db.crt  db.key      the signature database key: signs systemd-boot and the unified kernel images
    DIR/owner.guid          the EFI signature owner GUID of the three entries

RSA, because OVMF refuses ECDSA signatures (platform-notes §9). A build needs only the three certificates and
db.key; PK.key and KEK.key are needed only to change the firmware's keys, and a release set keeps them (and
db.key, ideally behind a signing service) away from any build tree: `check_outside` refuses a key folder inside
the project or clipbuild's cache. The development set lives in the cache, is created on first use and signs
development images only.

Signatures are reproducible: sbsign writes the signing time into the PKCS#7 signed attributes, so it runs
under faketime at SOURCE_DATE_EPOCH (a frozen clock).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from clipbuild.core import safefile
from clipbuild.core.errors import InputError, SigningError
from clipbuild.core.paths import cache_dir
from clipbuild.core.run import run

ROLES = ("PK", "KEK", "db")
OWNER_FILE = "owner.guid"
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
BITS = (2048, 3072, 4096)
DEVELOPMENT_ORGANISATION = "clipbuild DEVELOPMENT Secure Boot keys (not for release)"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MIN_VALIDITY = dt.timedelta(days=30)


@dataclass(frozen=True)
class SecureBootKeys:
    directory: Path
    owner: str  # the EFI signature owner GUID

    def cert(self, role: str) -> Path:
        return self.directory / f"{role}.crt"

    def key(self, role: str) -> Path | None:
        path = self.directory / f"{role}.key"
        return path if path.is_file() else None

    def der(self, role: str) -> bytes:
        return _load_cert(self.cert(role)).public_bytes(serialization.Encoding.DER)

    def fingerprint(self, role: str) -> str:
        return hashlib.sha256(self.der(role)).hexdigest()

    def subject(self, role: str) -> str:
        return _load_cert(self.cert(role)).subject.rfc4514_string()

    def digest(self) -> str:
        """Over the three certificates and the owner: what an image signed with this set depends on."""
        h = hashlib.sha256(self.owner.encode())
        for role in ROLES:
            h.update(self.der(role))
        return h.hexdigest()


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(safefile.read_regular(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable PEM certificate ({exc})",
                         hint="a Secure Boot key folder holds PK.crt, KEK.crt, db.crt and owner.guid "
                              "(clipbuild pki secureboot init DIR makes one)") from None


def _certificate(key: rsa.RSAPrivateKey, name: str, organisation: str, issuer: tuple[rsa.RSAPrivateKey, x509.Name]
                 | None, start: dt.datetime, days: int) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer, issuer_name = issuer or (key, subject)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(signer, hashes.SHA256()))


def init(directory: Path, organisation: str, *, bits: int = 2048, days: int = 3650) -> SecureBootKeys:
    """A new key set in `directory` (which must not exist): PK self-signed, KEK signed by PK, db signed by KEK.
    Written under a temporary name and renamed when complete."""
    if bits not in BITS:
        raise InputError(f"--bits {bits}: OVMF and shim take RSA {', '.join(map(str, BITS))}")
    if directory.exists():
        raise InputError(f"{directory}: already exists; a Secure Boot key set is never overwritten",
                         hint="choose a new folder (rotating the keys means enrolling new ones in every machine)")
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o700)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    issuer: tuple[rsa.RSAPrivateKey, x509.Name] | None = None
    for role in ROLES:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        cert = _certificate(key, f"{organisation} {role}", organisation, issuer, start, days)
        fd = os.open(tmp / f"{role}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as stream:  # in the clear: sbsign reads it without a prompt
            stream.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        safefile.write_atomic(tmp / f"{role}.crt", cert.public_bytes(serialization.Encoding.PEM))
        issuer = (key, cert.subject)
    safefile.write_atomic(tmp / OWNER_FILE, f"{uuid.uuid4()}\n".encode())
    os.rename(tmp, directory)
    return load(directory)


def load(directory: Path) -> SecureBootKeys:
    """The key set in `directory`: the three certificates and the owner GUID must be there (the keys may not)."""
    if not directory.is_dir():
        raise InputError(f"{directory}: no such Secure Boot key folder",
                         hint="clipbuild pki secureboot init DIR makes one")
    try:
        owner = safefile.read_regular(directory / OWNER_FILE).decode().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{directory / OWNER_FILE}: cannot be read ({exc})") from None
    if not GUID.fullmatch(owner):
        raise InputError(f"{directory / OWNER_FILE}: {owner!r} is not a lower-case GUID")
    keys = SecureBootKeys(directory, owner)
    for role in ROLES:
        cert = _load_cert(keys.cert(role))
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise InputError(f"{keys.cert(role)}: not an RSA certificate (OVMF refuses ECDSA Secure Boot keys)")
    return keys


def development(directory: Path | None = None) -> SecureBootKeys:
    """The development key set (cache/dev-secureboot), made on first use and again before it expires."""
    directory = directory or cache_dir() / "dev-secureboot"
    if directory.is_dir():
        keys = load(directory)
        if _load_cert(keys.cert("db")).not_valid_after_utc - dt.datetime.now(dt.UTC) > MIN_VALIDITY:
            return keys
        directory.rename(directory.with_name(f"{directory.name}.old-{int(dt.datetime.now().timestamp())}"))
    directory.parent.mkdir(parents=True, exist_ok=True)
    return init(directory, DEVELOPMENT_ORGANISATION)


def check_outside(keys: SecureBootKeys, *trees: Path) -> None:
    """Refuse a release key set whose folder is inside a build tree (the project, its work folder, the cache)."""
    where = keys.directory.resolve()
    for tree in trees:
        if where.is_relative_to(tree.resolve()):
            raise InputError(f"{keys.directory}: release Secure Boot keys inside {tree}",
                             hint="keep release keys outside every build tree (a separate, ideally offline, "
                                  "folder or signing machine)")


def frozen_clock(date: int) -> list[str]:
    """The faketime prefix that stops the clock at `date` (run with TZ=UTC), for tools that stamp the time.
    `-f` with an absolute date freezes it; without -f faketime only starts the clock there, and a slow run
    crossing a second would change the stamp."""
    return ["faketime", "-f", dt.datetime.fromtimestamp(date, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")]


def sign(source: Path, out: Path, keys: SecureBootKeys, date: int) -> None:
    """`source` signed with the db key into `out` (Authenticode, by sbsign), the signing time being `date`."""
    key = keys.key("db")
    if key is None:
        raise SigningError(f"{keys.directory}: no db.key: this key set cannot sign",
                             hint="give the folder holding db.key (for a release: on the signing machine)")
    run([*frozen_clock(date), "sbsign", "--key", key, "--cert", keys.cert("db"), "--output", out, source],
        env={"TZ": "UTC"})


def verify(path: Path, cert: Path) -> tuple[bool, str]:
    """Whether `path` carries a valid Authenticode signature by `cert` (sbverify), and what sbverify said."""
    result = run(["sbverify", "--cert", cert, path], check=False)
    lines = [x for x in (result.stdout + result.stderr).splitlines() if not x.startswith("warning: data remaining")]
    return result.returncode == 0, "; ".join(lines)


def virt_fw_vars() -> str:
    """virt-fw-vars of clipbuild's own Python environment (the PyPI package virt-firmware), else from PATH."""
    beside = Path(sys.executable).parent / "virt-fw-vars"
    return str(beside) if beside.is_file() else "virt-fw-vars"


def enrolled_vars(keys: SecureBootKeys, out: Path) -> None:
    """OVMF's variable store with this set enrolled (PK, KEK, db; no Microsoft keys) and Secure Boot on."""
    run([virt_fw_vars(), "--input", OVMF_VARS, "--output", out, "--set-pk", keys.owner, keys.cert("PK"),
         "--add-kek", keys.owner, keys.cert("KEK"), "--add-db", keys.owner, keys.cert("db"), "--no-microsoft",
         "--secure-boot"])
