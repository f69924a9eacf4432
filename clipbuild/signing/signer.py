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
import errno
import hashlib
import mmap
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from clipbuild.core import hashcopy, safefile
from clipbuild.core.errors import ArError, InputError, LayoutError, SigningError
from clipbuild.formats import clipsig
from clipbuild.signing import inplace, trust
from clipbuild.signing.inplace import PAUSE_ENV, TAIL, pause
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


def signature_for(data: bytes | memoryview, role: str, signer: SigningKey, date: int | None = None,
                  digests: trust.PrefixDigests | None = None) -> bytes:
    """The role's signature member over `data`, after checking its layout allows it. `digests`, over the same
    bytes, may hold prefixes already hashed (signing hashes while it copies)."""
    try:
        layout = clipsig.read_layout(data)
    except (ArError, LayoutError) as exc:
        problem = str(exc)  # raised below, not here: the reader's frames, holding views of `data`, must go, or a
    else:                   # mapping under `data` could not be closed
        problem = ""
    if problem:
        raise SigningError(f"not a package clipbuild can sign: {problem}")
    if role == "developer" and layout.dev is not None:
        raise SigningError("already signed by a developer")
    if role == "controller":
        if layout.dev is None:
            raise SigningError("no developer signature to countersign")
        if layout.ctrl is not None:
            raise SigningError("already countersigned")
    name = hash_of(signer.cert)
    digest = digests.digest(name, len(data)) if digests else hashlib.new(name, data).digest()
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


