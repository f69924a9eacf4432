"""Trust policies and the verification of CLIP signatures, with a plain reason for every refusal.

A policy (YAML) says, for each role (developer, controller): the CA certificates a signer must be issued by, the
CRLs to check, a subject pattern (a regular expression searched in the RFC 4514 subject), and the minimum
validity a certificate must have left to sign (CLIP OS 4 refused under about three months).

A package is accepted only when its layout is right and both signatures verify: each by a certificate issued by
its own role's CA (so a developer cannot countersign), valid now, not revoked by a current CRL of that CA, with
keyUsage digitalSignature only, a matching subject, over exactly the bytes before its member. The digest is the
one named by the signer certificate's own signature algorithm (SHA-256 or SHA-512).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import mmap
import os
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from clipbuild.core import appendlog, safefile
from clipbuild.core.errors import AppendRecordRefused, ArError, InputError, LayoutError, NotAFile
from clipbuild.formats import clipsig
from clipbuild.signing import subjects

CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "brainpoolP256r1": "brainpoolP256r1"}
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha512": hashes.SHA512}
DEFAULT_MIN_VALIDITY_DAYS = 90
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolePolicy:
    role: str
    cas: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    subject: str = ""  # a Python regular expression the whole RFC 4514 subject must match
    min_validity_days: int = DEFAULT_MIN_VALIDITY_DAYS
    subject_ere: str = ""  # gen-crypt's form: a POSIX ERE searched in OpenSSL's one-line subject
    allow_no_crl: bool = False  # explicit opt-out: no CRL, a warning on every package verified

    def ca_names(self) -> str:
        return ", ".join(ca.subject.rfc4514_string() for ca in self.cas) or "none"


@dataclass(frozen=True)
class Policy:
    developer: RolePolicy
    controller: RolePolicy
    source: str = ""
    # package name -> the special files it may install (setuid, setgid, device, fifo); none by default
    special_files: tuple[tuple[str, frozenset[str]], ...] = ()

    def special(self) -> dict[str, frozenset[str]]:
        return dict(self.special_files)

    def role(self, name: str) -> RolePolicy:
        return self.developer if name == "developer" else self.controller


ROLE_KEYS = {"ca", "crl", "allow_no_crl", "subject", "subject_ere", "min_validity_days"}
MAX_POLICY_BYTES = 1 << 20
POLICY_KEYS = {"developer", "controller", "special_files"}
SPECIAL = ("setuid", "setgid", "device", "fifo")  # kinds of special files a package may be allowed


def load_policy(path: Path) -> Policy:
    """Read a policy file; paths in it are relative to it. Errors name the file and key."""
    data = _policy_data(path)
    if not isinstance(data, dict) or not {"developer", "controller"} <= set(data) <= POLICY_KEYS:
        raise InputError(f"{path}: a trust policy has exactly two keys, developer and controller (and may "
                         "have special_files)")
    roles = {name: _role(path, name, data[name]) for name in ("developer", "controller")}
    special = _special_files(path, data.get("special_files", {}))
    policy = Policy(roles["developer"], roles["controller"], str(path), special)
    _check_roles_apart(path, policy)
    return policy


def _special_files(path: Path, data: Any) -> tuple[tuple[str, frozenset[str]], ...]:
    """`special_files: {PACKAGE: [setuid, setgid, device, fifo]}`: what each named package may install."""
    if not isinstance(data, dict):
        raise InputError(f"{path}: special_files: a mapping of package names to lists is expected")
    out = []
    for name, kinds in data.items():
        if not isinstance(name, str) or not isinstance(kinds, list) or not set(map(str, kinds)) <= set(SPECIAL):
            raise InputError(f"{path}: special_files.{name}: a list of {', '.join(SPECIAL)} is expected")
        out.append((name, frozenset(kinds)))
    return tuple(sorted(out, key=lambda item: item[0]))


def _policy_data(path: Path) -> Any:
    raw = safefile.read_regular(path, MAX_POLICY_BYTES)
    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: the trust policy is not UTF-8 text (byte {exc.start})") from None
    except yaml.MarkedYAMLError as exc:
        where = f"{path}:{exc.problem_mark.line + 1}" if exc.problem_mark else str(path)
        raise InputError(f"{where}: cannot read the trust policy: {exc.problem or exc.context}") from None
    except (OSError, yaml.YAMLError, RecursionError) as exc:
        text = " ".join(str(exc).split())
        raise InputError(f"{path}: cannot read the trust policy: {text}") from None


def _role(path: Path, name: str, data: Any) -> RolePolicy:
    if not isinstance(data, dict) or not data.get("ca"):
        raise InputError(f"{path}: {name}: needs at least `ca: [CA certificate files]`")
    if unknown := set(data) - ROLE_KEYS:
        raise InputError(f"{path}: {name}.{sorted(map(str, unknown))[0]}: unknown key "
                         f"(known: {', '.join(sorted(ROLE_KEYS))})")
    base = path.parent
    cas = tuple(c for f in _files(path, f"{name}.ca", data["ca"]) for c in _load_certs(base / f, f"{path}: {name}.ca"))
    crls = tuple(_load_crl(base / f, f"{path}: {name}.crl") for f in _files(path, f"{name}.crl", data.get("crl", [])))
    allow_no_crl = _typed(path, f"{name}.allow_no_crl", data.get("allow_no_crl", False), bool)
    if not crls and not allow_no_crl:
        raise InputError(f"{path}: {name}: no crl: revocation would not be checked",
                         hint="give `crl: [FILE]` (the CA's CRL), or opt out explicitly with `allow_no_crl: true`")
    _check_crls(path, name, cas, crls)
    subject = _typed(path, f"{name}.subject", data.get("subject", ""), str)
    subject_ere = _typed(path, f"{name}.subject_ere", data.get("subject_ere", ""), str)
    _compile(path, f"{name}.subject", subject)
    subjects.compile_ere(subject_ere, f"{path}: {name}.subject_ere")
    days = _typed(path, f"{name}.min_validity_days", data.get("min_validity_days", DEFAULT_MIN_VALIDITY_DAYS), int)
    if not 0 <= days <= 36500:
        raise InputError(f"{path}: {name}.min_validity_days: {days} is not between 0 and 36500")
    return RolePolicy(name, cas, crls, subject, days, subject_ere, allow_no_crl)


def _typed(path: Path, key: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{path}: {key}: {value!r} is not a {kind.__name__}")
    return value


def _compile(path: Path, key: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise InputError(f"{path}: {key}: not a regular expression ({exc})") from None


def _files(path: Path, key: str, value: Any) -> list[str]:
    files = [value] if isinstance(value, str) else value
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise InputError(f"{path}: {key}: a file name or a list of file names, not {value!r}")
    return files


def _load_certs(path: Path, where: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path, where))
    except ValueError as exc:
        raise InputError(f"{where}: {path}: not a PEM certificate ({exc})") from None


def _load_crl(path: Path, where: str) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(_read(path, where))
    except ValueError as exc:
        raise InputError(f"{where}: {path}: not a PEM CRL ({exc})") from None


def _read(path: Path, where: str) -> bytes:
    try:
        return safefile.read_regular(path, MAX_POLICY_BYTES)
    except NotAFile as exc:
        raise InputError(f"{where}: {exc}") from None


def _check_crls(path: Path, role: str, cas: tuple[x509.Certificate, ...],
                crls: tuple[x509.CertificateRevocationList, ...]) -> None:
    """Every CRL is issued and signed by one of the role's CAs: a CRL of another CA would be silently ignored."""
    for crl in crls:
        issuer = next((ca for ca in cas if ca.subject == crl.issuer), None)
        if issuer is None or not crl_signed_by(crl, issuer):
            raise InputError(f"{path}: {role}.crl: the CRL of {crl.issuer.rfc4514_string()} is not issued and "
                             f"signed by a {role} CA ({', '.join(ca.subject.rfc4514_string() for ca in cas)})",
                             hint="give the CRL each of the role's CAs publishes")


def crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    """Whether `ca` signed `crl` (an unreadable key or signature is a no)."""
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


def revocation_aside(policy: Policy) -> Policy:
    """`policy` without revocation: the same CAs, subjects and validity, no CRL checked (and no warning). For
    what was checked in full when it was accepted: the records and the installed packages of a device, which a
    key revoked since they were signed does not make unknown."""
    def role(current: RolePolicy) -> RolePolicy:
        return replace(current, crls=(), allow_no_crl=True)
    return replace(policy, developer=role(policy.developer), controller=role(policy.controller))


def _key_bytes(path: Path, role: str, ca: x509.Certificate) -> bytes:
    try:
        return ca.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(f"{path}: {role}.ca: the key of {ca.subject.rfc4514_string()} cannot be read ({exc})") \
            from None


def _check_roles_apart(path: Path, policy: Policy) -> None:
    """One CA (or one CA key) trusted for both roles lets one key sign as developer and as controller."""
    def keys(role: RolePolicy) -> dict[bytes, x509.Certificate]:
        return {_key_bytes(path, role.role, ca): ca for ca in role.cas}
    shared = keys(policy.developer).keys() & keys(policy.controller).keys()
    if shared:
        ca = keys(policy.developer)[next(iter(shared))]
        raise InputError(f"{path}: the CA {ca.subject.rfc4514_string()} (or its key) is trusted for both roles: "
                         "one key could then sign as developer and countersign as controller",
                         hint="the developer and the controller CA must be distinct CAs with distinct keys")


