"""Per-machine provisioning disks: what is one machine's own, kept out of the image every machine shares.

The signed image is the same for every machine of a species; a provisioning disk (CLIP's per-machine USB token
or smartcard) carries the machine's name, its IPsec identity and the CA and CRL it checks peers with. It is a
small reproducible FAT image, attached read-only:

    machine.conf              NAME=..., SPECIES=..., then the --conf pairs (KEY=VALUE lines, nothing else)
    ipsec/x509/NAME.pem       the machine's certificate
    ipsec/private/NAME.key    its key (PKCS#8 PEM, in the clear: charon loads it at boot)
    ipsec/x509ca/ca.pem       the IPsec CA
    ipsec/x509crl/ca.crl      the CA's current CRL (PEM)
    ssh/JAIL/ssh_host_ed25519_key[.pub]  the host key of each SSH jail (admin, audit), kept in the PKI folder
    ssh/JAIL/authorized_keys  the operators let in to JAIL (--ssh-key JAIL=FILE), if any

machine.conf is read in the image by a strict line reader, never sourced: keys are [A-Z_]+, values
[A-Za-z0-9./:_-]*, and the same patterns are enforced here. Same inputs and SOURCE_DATE_EPOCH (else the
certificate's start date) give the same bytes; the volume id comes from the machine name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from clipbuild.core import safefile
from clipbuild.core.errors import InputError
from clipbuild.image import fsimage
from clipbuild.signing import ipsecpki, pki, sshkeys

SIZE = 4 * 2**20
LABEL = "CLIPPROV"
CONF = "machine.conf"
CONF_KEY = re.compile(r"[A-Z_]+")
CONF_VALUE = re.compile(r"[A-Za-z0-9./:_-]*")
RESERVED = ("NAME", "SPECIES")  # written from the command's own arguments


@dataclass(frozen=True)
class Disk:
    """What a provisioning disk holds, for the command's report."""

    path: Path
    conf: tuple[tuple[str, str], ...]  # machine.conf's lines, NAME and SPECIES first
    files: tuple[str, ...]
    cert: x509.Certificate
    ca: x509.Certificate
    crl: x509.CertificateRevocationList
    sha256: str
    ssh_host_keys: tuple[sshkeys.HostKey, ...] = ()
    ssh_operators: tuple[str, ...] = ()  # the jails with authorized keys

    def to_dict(self) -> dict[str, object]:
        conf = dict(self.conf)
        return {"disk": str(self.path), "name": conf["NAME"], "species": conf["SPECIES"], "files": list(self.files),
                "volume_id": volume_id(conf["NAME"]), "sha256": self.sha256,
                "certificate": {"serial": f"{self.cert.serial_number:x}", "sha256": _fingerprint(self.cert),
                                "not_after": self.cert.not_valid_after_utc.isoformat()},
                "ca": {"sha256": _fingerprint(self.ca)}, "crl": {"number": pki.crl_number(self.crl)},
                "ssh": {k.jail: {"host_key": k.public, "fingerprint": sshkeys.fingerprint(k.public),
                                 "operators": k.jail in self.ssh_operators} for k in self.ssh_host_keys}}


def parse_conf(pairs: tuple[str, ...]) -> list[tuple[str, str]]:
    """`KEY=VALUE` pairs, checked against the patterns the image's reader enforces."""
    parsed: list[tuple[str, str]] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not CONF_KEY.fullmatch(key):
            raise InputError(f"--conf {pair!r}: KEY=VALUE with KEY of capitals and '_' only ([A-Z_]+)")
        if key in RESERVED:
            raise InputError(f"--conf {pair!r}: {key} comes from the command's arguments, not --conf")
        if any(key == k for k, _ in parsed):
            raise InputError(f"--conf {pair!r}: {key} is given twice")
        if not CONF_VALUE.fullmatch(value):
            raise InputError(f"--conf {pair!r}: a value is letters, digits and . / : _ - only "
                             "([A-Za-z0-9./:_-]*; no spaces, quotes or shell characters)")
        parsed.append((key, value))
    return parsed


