"""CLIP OS 4's double signature on .deb packages: the wire format (clipos4.md §2).

A signed package is an ar archive: debian-binary, control.tar.*, data.tar.*, then `dev_sign`, then `ctrl_sign`.
Each signature member is itself an ar archive holding `certificate` (DER X.509) and `signature` (a 16-byte
header "00000000" + the DER length as 8 hex digits, then the DER ECDSA signature). The developer signs every
byte before `dev_sign`'s header; the controller every byte before `ctrl_sign`'s header.

Writing follows gen-crypt byte for byte (member names NUL-terminated at byte 15, uid/gid 0, mode 100644, and the
length header byte-swapped as x86 machines wrote it); reading also accepts the big-endian length header. The
layout check is stricter than gen-crypt's: exactly the three .deb members, then the signatures, nothing else.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from clipbuild.core.errors import ArError, LayoutError
from clipbuild.formats import ar

DEV = "dev_sign"
CTRL = "ctrl_sign"
ROLES = {"developer": DEV, "controller": CTRL}
SIG_HEADER_LEN = 16
_DEB_MEMBERS = (("debian-binary", re.compile(r"debian-binary")),
                ("control.tar", re.compile(r"control\.tar(\.(gz|xz|zst))?")),
                ("data.tar", re.compile(r"data\.tar(\.(gz|xz|zst|bz2))?")))
MAX_SIGNATURE_MEMBER = 64 * 1024  # a certificate and a signature: a few KiB; anything bigger is refused


@dataclass(frozen=True)
class Signature:
    role: str  # "developer" or "controller"
    member: ar.Member
    certificate: bytes  # DER
    signature: bytes  # DER ECDSA-Sig-Value
    length_header: str  # "byte-swapped" (gen-crypt on x86) or "big-endian"

    @property
    def signed_length(self) -> int:
        """The signature covers bytes [0, signed_length) of the package."""
        return self.member.header_offset


@dataclass(frozen=True)
class Layout:
    members: tuple[ar.Member, ...]
    deb_end: int  # end of data.tar: the unsigned package is bytes [0, deb_end)
    dev: Signature | None
    ctrl: Signature | None


def read_layout(data: bytes | memoryview) -> Layout:
    """Parse and check the package's layout; raise LayoutError or ArError with the failed rule."""
    view = memoryview(data)
    members = ar.parse(view, what="package")
    names = [m.name for m in members]
    for index, (label, pattern) in enumerate(_DEB_MEMBERS):
        if index >= len(members):
            raise LayoutError(f"missing member {label} (members: {', '.join(names) or 'none'})")
        if not pattern.fullmatch(members[index].name):
            where = next((i for i, n in enumerate(names) if pattern.fullmatch(n)), None)
            if where is None:
                raise LayoutError(f"missing member {label} (members: {', '.join(names)})")
            raise LayoutError(f"reordered members: {label} is member {where + 1}, not {index + 1} "
                              f"({', '.join(names)})")
    rest = members[3:]
    tail = [m.name for m in rest]
    if tail not in ([], [DEV], [DEV, CTRL]):
        raise LayoutError(_tail_problem(tail))
    dev = _signature("developer", view, rest[0]) if rest else None
    ctrl = _signature("controller", view, rest[1]) if len(rest) > 1 else None
    return Layout(tuple(members), members[2].end, dev, ctrl)


def _tail_problem(tail: list[str]) -> str:
    extra = [n for n in tail if n not in (DEV, CTRL)]
    if extra:
        return (f"extra member {extra[0]} after data.tar: a CLIP package holds only debian-binary, "
                f"control.tar and data.tar before its signatures")
    if tail.count(DEV) > 1 or tail.count(CTRL) > 1:
        return f"a signature member appears twice ({', '.join(tail)})"
    if tail and tail[0] == CTRL:
        return ("ctrl_sign comes before dev_sign: the controller must countersign a developer-signed package, "
                "and ctrl_sign must be last")
    return f"unexpected members after data.tar: {', '.join(tail)}"


def _signature(role: str, view: memoryview, member: ar.Member) -> Signature:
    if member.size > MAX_SIGNATURE_MEMBER:
        raise LayoutError(f"{member.name} is {member.size} bytes: oversized (at most {MAX_SIGNATURE_MEMBER})")
    body = view[member.data_offset:member.data_offset + member.size]
    try:
        inner = ar.parse(body, what=member.name)
    except ArError as exc:
        raise LayoutError(str(exc)) from None
    if [m.name for m in inner] != ["certificate", "signature"]:
        raise LayoutError(f"{member.name} must hold certificate then signature, not "
                          f"{', '.join(m.name for m in inner) or 'nothing'}")
    cert_m, sig_m = inner
    certificate = bytes(body[cert_m.data_offset:cert_m.data_offset + cert_m.size])
    raw = bytes(body[sig_m.data_offset:sig_m.data_offset + sig_m.size])
    if len(raw) <= SIG_HEADER_LEN:
        raise LayoutError(f"{member.name}: signature member too short ({len(raw)} bytes)")
    head, signature = raw[:SIG_HEADER_LEN], raw[SIG_HEADER_LEN:]
    form = _length_form(head, len(signature))
    if form is None:
        raise LayoutError(f"{member.name}: signature length header {head!r} does not give the "
                          f"{len(signature)} bytes that follow it")
    return Signature(role, member, certificate, signature, form)


def _length_form(head: bytes, length: int) -> str | None:
    try:
        text = head.decode("ascii")
        if text[:8] != "00000000":
            return None
        value = bytes.fromhex(text[8:])
    except (UnicodeDecodeError, ValueError):
        return None
    if int.from_bytes(value[::-1], "big") == length:
        return "byte-swapped"
    if int.from_bytes(value, "big") == length:
        return "big-endian"
    return None


def signature_date() -> int:
    """Member dates: SOURCE_DATE_EPOCH when set (reproducible packages), else now, as gen-crypt wrote."""
    return int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())


def signature_member(role: str, certificate: bytes, signature: bytes, date: int) -> bytes:
    """The ar member gen-crypt appends for `role`, byte for byte."""
    length = len(signature).to_bytes(4, "little").hex()  # htonl() then %.8x on x86: byte-swapped
    body = ar.archive([("certificate", certificate),
                       ("signature", b"00000000" + length.encode() + signature)], date, nul_name=True)
    return ar.member(ROLES[role], body, date, nul_name=True)
