"""The ar archive format of .deb files and of CLIP's signature members: a strict reader and a writer.

The reader accepts what dpkg and CLIP OS 4's gen-crypt write (names padded with spaces, optionally ending in
"/" or, as gen-crypt's `snprintf(name, 16, "%-16s")` leaves it, in a NUL at byte 15) and refuses everything
else with a reason: a bad magic, a malformed header, a size that is not a number, a member running past the end
of the file, a pad byte other than "\\n", bytes after the last member. It never trusts a size before checking it
against the data it has.
"""

from __future__ import annotations

from dataclasses import dataclass

from clipbuild.core.errors import ArError

MAGIC = b"!<arch>\n"
HEADER = 60
FMAG = b"`\n"
MAX_MEMBERS = 64


@dataclass(frozen=True)
class Member:
    name: str
    header_offset: int  # where the member's 60-byte header starts
    data_offset: int
    size: int

    @property
    def end(self) -> int:
        """Offset after the data and its pad byte."""
        return self.data_offset + self.size + (self.size & 1)


def _name(field: bytes, offset: int, what: str) -> str:
    raw = field.split(b"\0", 1)[0] if b"\0" in field else field
    text = raw.rstrip(b" ")
    if text.endswith(b"/") and text != b"/":
        text = text[:-1]
    if not text or any(c < 0x21 or c > 0x7E for c in text):
        raise ArError(f"{what}: member header at byte {offset}: unreadable name {field!r}")
    return text.decode("ascii")


def _number(field: bytes, label: str, offset: int, what: str) -> int:
    text = field.rstrip(b" ")
    if not text.isdigit():
        raise ArError(f"{what}: member header at byte {offset}: {label} {field!r} is not a number")
    return int(text)


def parse(data: bytes | memoryview, *, what: str = "archive") -> list[Member]:
    """The members of an ar archive, in order; raises ArError on any malformation."""
    view = memoryview(data)
    if bytes(view[:8]) != MAGIC:
        raise ArError(f"{what}: not an ar archive (bad magic)")
    members: list[Member] = []
    offset = len(MAGIC)
    while offset < len(view):
        if len(members) >= MAX_MEMBERS:
            raise ArError(f"{what}: more than {MAX_MEMBERS} members")
        if offset + HEADER > len(view):
            raise ArError(f"{what}: truncated member header at byte {offset}")
        header = bytes(view[offset:offset + HEADER])
        if header[58:60] != FMAG:
            raise ArError(f"{what}: member header at byte {offset} does not end in `\\n")
        name = _name(header[0:16], offset, what)
        for start, end, field in ((16, 28, "date"), (28, 34, "uid"), (34, 40, "gid"), (40, 48, "mode")):
            _number(header[start:end], field, offset, what)
        size = _number(header[48:58], "size", offset, what)
        data_offset = offset + HEADER
        if data_offset + size > len(view):
            raise ArError(f"{what}: member {name} is truncated: its header says {size} bytes, "
                          f"{len(view) - data_offset} remain")
        member = Member(name, offset, data_offset, size)
        if size & 1:
            if member.end > len(view):
                raise ArError(f"{what}: member {name} lacks its pad byte")
            if view[data_offset + size] != 0x0A:
                raise ArError(f"{what}: member {name}: pad byte is not \\n")
        members.append(member)
        offset = member.end
    return members


def header(name: str, size: int, date: int, *, nul_name: bool = False) -> bytes:
    """A member header. `nul_name` writes the name as gen-crypt does: 15 characters, then a NUL."""
    if len(name) > 15 or not name.isascii():
        raise ValueError(f"ar member name {name!r}: at most 15 ASCII characters")
    name_field = (name.ljust(15) + "\0") if nul_name else name.ljust(16)
    text = f"{name_field}{date:<12d}{'0':<6}{'0':<6}{'100644':<8}{size:<10d}"
    return text.encode("ascii") + FMAG


def member(name: str, data: bytes, date: int, *, nul_name: bool = False) -> bytes:
    """Header, data and the pad byte when the size is odd."""
    return header(name, len(data), date, nul_name=nul_name) + data + (b"\n" if len(data) & 1 else b"")


def archive(members: list[tuple[str, bytes]], date: int, *, nul_name: bool = False) -> bytes:
    return MAGIC + b"".join(member(name, body, date, nul_name=nul_name) for name, body in members)