def volume_id(name: str) -> str:
    return hashlib.sha256(f"clipprov:{name}".encode()).hexdigest()[:8]


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _check(directory: Path, name: str, species: str) -> tuple[x509.Certificate, x509.Certificate,
                                                                x509.CertificateRevocationList]:
    """The machine's certificate, the CA and the CRL, refusing what a peer would refuse anyway."""
    ipsecpki.check_species(species)
    machine, cert = ipsecpki.load_machine(directory, name)
    ca = pki.load_cert(ipsecpki.ca_cert_path(directory))
    crl = pki.load_crl(ipsecpki.crl_path(directory))
    now = dt.datetime.now(dt.UTC)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise InputError(f"{machine.cert} is not issued by {ipsecpki.ca_cert_path(directory)}") from None
    if machine.species != species:
        raise InputError(f"machine {name} is a {machine.species} (OU of its certificate), not a {species}")
    if machine.revoked is not None:
        raise InputError(f"machine {name}'s certificate is revoked (since {machine.revoked:%Y-%m-%d})",
                         hint="issue it a new one under another name")
    if machine.not_after <= now:
        raise InputError(f"machine {name}'s certificate expired on {machine.not_after:%Y-%m-%d}")
    if not crl.is_signature_valid(ca.public_key()) or crl.next_update_utc is None or crl.next_update_utc <= now:
        raise InputError(f"{ipsecpki.crl_path(directory)} is stale or not signed by the CA: peers would refuse it",
                         hint=f"clipbuild pki ipsec crl {directory}")
    key = serialization.load_pem_private_key(safefile.read_regular(machine.key), password=None)
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
            != cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo):
        raise InputError(f"{machine.key} is not the key of {machine.cert}")
    return cert, ca, crl


def _date(cert: x509.Certificate) -> int:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return int(cert.not_valid_before_utc.timestamp())
    if not epoch.isdigit():
        raise InputError(f"SOURCE_DATE_EPOCH={epoch!r}: seconds since 1970")
    return int(epoch)


def _ssh_files(directory: Path, name: str, staging: Path, ssh_keys: Mapping[str, Path],
               ) -> tuple[dict[str, Path], tuple[sshkeys.HostKey, ...]]:
    """The disk's ssh/ files: every SSH jail's host key, and the operators' keys given for a jail."""
    for jail in ssh_keys:
        sshkeys.check_jail(jail)
    machine_dir = ipsecpki.machine_paths(directory, name)[0].parent
    files: dict[str, Path] = {}
    keys = tuple(sshkeys.host_key(machine_dir, name, jail) for jail in sshkeys.SSH_JAILS)
    for key in keys:
        files[f"ssh/{key.jail}/{sshkeys.HOST_KEY}"] = key.private
        files[f"ssh/{key.jail}/{sshkeys.HOST_KEY}.pub"] = key.private.with_name(key.private.name + ".pub")
    for jail, source in ssh_keys.items():
        checked = staging / f"{jail}.authorized_keys"
        checked.write_text(sshkeys.check_authorized_keys(source))
        files[f"ssh/{jail}/authorized_keys"] = checked
    return files, keys


def write(name: str, species: str, directory: Path, out: Path, conf: tuple[str, ...] = (),
          ssh_keys: Mapping[str, Path] | None = None) -> Disk:
    """The provisioning disk of machine NAME, at `out` (written under a temporary name, then renamed; mode 0600:
    it holds the machine's private keys). `ssh_keys`: jail -> the operators' public keys it lets in."""
    pairs = parse_conf(conf)
    cert, ca, crl = _check(directory, name, species)
    lines = (("NAME", name), ("SPECIES", species), *pairs)
    cert_path, key_path = ipsecpki.machine_paths(directory, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # 0700: nobody else reads the key
    try:
        conf_file = staging / CONF
        conf_file.write_text("".join(f"{k}={v}\n" for k, v in lines))
        files = {CONF: conf_file, f"ipsec/x509/{name}.pem": cert_path, f"ipsec/private/{name}.key": key_path,
                 "ipsec/x509ca/ca.pem": ipsecpki.ca_cert_path(directory),
                 "ipsec/x509crl/ca.crl": ipsecpki.crl_path(directory)}
        ssh_files, host_keys = _ssh_files(directory, name, staging, ssh_keys or {})
        files.update(ssh_files)
        image = staging / out.name
        fsimage.vfat(image, SIZE, volume_id(name), LABEL, files, _date(cert), fat=12)
        image.chmod(0o600)
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        os.replace(image, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Disk(out, lines, tuple(sorted(files)), cert, ca, crl, digest, host_keys, tuple(sorted(ssh_keys or {})))
