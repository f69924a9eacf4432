"""A small, strict reader of PE/COFF images (PE32+): the section table, what systemd's stub measures of a
section, and the Authenticode digest UEFI firmware measures and verifies.

It reads the DOS header (`MZ`, `e_lfanew`), the `PE\\0\\0` signature, the COFF file header, the PE32+ optional
header (CheckSum, SizeOfHeaders, the data directories) and the section table, nothing more. The input is
hostile: every offset and size is checked against the file before it is used, and a truncated or malformed
image raises `InputError` naming the part and the offset, never another exception.

`authenticode_sha256` follows Microsoft's "Windows Authenticode Portable Executable Signature Format" as
EDK II implements it (DxeImageVerificationLib, Tcg2Dxe's MeasurePeImageAndExtend): the headers up to
SizeOfHeaders without the CheckSum field and the Certificate Table directory entry, then each section's raw
data in order of PointerToRawData (sections without raw data skipped), then whatever follows the last
hashed byte, except the certificate table at the end of the file. Hash the file as signed: sbsign pads the
image to 8 bytes before appending its certificate table, and that padding is hashed.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from clipbuild.core.errors import InputError

DOS_MAGIC = b"MZ"
PE_SIGNATURE = b"PE\0\0"
PE32_PLUS = 0x20B
PE32 = 0x10B
COFF = struct.Struct("<HHIIIHH")  # Machine .. Characteristics: 20 bytes
SECTION = struct.Struct("<8sIIIIIIHHI")  # 40 bytes
U16, U32 = struct.Struct("<H"), struct.Struct("<I")
DIRECTORY = struct.Struct("<II")  # VirtualAddress (a file offset for the certificate table), Size
CHECKSUM_AT = 64  # in the optional header, PE32 and PE32+ alike
SIZE_OF_IMAGE_AT = 56
SIZE_OF_HEADERS_AT = 60
RVA_COUNT_AT = 108  # PE32+: NumberOfRvaAndSizes
DIRECTORIES_AT = 112  # PE32+: the first data directory
CERTIFICATE_TABLE = 4  # index of the Certificate Table among the data directories
MAX_SECTIONS = 96  # the PE format's own limit
MAX_DIRECTORIES = 16
MAX_IMAGE = 1 << 30  # SizeOfImage: a UEFI application is megabytes in memory


@dataclass(frozen=True)
class Section:
    name: str
    vma: int  # VirtualAddress: where the loader puts it, relative to the image base
    virtual_size: int
    raw_offset: int  # PointerToRawData
    raw_size: int  # SizeOfRawData


@dataclass(frozen=True)
class PeLayout:
    """Where the parts Authenticode needs lie in the file."""

    size_of_headers: int
    checksum_offset: int
    cert_entry_offset: int | None  # the Certificate Table directory entry, None when the image has no such entry
    cert_table: tuple[int, int]  # (file offset, size); (0, 0) for an unsigned image
    sections: tuple[Section, ...]
    raw_names: tuple[bytes, ...]  # each section's 8 name bytes as stored


def _unpack(layout: struct.Struct, data: bytes, offset: int, what: str) -> tuple:
    if offset < 0 or offset + layout.size > len(data):
        raise InputError(f"PE image: {what} at byte {offset} runs past the end of the file ({len(data)} bytes)")
    return layout.unpack_from(data, offset)


def _u16(data: bytes, offset: int, what: str) -> int:
    return int(_unpack(U16, data, offset, what)[0])


def _u32(data: bytes, offset: int, what: str) -> int:
    return int(_unpack(U32, data, offset, what)[0])


def _optional_header(data: bytes) -> tuple[int, int, int]:
    """(offset of the optional header, its declared size, number of sections), after the DOS and COFF checks."""
    if len(data) < 64 or data[:2] != DOS_MAGIC:
        raise InputError(f"not a PE image: {len(data)} bytes, no MZ header")
    pe_at = _u32(data, 0x3C, "e_lfanew")
    if data[pe_at:pe_at + 4] != PE_SIGNATURE:
        raise InputError(f"not a PE image: no PE signature at byte {pe_at} (e_lfanew)")
    _machine, n_sections, _time, _symbols, _n_symbols, opt_size, _flags = _unpack(COFF, data, pe_at + 4,
                                                                                   "COFF header")
    if n_sections > MAX_SECTIONS:
        raise InputError(f"PE image: {n_sections} sections declared, more than the format's {MAX_SECTIONS}")
    opt_at = pe_at + 4 + COFF.size
    magic = _u16(data, opt_at, "optional header")
    if magic == PE32:
        raise InputError("PE image: a PE32 (32-bit) image; only PE32+ (x86-64) images are read")
    if magic != PE32_PLUS:
        raise InputError(f"PE image: optional header magic {magic:#x} at byte {opt_at} is not PE32+ (0x20b)")
    if opt_size < DIRECTORIES_AT:
        raise InputError(f"PE image: SizeOfOptionalHeader {opt_size} is smaller than a PE32+ header "
                         f"({DIRECTORIES_AT} bytes before the data directories)")
    return opt_at, opt_size, n_sections


def _certificate_entry(data: bytes, opt_at: int, opt_size: int) -> tuple[int | None, tuple[int, int]]:
    """The Certificate Table directory entry's offset (None when absent) and the table's (offset, size)."""
    count = _u32(data, opt_at + RVA_COUNT_AT, "NumberOfRvaAndSizes")
    if count > MAX_DIRECTORIES:
        raise InputError(f"PE image: NumberOfRvaAndSizes {count} is more than {MAX_DIRECTORIES}")
    if DIRECTORIES_AT + count * DIRECTORY.size > opt_size:
        raise InputError(f"PE image: {count} data directories do not fit SizeOfOptionalHeader {opt_size}")
    if count <= CERTIFICATE_TABLE:
        return None, (0, 0)
    entry_at = opt_at + DIRECTORIES_AT + CERTIFICATE_TABLE * DIRECTORY.size
    offset, size = _unpack(DIRECTORY, data, entry_at, "Certificate Table directory entry")
    if size == 0:
        return entry_at, (0, 0)
    if offset + size != len(data):
        raise InputError(f"PE image: the certificate table (bytes {offset}..{offset + size}) is not at the end "
                         f"of the file ({len(data)} bytes)")
    return entry_at, (offset, size)


def _section_table(data: bytes, table_at: int, count: int,
                   size_of_image: int) -> tuple[tuple[Section, ...], tuple[bytes, ...]]:
    sections, names = [], []
    for index in range(count):
        raw_name, vsize, vma, raw_size, raw_at, *_rest = _unpack(SECTION, data, table_at + index * SECTION.size,
                                                                 f"section header {index}")
        if raw_size and (raw_at + raw_size > len(data)):
            raise InputError(f"PE image: section {index} ({_name(raw_name)}): raw data at bytes "
                             f"{raw_at}..{raw_at + raw_size} lies outside the file ({len(data)} bytes)")
        if vma + vsize > size_of_image:
            raise InputError(f"PE image: section {index} ({_name(raw_name)}): addresses {vma:#x}..{vma + vsize:#x} "
                             f"lie outside SizeOfImage ({size_of_image:#x})")
        sections.append(Section(_name(raw_name), vma, vsize, raw_at, raw_size))
        names.append(raw_name)
    return tuple(sections), tuple(names)


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def layout(data: bytes) -> PeLayout:
    """Parse and check an image's headers and section table."""
    opt_at, opt_size, n_sections = _optional_header(data)
    size_of_headers = _u32(data, opt_at + SIZE_OF_HEADERS_AT, "SizeOfHeaders")
    size_of_image = _u32(data, opt_at + SIZE_OF_IMAGE_AT, "SizeOfImage")
    if size_of_image > MAX_IMAGE:
        raise InputError(f"PE image: SizeOfImage {size_of_image} is more than {MAX_IMAGE} bytes")
    entry_at, cert_table = _certificate_entry(data, opt_at, opt_size)
    table_at = opt_at + opt_size
    table_end = table_at + n_sections * SECTION.size
    if not table_end <= size_of_headers <= len(data):
        raise InputError(f"PE image: SizeOfHeaders {size_of_headers} must cover the section table (up to byte "
                         f"{table_end}) and lie within the file ({len(data)} bytes)")
    sections, names = _section_table(data, table_at, n_sections, size_of_image)
    return PeLayout(size_of_headers, opt_at + CHECKSUM_AT, entry_at, cert_table, sections, names)


