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
import mmap
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from clipbuild.core import safefile
from clipbuild.core.errors import ArError, InputError, LayoutError, SigningError
from clipbuild.formats import clipsig
from clipbuild.signing import trust
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
            return safefile.read_regular(file).rstrip(b"\r\n")
        except OSError as exc:
            raise InputError(f"{file}: cannot read the passphrase file: {exc.strerror}") from None
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def load_signing_key(key_path: Path, cert_path: Path, secret: bytes | None) -> SigningKey:
    try:
        cert = x509.load_pem_x509_certificate(safefile.read_regular(cert_path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{cert_path}: not a PEM certificate ({exc})") from None
    try:
        pem = safefile.read_regular(key_path)
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


def signature_for(data: bytes | memoryview, role: str, signer: SigningKey, date: int | None = None) -> bytes:
    """The role's signature member over `data`, after checking its layout allows it."""
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
    name = hash_of(signer.cert)
    digest = hashlib.new(name, data).digest()
    signature = signer.key.sign(digest, ec.ECDSA(Prehashed(HASHES[name]()), deterministic_signing=True))
    date = clipsig.signature_date() if date is None else date
    return clipsig.signature_member(role, signer.cert_der, signature, date)


def sign_bytes(data: bytes, role: str, signer: SigningKey, date: int | None = None) -> bytes:
    """`data` with the role's signature member appended."""
    return data + signature_for(data, role, signer, date)


@dataclass(frozen=True)
class Signed:
    path: str
    sha256_before: str
    sha256_after: str


@dataclass(frozen=True)
class Staged:
    """A private copy of a package beside it (created O_EXCL, mode 0600 while we work): what is checked and
    signed is this copy, so a package swapped or rewritten meanwhile changes nothing we sign."""

    path: Path
    tmp: Path
    mode: int  # the package's own mode, given back to the signed file

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def stage(path: Path) -> Staged:
    """Copy the package at `path` (a regular file, not a link: `sign` refuses links) into a private file."""
    fd = safefile.open_regular(path, follow=False, max_size=trust.MAX_PACKAGE_BYTES)
    with os.fdopen(fd, "rb") as source:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        out, tmp = safefile.create_exclusive(path.parent, path.name, 0o600)
        try:
            with os.fdopen(out, "wb") as copy:
                shutil.copyfileobj(source, copy, 1 << 20)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return Staged(path, tmp, mode)


@contextmanager
def mapped(staged: Staged) -> Iterator[memoryview]:
    """The staged copy's bytes."""
    with staged.tmp.open("rb") as stream:
        if os.fstat(stream.fileno()).st_size == 0:
            raise SigningError(f"{staged.path}: empty file: not a package")
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data, memoryview(data) as view:
            yield view


def sign_staged(staged: Staged, role: str, signer: SigningKey) -> Signed:
    """Append the signature to the staged copy (the package is untouched until `commit`)."""
    with mapped(staged) as view:
        try:
            member = signature_for(view, role, signer)
        except SigningError as exc:
            raise SigningError(f"{staged.path}: {exc}") from None
        before = hashlib.sha256(view)
        after = before.copy()
        after.update(member)
    with staged.tmp.open("ab") as stream:
        stream.write(member)
        stream.flush()
        os.fsync(stream.fileno())
    return Signed(str(staged.path), before.hexdigest(), after.hexdigest())


def commit(staged: Staged) -> None:
    """The signed copy replaces the package, with the package's mode."""
    os.chmod(staged.tmp, staged.mode)
    os.replace(staged.tmp, staged.path)


def sign_file(path: Path, role: str, signer: SigningKey) -> Signed:
    """Sign in place, atomically: a failure leaves the package as it was; its mode is kept; a link is refused."""
    staged = stage(path)
    try:
        signed = sign_staged(staged, role, signer)
        commit(staged)
    except BaseException:
        staged.discard()
        raise
    return signed
