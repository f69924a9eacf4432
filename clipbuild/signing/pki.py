"""A small two-role PKI for tests and first steps: a developer CA and a controller CA, leaf certificates with
keyUsage digitalSignature only, CRLs, and the trust policy that uses them.

    DIR/developer-ca.pem  .key  .crl.pem      DIR/controller-ca.pem  .key  .crl.pem
    DIR/developer-1.pem   .key                DIR/controller-1.pem   .key
    DIR/policy.yaml

Every private key is written encrypted (PEM, PKCS#8, best available encryption) with the passphrase given
by file or environment. Real deployments keep the two CAs apart, ideally offline.

The building blocks (subjects, CA and leaf certificates, CRLs, key files) also make the IPsec PKI
(signing/ipsecpki), which files its CA the same way under the role name `ipsec`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clipbuild.core import safefile
from clipbuild.core.errors import InputError
from clipbuild.signing.trust import DEFAULT_MIN_VALIDITY_DAYS

ROLES = ("developer", "controller")
CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "brainpoolP256r1": ec.BrainpoolP256R1}
DIGESTS = {"sha256": hashes.SHA256, "sha512": hashes.SHA512}
CRL_DAYS = 30
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class PkiSettings:
    curve: str = "p256"
    digest: str = "sha256"
    organisation: str = "clipbuild test PKI"
    ca_days: int = 3650
    leaf_days: int = 730


def subject(common: str, organisation: str, unit: str | None = None) -> x509.Name:
    """`CN=common,[OU=unit,]O=organisation` (RFC 4514 order, most specific first)."""
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common)])


def organisation_of(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value)


def key_usage(*, signer: bool) -> x509.KeyUsage:
    """A leaf's digitalSignature only, or a CA's keyCertSign and cRLSign."""
    return x509.KeyUsage(digital_signature=signer, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=not signer,
                         crl_sign=not signer, encipher_only=False, decipher_only=False)


def write_key(path: Path, key: ec.EllipticCurvePrivateKey, secret: bytes | None) -> None:
    """PKCS#8 PEM, mode 0600, never over an existing file; encrypted with `secret`, or in the clear when it is
    None (only for a machine key that a daemon loads at boot without a prompt)."""
    encryption = (serialization.BestAvailableEncryption(secret) if secret is not None
                  else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(pem)


def write_pem(path: Path, obj: x509.Certificate | x509.CertificateRevocationList) -> None:
    safefile.write_atomic(path, obj.public_bytes(serialization.Encoding.PEM))


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(safefile.read_regular(path))
    except ValueError as exc:
        raise InputError(f"{path}: not a PEM certificate ({exc})") from None


def load_crl(path: Path) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(safefile.read_regular(path))
    except ValueError as exc:
        raise InputError(f"{path}: not a PEM CRL ({exc})") from None


def check_name(name: str, option: str = "--name", what: str = "a signer name") -> None:
    """A signer's (or machine's) name is its file name in the PKI folder: a plain name, never a path."""
    if not NAME.fullmatch(name):
        raise InputError(f"{option} {name!r}: {what} is letters, digits, '.', '_' and '-' (at most 64, "
                         "starting with a letter or digit): it names files in the PKI folder, never a path")


def load_key(path: Path, secret: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(safefile.read_regular(path), password=secret)
    except (OSError, ValueError, TypeError):
        raise InputError(f"{path}: cannot read the key (wrong passphrase?)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InputError(f"{path}: not an ECDSA key")
    return key


def self_signed_ca(key: ec.EllipticCurvePrivateKey, name: x509.Name, days: int, digest: hashes.HashAlgorithm,
                   start: dt.datetime) -> x509.Certificate:
    """A root CA: CA:TRUE with path length 0 (it issues leaves only), keyCertSign and cRLSign, both critical."""
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(key_usage(signer=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, digest))


def leaf_builder(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, public_key: ec.EllipticCurvePublicKey,
                 name: x509.Name, start: dt.datetime, lifetime: dt.timedelta) -> x509.CertificateBuilder:
    """An end-entity certificate of `ca`: CA:FALSE and keyUsage digitalSignature only, both critical; the
    caller adds its own extensions and signs with `sign_leaf`."""
    return (x509.CertificateBuilder().subject_name(name).issuer_name(ca.subject).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(signer=True), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))


def sign_leaf(builder: x509.CertificateBuilder, ca: x509.Certificate,
              ca_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """Signed over the CA's own digest."""
    algorithm = ca.signature_hash_algorithm
    assert algorithm is not None
    return builder.sign(ca_key, algorithm)


