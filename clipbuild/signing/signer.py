"""Signing packages in CLIP's format: a developer signs an unsigned .deb, a controller countersigns a
developer-signed one. Signatures are deterministic ECDSA (RFC 6979), so with SOURCE_DATE_EPOCH the same
package and key give the same bytes.

Keys are PEM; an encrypted key's passphrase comes from a file or $CLIPBUILD_PASSPHRASE, never from the command
line. Before signing, the certificate must be fit for the role: keyUsage digitalSignature only, issued by the
role's CA when a policy is given, and valid for at least the policy's minimum time (CLIP refused to sign with
less than about three months left).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clipbuild.core.errors import ArError, InputError, LayoutError, SigningError
from clipbuild.formats import clipsig
from clipbuild.signing.trust import DEFAULT_MIN_VALIDITY_DAYS, HASHES, RolePolicy, check_certificate, hash_of, now

PASSPHRASE_ENV = "CLIPBUILD_PASSPHRASE"


@dataclass(frozen=True)
class SigningKey:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def passphrase(file: Path | None) -> bytes | None:
    """From --passphrase-file, else $CLIPBUILD_PASSPHRASE, else none."""
    if file is not None:
        try:
            return file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise InputError(f"{file}: cannot read the passphrase file: {exc.strerror}") from None
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def load_signing_key(key_path: Path, cert_path: Path, secret: bytes | None) -> SigningKey:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"{cert_path}: not a PEM certificate ({exc})") from None
    try:
        pem = key_path.read_bytes()
    except OSError as exc:
        raise InputError(f"{key_path}: cannot read: {exc.strerror}") from None
    encrypted = b"ENCRYPTED" in pem
    if encrypted and secret is None:
        raise InputError(f"{key_path} is encrypted: give --passphrase-file FILE or set {PASSPHRASE_ENV}")
    try:
        key = serialization.load_pem_private_key(pem, password=secret if encrypted else None)
    except (ValueError, TypeError):
        raise InputError(f"{key_path}: cannot decrypt or read the private key (wrong passphrase?)") from None
    if not encrypted:
        print(f"warning: {key_path} is not encrypted; keep signing keys encrypted", file=sys.stderr)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InputError(f"{key_path}: CLIP signatures are ECDSA; this is a {type(key).__name__}")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise InputError(f"{key_path} is not the key of {cert_path}")
    return SigningKey(key, cert)


def check_fit(signer: SigningKey, role: str, policy: RolePolicy | None, at: dt.datetime | None = None) -> None:
    """Refuse a certificate that verification would refuse, or that expires too soon."""
    at = at or now()
    minimum = policy.min_validity_days if policy else DEFAULT_MIN_VALIDITY_DAYS
    problems = check_certificate(signer.cert, policy, at) if policy else []
    left = signer.cert.not_valid_after_utc - at
    if left < dt.timedelta(days=minimum):
        problems.append(f"the certificate has {max(left.days, 0)} days of validity left; signing needs at "
                        f"least {minimum} (renew it: clipbuild pki issue)")
    if problems:
        raise SigningError(f"cannot sign as {role} with {signer.cert.subject.rfc4514_string()}: "
                           + "; ".join(problems))


def sign_bytes(data: bytes, role: str, signer: SigningKey, date: int | None = None) -> bytes:
    """`data` with the role's signature member appended."""
    try:
        layout = clipsig.read_layout(data)
    except (ArError, LayoutError) as exc:
        raise SigningError(f"not a package clipbuild can sign: {exc}") from None
    if role == "developer" and layout.dev is not None:
        raise SigningError("already signed by a developer")
    if role == "controller":
        if layout.dev is None:
            raise SigningError("no developer signature to countersign")
        if layout.ctrl is not None:
            raise SigningError("already countersigned")
    algorithm = HASHES[hash_of(signer.cert)]()
    signature = signer.key.sign(data, ec.ECDSA(algorithm, deterministic_signing=True))
    date = clipsig.signature_date() if date is None else date
    return data + clipsig.signature_member(role, signer.cert_der, signature, date)


@dataclass(frozen=True)
class Signed:
    path: str
    sha256_before: str
    sha256_after: str


def sign_file(path: Path, role: str, signer: SigningKey) -> Signed:
    """Sign in place, atomically: a failure leaves the package as it was."""
    data = path.read_bytes()
    out = sign_bytes(data, role, signer)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(out)
    os.replace(tmp, path)
    return Signed(str(path), hashlib.sha256(data).hexdigest(), hashlib.sha256(out).hexdigest())