def sections(data: bytes) -> list[Section]:
    """The section table, in file order."""
    return list(layout(data).sections)


def loaded_bytes(data: bytes, section: Section) -> bytes:
    """What the loaded image holds in `section`: the loader copies min(VirtualSize, SizeOfRawData) bytes of
    raw data and zero-fills the rest up to VirtualSize."""
    kept = min(section.virtual_size, section.raw_size)
    return data[section.raw_offset:section.raw_offset + kept] + bytes(section.virtual_size - kept)


def section_data(data: bytes, name: str) -> bytes | None:
    """The loaded bytes of the first section named `name`, None if there is none: VirtualSize bytes, what
    systemd's stub measures (pe.c, locate_sections), not the file-aligned SizeOfRawData."""
    for section in layout(data).sections:
        if section.name == name:
            return loaded_bytes(data, section)
    return None


def authenticode_sha256(data: bytes) -> bytes:
    """The image's Authenticode SHA-256 digest (what firmware compares with a signature and measures into
    PCR 4)."""
    pe = layout(data)
    digest = hashlib.sha256()
    digest.update(data[:pe.checksum_offset])
    if pe.cert_entry_offset is None:
        digest.update(data[pe.checksum_offset + 4:pe.size_of_headers])
    else:
        digest.update(data[pe.checksum_offset + 4:pe.cert_entry_offset])
        digest.update(data[pe.cert_entry_offset + DIRECTORY.size:pe.size_of_headers])
    hashed = pe.size_of_headers
    for section in sorted((s for s in pe.sections if s.raw_size), key=lambda s: s.raw_offset):
        digest.update(data[section.raw_offset:section.raw_offset + section.raw_size])
        hashed += section.raw_size
    trailing_end = len(data) - pe.cert_table[1]
    if hashed > trailing_end:
        raise InputError(f"PE image: headers and sections ({hashed} bytes) overlap the certificate table at "
                         f"byte {trailing_end}")
    digest.update(data[hashed:trailing_end])
    return digest.digest()
