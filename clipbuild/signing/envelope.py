"""Signed JSON documents: `{"signed": {...}, "signatures": [{...}]}`, in the manner of The Update Framework.

The signature is over the canonical form of `signed` (UTF-8 JSON, keys sorted, no spaces, no floats), made with
a CLIP signer's key (ECDSA, deterministic, over the digest its certificate names, as package signatures are),
and carries the signer's DER certificate so a verifier checks it against a role of its trust policy: issued by
the role's CA, valid, not revoked, keyUsage digitalSignature only, subject rules.

Reading is strict, the document being hostile until verified: at most MAX_BYTES, UTF-8, JSON without
duplicate keys, floats, NaN or integers beyond 2^63, at most MAX_DEPTH levels deep.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from clipbuild.core import safefile
from clipbuild.core.errors import SigningError
from clipbuild.signing.signer import SigningKey
from clipbuild.signing.trust import HASHES, RolePolicy, check_certificate, hash_of

MAX_BYTES = 4 << 20  # a release of a few thousand packages is far below
MAX_DEPTH = 8
MAX_INT = 2**63 - 1


class EnvelopeError(SigningError):
    """A signed document that cannot be read, or whose signature does not hold."""


@dataclass(frozen=True)
class Envelope:
    signed: dict[str, Any]
    certificate: bytes  # DER, of the (first and only) signer
    signature: bytes
    digest: str  # "sha256" or "sha512"

    @property
    def payload(self) -> bytes:
        return canonical(self.signed)

    @property
    def sha256(self) -> str:
        """Identifies the statement (what was signed), whoever signed it."""
        return hashlib.sha256(self.payload).hexdigest()


def canonical(signed: dict[str, Any]) -> bytes:
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sign(signed: dict[str, Any], signer: SigningKey) -> bytes:
    """The document, signed: what `read` and `verify` accept."""
    _check_value(signed, "signed", 0)
    name = hash_of(signer.cert)
    digest = hashlib.new(name, canonical(signed)).digest()
    signature = signer.key.sign(digest, ec.ECDSA(Prehashed(HASHES[name]()), deterministic_signing=True))
    document = {"signed": signed, "signatures": [{
        "certificate": base64.b64encode(signer.cert_der).decode(), "hash": name,
        "signature": base64.b64encode(signature).decode()}]}
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def read_file(path: Path) -> bytes:
    """A signed document's bytes: a regular file, not a link, at most MAX_BYTES; NotAFile otherwise."""
    fd = safefile.open_regular(path, follow=False, max_size=MAX_BYTES)
    with os.fdopen(fd, "rb") as stream:
        return stream.read(MAX_BYTES + 1)


def read(raw: bytes, where: str) -> Envelope:
    """Parse (not verify) a signed document; every defect is an EnvelopeError naming `where`."""
    if len(raw) > MAX_BYTES:
        raise EnvelopeError(f"{where}: {len(raw)} bytes, more than the {MAX_BYTES} a signed document may have")
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_float=_no_float,
                          parse_constant=_no_float)
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError(f"{where}: not a JSON document ({exc})") from None
    if not isinstance(data, dict) or set(data) != {"signed", "signatures"} or not isinstance(data["signed"], dict):
        raise EnvelopeError(f"{where}: a signed document is {{\"signed\": {{...}}, \"signatures\": [...]}}")
    _check_value(data["signed"], "signed", 0, where)
    signatures = data["signatures"]
    if not isinstance(signatures, list) or len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise EnvelopeError(f"{where}: signatures: exactly one signature is expected, found "
                            f"{len(signatures) if isinstance(signatures, list) else 'none'}",
                            hint="an unsigned draft is signed with: clipbuild repo sign-metadata REPO")
    entry = signatures[0]
    if set(entry) != {"certificate", "hash", "signature"} or entry["hash"] not in HASHES:
        raise EnvelopeError(f"{where}: signatures[0]: certificate, hash (sha256 or sha512) and signature expected")
    return Envelope(data["signed"], _b64(entry["certificate"], where), _b64(entry["signature"], where),
                    entry["hash"])


def verify(envelope: Envelope, policy: RolePolicy, at: dt.datetime) -> list[str]:
    """Every reason the signature does not hold for `policy`'s role at `at` (empty: it holds)."""
    try:
        cert = x509.load_der_x509_certificate(envelope.certificate)
    except ValueError as exc:
        return [f"the signer's certificate cannot be read ({exc})"]
    try:
        name = hash_of(cert)
    except ValueError as exc:
        return [str(exc)]
    if name != envelope.digest:
        return [f"the signature says {envelope.digest}, the certificate's algorithm is {name}"]
    problems = check_certificate(cert, policy, at)
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return [*problems, "the signer's key is not an ECDSA key"]
    digest = hashlib.new(name, envelope.payload).digest()
    try:
        public.verify(envelope.signature, digest, ec.ECDSA(Prehashed(HASHES[name]())))
    except InvalidSignature:
        problems.append("the signature does not match the document (modified after signing, or signed by "
                        "another key)")
    return problems


def signer_subject(envelope: Envelope) -> str:
    try:
        return x509.load_der_x509_certificate(envelope.certificate).subject.rfc4514_string()
    except ValueError:
        return "?"


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_BYTES:
        raise EnvelopeError(f"{where}: signatures[0]: base64 text expected")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{where}: signatures[0]: not base64") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} is given twice")
        out[key] = value
    return out


def _no_float(text: str) -> Any:
    raise ValueError(f"{text}: numbers in a signed document are integers")


def _check_value(value: Any, path: str, depth: int, where: str = "document") -> None:
    """Only what the canonical form represents one way: strings, integers, booleans, null, lists, objects."""
    if depth > MAX_DEPTH:
        raise EnvelopeError(f"{where}: {path}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise EnvelopeError(f"{where}: {path}: {value} is out of range")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_value(item, f"{path}.{key}", depth + 1, where)
        return
    raise EnvelopeError(f"{where}: {path}: a {type(value).__name__} cannot be signed")
