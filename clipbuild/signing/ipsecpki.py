"""The IPsec PKI: a CA apart from the package-signing CAs, one certificate per machine, and its CRL.

    DIR/ipsec-ca.pem  ipsec-ca.key (encrypted, 0600)  ipsec-ca.crl.pem
    DIR/machines/NAME/NAME.pem  NAME.key (PKCS#8 PEM in the clear, 0600, folder 0700)

The CA is ECDSA P-384 over SHA-384 (CA:TRUE, keyCertSign and cRLSign), its key encrypted like the signing
PKI's. A machine certificate says CN=NAME, OU=its species, O=the CA's organisation; subjectAltName DNS:NAME
(and any more names or addresses given); keyUsage digitalSignature; extendedKeyUsage serverAuth, clientAuth and
ikeIntermediate (1.3.6.1.5.5.8.2.2, which strongSwan and Windows look for). A machine key is not encrypted:
charon loads it at boot without a prompt. It is only ever written here and into that machine's provisioning
disk (image/provision), never into a package. Revoking a machine re-issues the CRL, which every peer gets on
its own provisioning disk.

The development IPsec PKI (`ensure_dev`) lives in ~/.cache/clipbuild/dev-ipsec-pki, behind the development
PKI's public passphrase and with DEVELOPMENT in every subject, for `clipbuild lab` and tests.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from clipbuild.core.errors import InputError
from clipbuild.core.paths import cache_dir
from clipbuild.signing import devpki, pki

ROLE = "ipsec"  # the CA's files: ipsec-ca.pem, .key, .crl.pem (pki's naming, so its CRL helpers serve)
SPECIES = ("client", "gateway")
ORGANISATION = "clipbuild IPsec PKI"  # the profile schema has no organisation: `--org` overrides it
CA_DAYS = 3650
MACHINE_DAYS = 365
IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")
# A machine name is a host name (it is the certificate's DNS name) and a file name: letters, digits and inner
# hyphens in dot-separated labels, at most 64 characters, never a path.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"(?=.{{1,64}}$){_LABEL}(?:\.{_LABEL})*")
DEV_CRL_MARGIN = devpki.CRL_MARGIN
DEV_RENEW = dt.timedelta(days=30)


@dataclass(frozen=True)
class Machine:
    name: str
    species: str
    serial: int
    not_after: dt.datetime
    revoked: dt.datetime | None
    cert: Path
    key: Path

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "species": self.species, "serial": f"{self.serial:x}",
                "not_after": self.not_after.isoformat(), "revoked": self.revoked.isoformat() if self.revoked
                else None, "certificate": str(self.cert)}


def ca_cert_path(directory: Path) -> Path:
    return directory / f"{ROLE}-ca.pem"


def crl_path(directory: Path) -> Path:
    return directory / f"{ROLE}-ca.crl.pem"


def machine_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """The machine's certificate and key in the PKI folder."""
    check_machine_name(name)
    folder = directory / "machines" / name
    return folder / f"{name}.pem", folder / f"{name}.key"


def check_machine_name(name: str) -> None:
    if not HOSTNAME.fullmatch(name):
        raise InputError(f"machine name {name!r}: a host name (letters, digits and inner '-' in labels separated "
                         "by '.', at most 64 characters): it is the certificate's DNS name and a file name")


def check_species(species: str) -> None:
    if species not in SPECIES:
        raise InputError(f"species {species!r}: an IPsec identity is for a {' or a '.join(SPECIES)}")


def check_pki(directory: Path) -> None:
    """Refuse a folder without an IPsec CA, saying how to make one."""
    missing = [p.name for p in (ca_cert_path(directory), crl_path(directory)) if not p.is_file()]
    if missing:
        raise InputError(f"{directory}: no IPsec PKI here ({', '.join(missing)} missing)",
                         hint=f"clipbuild pki ipsec init {directory}")


def init(directory: Path, secret: bytes, *, organisation: str = ORGANISATION, days: int = CA_DAYS,
         common: str = "clipbuild IPsec CA") -> list[Path]:
    """The CA (P-384, SHA-384) and its empty CRL; refuses to overwrite an existing IPsec PKI."""
    if (directory / f"{ROLE}-ca.key").exists() or ca_cert_path(directory).exists():
        raise InputError(f"{directory} already holds an IPsec PKI")
    directory.mkdir(parents=True, exist_ok=True)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP384R1())
    cert = pki.self_signed_ca(key, pki.subject(common, organisation), days, hashes.SHA384(), start)
    pki.write_key(directory / f"{ROLE}-ca.key", key, secret)
    pki.write_pem(ca_cert_path(directory), cert)
    pki.write_crl(directory, ROLE, key, cert, [], 1, start)
    return sorted(p for p in directory.iterdir() if p.is_file())