def sign_crl(key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, revoked: list[x509.RevokedCertificate],
             number: int, start: dt.datetime) -> x509.CertificateRevocationList:
    """A CRL of `ca` valid CRL_DAYS from `start` (nextUpdate set), numbered `number`, over the CA's digest, with
    the authority key identifier RFC 5280 requires of a CRL (strongSwan finds a CA's CRL by that key id: without
    it, `revocation = strict` finds no CRL at all)."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(start)
               .next_update(start + dt.timedelta(days=CRL_DAYS))
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False))
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    algorithm = ca.signature_hash_algorithm
    assert algorithm is not None
    return builder.sign(key, algorithm)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def revoked_with(crl: x509.CertificateRevocationList, cert: x509.Certificate, what: object,
                 now: dt.datetime) -> list[x509.RevokedCertificate]:
    """The CRL's entries plus `cert`'s, revoked at `now`; refuses a certificate already in it."""
    revoked = list(crl)
    if any(r.serial_number == cert.serial_number for r in revoked):
        raise InputError(f"{what} is already revoked")
    return [*revoked,
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now).build()]


def _ca(directory: Path, role: str, settings: PkiSettings, secret: bytes, start: dt.datetime) -> None:
    key = ec.generate_private_key(CURVES[settings.curve]())
    cert = self_signed_ca(key, subject(f"clipbuild {role} CA", settings.organisation), settings.ca_days,
                          DIGESTS[settings.digest](), start)
    write_key(directory / f"{role}-ca.key", key, secret)
    write_pem(directory / f"{role}-ca.pem", cert)
    write_crl(directory, role, key, cert, [], 1, start)


def write_crl(directory: Path, role: str, key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
               revoked: list[x509.RevokedCertificate], number: int, start: dt.datetime) -> None:
    write_pem(directory / f"{role}-ca.crl.pem", sign_crl(key, ca, revoked, number, start))


def issue(directory: Path, role: str, name: str, secret: bytes, *, days: int | None = None,
          start: dt.datetime | None = None) -> Path:
    """A new signer certificate and key for `role`, issued by that role's CA; returns the certificate path."""
    if role not in ROLES:
        raise InputError(f"role {role!r}: developer or controller")
    check_name(name)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    if cert_path.exists() or key_path.exists():
        raise InputError(f"{cert_path} already exists: choose another name")
    ca = load_cert(directory / f"{role}-ca.pem")
    ca_key = load_key(directory / f"{role}-ca.key", secret)
    start = start or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    lifetime = dt.timedelta(days=days or PkiSettings().leaf_days)
    key = ec.generate_private_key(type(ca_key.curve)())
    cert = sign_leaf(leaf_builder(ca, ca_key, key.public_key(), subject(name, organisation_of(ca)), start,
                                  lifetime), ca, ca_key)
    write_key(key_path, key, secret)
    write_pem(cert_path, cert)
    return cert_path


def revoke(directory: Path, cert_path: Path, secret: bytes) -> str:
    """Add a certificate to its CA's CRL (re-signed, numbered up); returns the role."""
    cert = load_cert(cert_path)
    for role in ROLES:
        ca = load_cert(directory / f"{role}-ca.pem")
        if cert.issuer == ca.subject:
            break
    else:
        raise InputError(f"{cert_path} was not issued by this PKI's CAs")
    crl = load_crl(directory / f"{role}-ca.crl.pem")
    now = dt.datetime.now(dt.UTC)
    revoked = revoked_with(crl, cert, cert_path, now)
    write_crl(directory, role, load_key(directory / f"{role}-ca.key", secret), ca, revoked, crl_number(crl) + 1,
               now)
    return role


def refresh_crl(directory: Path, role: str, secret: bytes) -> x509.CertificateRevocationList:
    """Re-issue a role's CRL with the same entries, numbered up, valid from now for CRL_DAYS."""
    ca = load_cert(directory / f"{role}-ca.pem")
    crl = load_crl(directory / f"{role}-ca.crl.pem")
    write_crl(directory, role, load_key(directory / f"{role}-ca.key", secret), ca, list(crl), crl_number(crl) + 1,
               dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    return x509.load_pem_x509_crl((directory / f"{role}-ca.crl.pem").read_bytes())


POLICY_FORMAT = "# clipbuild trust policy, format 2 (anchored subjects, CRLs required)"
POLICY = POLICY_FORMAT + """
# Trust policy of the clipbuild test PKI: for each role, the CA a signer must be issued by, its CRL, a
# pattern the signer's whole RFC 4514 subject must match, and the validity a certificate must have left to sign.
developer:
  ca: [developer-ca.pem]
  crl: [developer-ca.crl.pem]
  subject: {developer}
  min_validity_days: {days}
controller:
  ca: [controller-ca.pem]
  crl: [controller-ca.crl.pem]
  subject: {controller}
  min_validity_days: {days}
"""


def subject_pattern(role: str, organisation: str) -> str:
    """The whole subject of the role's signers: `CN=<role>-NAME,O=<organisation>`, as a YAML string."""
    org = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)]).rfc4514_string()
    literal = re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", org)
    return json.dumps(f"CN={role}-[A-Za-z0-9._-]+,{literal}")


def init(directory: Path, secret: bytes, settings: PkiSettings = PkiSettings()) -> list[Path]:
    """Both CAs, one signer per role, empty CRLs and policy.yaml; refuses to overwrite an existing PKI."""
    if settings.curve not in CURVES or settings.digest not in DIGESTS:
        raise InputError(f"curve {settings.curve}, digest {settings.digest}: choose a curve among "
                         f"{', '.join(CURVES)} and a digest among {', '.join(DIGESTS)}")
    if (directory / "policy.yaml").exists() or (directory / "developer-ca.key").exists():
        raise InputError(f"{directory} already holds a PKI")
    directory.mkdir(parents=True, exist_ok=True)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    for role in ROLES:
        _ca(directory, role, settings, secret, start)
        issue(directory, role, f"{role}-1", secret, days=settings.leaf_days, start=start)
    patterns = {role: subject_pattern(role, settings.organisation) for role in ROLES}
    safefile.write_atomic(directory / "policy.yaml", POLICY.format(days=DEFAULT_MIN_VALIDITY_DAYS,
                                                                     **patterns).encode())
    return sorted(directory.iterdir())