@dataclass(frozen=True)
class SignerCheck:
    role: str
    ok: bool
    reasons: tuple[str, ...]
    subject: str = ""
    fingerprint: str = ""  # SHA-256 of the DER certificate
    digest: str = ""  # "sha256" or "sha512"


@dataclass(frozen=True)
class Verdict:
    path: str
    ok: bool
    reasons: tuple[str, ...]
    signers: tuple[SignerCheck, ...] = ()
    sha256: str = ""
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"package": self.path, "ok": self.ok, "reasons": list(self.reasons), "sha256": self.sha256,
                "warnings": list(self.warnings),
                "signers": [{"role": s.role, "ok": s.ok, "subject": s.subject, "fingerprint": s.fingerprint,
                             "digest": s.digest, "reasons": list(s.reasons)} for s in self.signers]}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@lru_cache(maxsize=256)
def _certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def hash_of(cert: x509.Certificate) -> str:
    """The digest CLIP signs with: the one of the certificate's own signature algorithm."""
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    name = algorithm.name if algorithm else "none"
    if name not in HASHES:
        raise ValueError(f"certificate signed with {cert.signature_algorithm_oid._name}: only "
                         "ecdsa-with-SHA256 and ecdsa-with-SHA512 are supported")
    return name


def check_certificate(cert: x509.Certificate, policy: RolePolicy, at: dt.datetime) -> list[str]:
    """Everything wrong with `cert` as a signer for the role, in words (empty when it is fine)."""
    problems = []
    subject = cert.subject.rfc4514_string()
    issuer = next((ca for ca in policy.cas if _issued_by(cert, ca)), None)
    if issuer is None:
        problems.append(f"certificate {subject} is not issued by the {policy.role} CA ({policy.ca_names()})")
    else:
        problems += _ca_problems(issuer, policy.role, at)
        problems += _revocation(cert, issuer, policy, at)
    problems += _usage_problems(cert)
    if at < cert.not_valid_before_utc:
        problems.append(f"certificate {subject} is not yet valid (valid from {cert.not_valid_before_utc:%Y-%m-%d})")
    if at > cert.not_valid_after_utc:
        problems.append(f"certificate {subject} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    problems += subjects.problems(cert, policy.role, policy.subject, policy.subject_ere)
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name not in CURVES:
        what = public.curve.name if isinstance(public, ec.EllipticCurvePublicKey) else type(public).__name__
        problems.append(f"certificate key {what}: CLIP signatures are ECDSA on {', '.join(CURVES.values())}")
    return problems


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ca_problems(ca: x509.Certificate, role: str, at: dt.datetime) -> list[str]:
    """A trust anchor past (or before) its validity is refused, as gen-crypt's check does."""
    name = ca.subject.rfc4514_string()
    if at > ca.not_valid_after_utc:
        return [f"the {role} CA {name}: certificate has expired (on {ca.not_valid_after_utc:%Y-%m-%d})"]
    if at < ca.not_valid_before_utc:
        return [f"the {role} CA {name}: certificate is not yet valid (from {ca.not_valid_before_utc:%Y-%m-%d})"]
    try:
        basic = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return [f"the {role} CA {ca.subject.rfc4514_string()} lacks basicConstraints or keyUsage"]
    if not basic.ca or not usage.key_cert_sign:
        return [f"the {role} CA {ca.subject.rfc4514_string()} is not a CA (CA:TRUE and keyCertSign required)"]
    return []


def _usage_problems(cert: x509.Certificate) -> list[str]:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return ["certificate has no keyUsage: a CLIP signer's is digitalSignature only"]
    flags = [name for name in ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign") if getattr(usage, name)]
    if flags != ["digital_signature"]:
        return [f"key usage is {', '.join(flags) or 'empty'}, not digitalSignature only"]
    return []


def _revocation(cert: x509.Certificate, ca: x509.Certificate, policy: RolePolicy, at: dt.datetime) -> list[str]:
    crls = [crl for crl in policy.crls if crl.issuer == ca.subject]
    if not crls and not policy.allow_no_crl:
        return [f"no CRL of the {policy.role} CA {ca.subject.rfc4514_string()} in the policy: revocation cannot "
                "be checked (give its CRL, or opt out with allow_no_crl: true)"]
    problems = []
    for crl in crls:
        if not crl.is_signature_valid(ca.public_key()):
            problems.append(f"the CRL of {ca.subject.rfc4514_string()} is not signed by that CA")
            continue
        if crl.next_update_utc is not None and at > crl.next_update_utc:
            problems.append(f"the CRL of {ca.subject.rfc4514_string()} is stale (next update was "
                            f"{crl.next_update_utc:%Y-%m-%d}): get a current one")
        revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if revoked is not None:
            problems.append(f"certificate {cert.subject.rfc4514_string()} (serial {cert.serial_number:#x}) "
                            f"is revoked since {revoked.revocation_date_utc:%Y-%m-%d}")
    return problems


class PrefixDigests:
    """Digests of the package's prefixes, asked for in increasing length (dev_sign's, ctrl_sign's, the whole
    file's SHA-256): each algorithm reads each byte once, instead of once per signature and once more.
    `running` may give hashers already fed with a prefix of `view` (signing hashes while it copies)."""

    def __init__(self, view: memoryview, running: dict[str, tuple[Any, int]] | None = None):
        self.view = view
        self.running = dict(running or {})

    def hasher(self, name: str, length: int) -> Any:
        """A hasher fed with bytes [0, length) of the view (a copy: the caller may feed it more)."""
        hasher, done = self.running.get(name, (hashlib.new(name), 0))
        if length < done:
            hasher, done = hashlib.new(name), 0
        hasher.update(self.view[done:length])
        self.running[name] = (hasher, length)
        return hasher.copy()

    def digest(self, name: str, length: int) -> bytes:
        return self.hasher(name, length).digest()


def _check_signature(sig: clipsig.Signature, policy: RolePolicy, view: PrefixDigests,
                     at: dt.datetime) -> SignerCheck:
    try:
        return _check_signature_unsafe(sig, policy, view, at)
    except Exception as exc:  # the certificate is attacker-controlled: any failure to read it refuses
        return SignerCheck(sig.role, False, (f"{sig.member.name}: the certificate cannot be read "
                                             f"({type(exc).__name__}: {exc})",))


def _check_signature_unsafe(sig: clipsig.Signature, policy: RolePolicy, view: PrefixDigests,
                            at: dt.datetime) -> SignerCheck:
    member = sig.member.name
    cert = _certificate(sig.certificate)
    if not sig.certificate.endswith(b"\x00" + cert.signature):
        # OpenSSL tolerates a non-zero "unused bits" octet in the signature BIT STRING; DER does not, and a
        # certificate that can change without its signature changing is refused.
        return SignerCheck(sig.role, False, (f"{member}: the certificate is not in canonical DER",))
    subject = cert.subject.rfc4514_string()
    fingerprint = hashlib.sha256(sig.certificate).hexdigest()
    try:
        digest_name = hash_of(cert)
    except ValueError as exc:
        return SignerCheck(sig.role, False, (f"{member}: {exc}",), subject, fingerprint)
    reasons = [f"{member}: {p}" for p in check_certificate(cert, policy, at)]
    public = cert.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        digest = view.digest(digest_name, sig.signed_length)
        try:
            public.verify(sig.signature, digest, ec.ECDSA(Prehashed(HASHES[digest_name]())))
        except InvalidSignature:
            reasons.append(f"{member}: the signature does not match the package's bytes [0, "
                           f"{sig.signed_length}) (modified after signing, or signed by another key)")
    return SignerCheck(sig.role, not reasons, tuple(reasons), subject, fingerprint, digest_name)


def no_crl_warnings(policy: Policy, roles: tuple[str, ...] = ("developer", "controller")) -> tuple[str, ...]:
    return tuple(f"the policy opts out of CRLs for the {role} (allow_no_crl): revocation was not checked"
                 for role in roles if policy.role(role).allow_no_crl)


def verify_bytes(data: bytes | memoryview | mmap.mmap, policy: Policy, *, path: str = "",
                 at: dt.datetime | None = None) -> Verdict:
    """The verdict on one package's bytes: layout, then both signatures."""
    at = at or now()
    warnings = no_crl_warnings(policy)
    with memoryview(data) as view:
        try:
            layout = clipsig.read_layout(view)
        except (ArError, LayoutError) as exc:
            return Verdict(path, False, (str(exc),), sha256=hashlib.sha256(view).hexdigest(), warnings=warnings)
        if layout.dev is None or layout.ctrl is None:
            reason = ("no dev_sign: the package is not signed" if layout.dev is None else
                      "no ctrl_sign: a developer signed it, no controller countersigned it")
            return Verdict(path, False, (reason,), sha256=hashlib.sha256(view).hexdigest(), warnings=warnings)
        digests = PrefixDigests(view)
        checks = tuple(_check_signature(s, policy.role(s.role), digests, at) for s in (layout.dev, layout.ctrl))
        reasons = tuple(r for c in checks for r in c.reasons)
        whole = digests.digest("sha256", len(view)).hex()
        return Verdict(path, not reasons, reasons, checks, whole, warnings)


def verify_developer(data: bytes | memoryview | mmap.mmap, policy: Policy, *, path: str = "",
                     at: dt.datetime | None = None, digests: PrefixDigests | None = None) -> Verdict:
    """What a controller checks before countersigning: layout, and the developer signature, last. `digests`,
    over the same bytes, may hold prefixes already hashed."""
    at = at or now()
    with memoryview(data) as view:
        try:
            layout = clipsig.read_layout(view)
        except (ArError, LayoutError) as exc:
            return Verdict(path, False, (str(exc),))
        if layout.dev is None:
            return Verdict(path, False, ("no dev_sign: a developer must sign it first",))
        if layout.ctrl is not None:
            return Verdict(path, False, ("already countersigned",))
        check = _check_signature(layout.dev, policy.developer, digests or PrefixDigests(view), at)
        return Verdict(path, check.ok, check.reasons, (check,), warnings=no_crl_warnings(policy, ("developer",)))


MAX_PACKAGE_BYTES = 2 << 30  # 2 GiB: no CLIP package comes near; a bigger file is refused before any read


def verify_file(path: Path, policy: Policy, *, at: dt.datetime | None = None) -> Verdict:
    """The verdict on the package at `path`, once a signature interrupted by a kill is undone (the package cut
    back to its length before it, core.appendlog); a record of one that does not match refuses the package."""
    try:
        appendlog.recover(path)
        fd = safefile.open_regular(path, max_size=MAX_PACKAGE_BYTES)
    except (NotAFile, AppendRecordRefused) as exc:
        return Verdict(str(path), False, (str(exc).removeprefix(f"{path}: "),))
    with os.fdopen(fd, "rb") as stream:
        if os.fstat(fd).st_size == 0:
            return Verdict(str(path), False, ("empty file",))
        try:
            with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                verdict = verify_bytes(mapped, policy, path=str(path), at=at)
        except OSError as exc:
            return Verdict(str(path), False, (f"cannot read: {exc.strerror}",))
    for warning in verdict.warnings:
        log.warning("%s: %s", path, warning)
    return verdict