def _alt_names(name: str, sans: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
            continue
        except ValueError:
            pass
        if not HOSTNAME.fullmatch(san):
            raise InputError(f"--san {san!r}: an IP address or a DNS name")
        names.append(x509.DNSName(san))
    return list(dict.fromkeys(names))


def issue(directory: Path, name: str, species: str, secret: bytes, *, days: int = MACHINE_DAYS,
          sans: tuple[str, ...] = ()) -> Machine:
    """A machine certificate and its key (in the clear, 0600) under DIR/machines/NAME/."""
    check_machine_name(name)
    check_species(species)
    check_pki(directory)
    cert_path, key_path = machine_paths(directory, name)
    if cert_path.parent.exists():
        raise InputError(f"{cert_path.parent} already exists: machine {name} has a certificate",
                         hint=f"revoke it (clipbuild pki ipsec revoke {directory} {name}) and choose another name")
    ca = pki.load_cert(ca_cert_path(directory))
    ca_key = pki.load_key(directory / f"{ROLE}-ca.key", secret)
    key = ec.generate_private_key(ec.SECP384R1())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    subject = pki.subject(name, pki.organisation_of(ca), unit=species)
    builder = (pki.leaf_builder(ca, ca_key, key.public_key(), subject, start, dt.timedelta(days=days))
               .add_extension(x509.SubjectAlternativeName(_alt_names(name, sans)), critical=False)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH, IKE_INTERMEDIATE]),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    cert = pki.sign_leaf(builder, ca, ca_key)
    cert_path.parent.mkdir(parents=True, mode=0o700)
    pki.write_key(key_path, key, None)
    pki.write_pem(cert_path, cert)
    return _machine(cert_path, key_path, cert, None)


def _machine(cert_path: Path, key_path: Path, cert: x509.Certificate, revoked: dt.datetime | None) -> Machine:
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return Machine(cert_path.stem, str(units[0].value) if units else "?", cert.serial_number,
                   cert.not_valid_after_utc, revoked, cert_path, key_path)


def load_machine(directory: Path, name: str) -> tuple[Machine, x509.Certificate]:
    """A machine of this PKI, with its revocation date from the current CRL."""
    check_pki(directory)
    cert_path, key_path = machine_paths(directory, name)
    if not cert_path.is_file():
        raise InputError(f"no machine {name!r} in {directory}",
                         hint=f"clipbuild pki ipsec issue {directory} {name} --species SPECIES")
    cert = pki.load_cert(cert_path)
    entry = pki.load_crl(crl_path(directory)).get_revoked_certificate_by_serial_number(cert.serial_number)
    return _machine(cert_path, key_path, cert, entry.revocation_date_utc if entry else None), cert


def revoke(directory: Path, name: str, secret: bytes) -> Path:
    """Put the machine's certificate on the CRL (re-issued, numbered up, valid 30 days); returns the CRL."""
    machine, cert = load_machine(directory, name)
    ca = pki.load_cert(ca_cert_path(directory))
    if cert.issuer != ca.subject:
        raise InputError(f"{machine.cert} was not issued by this PKI's CA")
    crl = pki.load_crl(crl_path(directory))
    now = dt.datetime.now(dt.UTC)
    revoked = pki.revoked_with(crl, cert, f"machine {name}", now)
    key = pki.load_key(directory / f"{ROLE}-ca.key", secret)
    pki.write_crl(directory, ROLE, key, ca, revoked, pki.crl_number(crl) + 1, now)
    return crl_path(directory)


def refresh_crl(directory: Path, secret: bytes) -> Path:
    """Re-issue the CRL with the same entries, valid from now for 30 days."""
    check_pki(directory)
    pki.refresh_crl(directory, ROLE, secret)
    return crl_path(directory)


def machines(directory: Path) -> list[Machine]:
    """Every machine of the PKI, by name."""
    check_pki(directory)
    folder = directory / "machines"
    names = sorted(p.name for p in folder.iterdir() if HOSTNAME.fullmatch(p.name)) if folder.is_dir() else []
    return [load_machine(directory, name)[0] for name in names if machine_paths(directory, name)[0].is_file()]


def dev_location() -> Path:
    return cache_dir() / "dev-ipsec-pki"


def ensure_dev(directory: Path | None = None) -> Path:
    """The development IPsec PKI, created on first use; its CRL re-issued before it goes stale."""
    directory = directory or dev_location()
    if not ca_cert_path(directory).is_file():
        tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
        init(tmp, devpki.SECRET, organisation=devpki.ORGANISATION, common="clipbuild DEVELOPMENT IPsec CA")
        os.rename(tmp, directory)
    crl = pki.load_crl(crl_path(directory))
    if crl.next_update_utc is None or crl.next_update_utc - dt.datetime.now(dt.UTC) < DEV_CRL_MARGIN:
        refresh_crl(directory, devpki.SECRET)
    return directory


def ensure_dev_machine(name: str, species: str, directory: Path | None = None) -> Path:
    """A development machine certificate for NAME and SPECIES: issued when missing, of another species, revoked
    or expiring within 30 days (the old one is kept aside, as machines/.NAME.old-SERIAL); returns the PKI folder."""
    directory = ensure_dev(directory)
    cert_path, _ = machine_paths(directory, name)
    if cert_path.is_file():
        machine, _ = load_machine(directory, name)
        if (machine.species == species and machine.revoked is None
                and machine.not_after - dt.datetime.now(dt.UTC) > DEV_RENEW):
            return directory
        os.rename(cert_path.parent, cert_path.parent.with_name(f".{name}.old-{machine.serial:x}"))
    issue(directory, name, species, devpki.SECRET)
    return directory