@dataclass(eq=False)
class Staged:
    """A private copy of a package beside it (created O_EXCL, mode 0600 while we work): what is checked and
    signed is this copy, so a package swapped or rewritten meanwhile changes nothing we sign. It is reopened by
    name for each step (a batch holds no descriptor per package) and must still be the file we created."""

    path: Path
    tmp: Path
    mode: int  # the package's own mode, given back to the signed file
    ident: tuple[int, int] = (0, 0)  # the copy's device and inode
    hashed: dict[str, Any] = field(default_factory=dict)  # running hashers over the copy's bytes [0, hashed_upto)
    hashed_upto: int = 0
    committed: bool = False

    def digests(self, view: memoryview) -> trust.PrefixDigests:
        """Digests of the copy's prefixes (`view` maps the copy), starting from what was hashed while copying."""
        return trust.PrefixDigests(view, {name: (h.copy(), self.hashed_upto) for name, h in self.hashed.items()})

    @contextmanager
    def opened(self) -> Iterator[int]:
        """The copy, open read-write; SigningError if what has its name is no longer the file we created."""
        fd = os.open(self.tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != self.ident:
                raise SigningError(f"{self.path}: the private copy {self.tmp.name} was replaced while signing")
            yield fd
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Remove the copy, unless it was committed."""
        if not self.committed:
            self.tmp.unlink(missing_ok=True)


def stage(path: Path, algorithms: Iterable[str] = ()) -> Staged:
    """Copy the package at `path` (a regular file, not a link: `sign` refuses links) into a private file, in one
    pass that also hashes the copy with SHA-256 and `algorithms` (the digests the signatures will need)."""
    with os.fdopen(safefile.open_regular(path, follow=False, max_size=trust.MAX_PACKAGE_BYTES), "rb") as source:
        info = os.fstat(source.fileno())
        if info.st_size == 0:
            raise SigningError(f"{path}: empty file: not a package")
        out, tmp = safefile.create_exclusive(path.parent, path.name, 0o600, readable=True)
        staged = Staged(path, tmp, stat.S_IMODE(info.st_mode), hashed_upto=max(0, info.st_size - TAIL))
        try:
            created = os.fstat(out)
            staged.ident = (created.st_dev, created.st_ino)
            staged.hashed = hashcopy.copy_hashed(source.fileno(), out, info.st_size, {"sha256", *algorithms},
                                                 staged.hashed_upto, _pause_after(path))
        except OSError as exc:
            staged.discard()
            why = "it was cut short while being copied" if exc.errno == errno.EFAULT else exc.strerror or str(exc)
            raise SigningError(f"{path}: cannot copy it to sign it: {why}") from None
        except BaseException:
            staged.discard()
            raise
        finally:
            os.close(out)
    return staged


def _pause_after(path: Path) -> Callable[[int], None] | None:
    """The test hook of PAUSE_ENV=BYTES: stop once the copy has that many bytes."""
    value = os.environ.get(PAUSE_ENV, "")
    if not value.isdigit():
        return None
    return lambda done: pause(f"{path}: copied {done} bytes") if done >= int(value) else None


@contextmanager
def mapped(staged: Staged, fd: int | None = None) -> Iterator[memoryview]:
    """The staged copy's bytes (through `fd` when the copy is already open)."""
    with ExitStack() as stack:
        fd = stack.enter_context(staged.opened()) if fd is None else fd
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as data, memoryview(data) as view:
            yield view


def sign_staged(staged: Staged, role: str, signer: SigningKey) -> Signed:
    """Append the signature to the staged copy and fsync it (the package is untouched until `commit`)."""
    with staged.opened() as fd:
        with mapped(staged, fd) as view:
            digests = staged.digests(view)
            try:
                member = signature_for(view, role, signer, digests=digests)
            except SigningError as exc:
                raise SigningError(f"{staged.path}: {exc}") from None
            before = digests.hasher("sha256", len(view))
            size = len(view)
        try:
            hashcopy.write_all(fd, member, size)
            os.fsync(fd)
        except OSError as exc:
            raise SigningError(f"{staged.path}: cannot write its signature: {exc.strerror or exc}") from None
    after = before.copy()
    after.update(member)
    return Signed(str(staged.path), before.hexdigest(), after.hexdigest())


def commit(staged: Staged) -> None:
    """The signed copy replaces the package, with the package's mode (the caller syncs the directory)."""
    if os.environ.get(PAUSE_ENV) == "commit":
        pause(f"{staged.path}: signed, not renamed")
    with staged.opened() as fd:
        os.fchmod(fd, staged.mode)
        replaced = _hold(staged.path)
        try:
            os.replace(staged.tmp, staged.path)
        except BaseException:
            if replaced is not None:
                os.close(replaced)
            raise
    staged.committed = True
    if replaced is not None:
        _release_later(replaced)


def _hold(path: Path) -> int | None:
    """A reference (O_PATH, no link followed) to what a rename is about to replace at `path`, or None."""
    try:
        return os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


_releaser: list[ThreadPoolExecutor] = []


def _release_later(fd: int) -> None:
    """Drop the last reference to a replaced package in a thread of its own: freeing a large file's blocks and
    cached pages costs the kernel about 20 ms per 100 MiB that signing need not wait for (the next package is
    copied meanwhile; `settle` waits, and so does the interpreter before it exits)."""
    if not _releaser:
        _releaser.append(ThreadPoolExecutor(1, thread_name_prefix="release"))
    _releaser[0].submit(os.close, fd)


def settle() -> None:
    """Wait until every replaced package is released."""
    if _releaser:
        _releaser.pop().shutdown(wait=True)


def sign_file(path: Path, role: str, signer: SigningKey) -> Signed:
    """Sign in place, all or nothing: a failure or a kill leaves the package as it was (a kill: once recovered,
    see core.appendlog); its mode is kept; a link is refused. The signature is on disk on return. A package with
    hard links, or one we may not write, is signed on a private copy renamed over it (`sign_copy`)."""
    item = inplace.open_locked(path)
    if item is None:
        return sign_copy(path, role, signer)
    try:
        inplace.read(item, (hash_of(signer.cert),), lambda view, digests: signature_for(view, role, signer,
                                                                                        digests=digests))
        inplace.append([item])
    except BaseException:
        inplace.undo([item])
        raise
    inplace.finish([item])
    return Signed(str(path), item.before.hexdigest(), item.sha256_after())


def sign_copy(path: Path, role: str, signer: SigningKey) -> Signed:
    """Sign a private copy and rename it over the package: a failure leaves the package as it was. The signed
    copy is on disk before it replaces the package, and the replacement is on disk on return."""
    staged = stage(path, (hash_of(signer.cert),))
    try:
        signed = sign_staged(staged, role, signer)
        commit(staged)
    finally:
        staged.discard()
    safefile.sync_directory(path.parent)
    return signed
