"""The PE reader and the Authenticode digest, checked against independent implementations: objdump's section
table, the digest sbsign computes and signs, and virt-firmware's (pefile-based) Authenticode hash; malformed
images refused with InputError, never another exception."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipbuild.core.errors import InputError
from clipbuild.core.run import run
from clipbuild.formats import pe
from tests.unit.formats import pecraft

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A UKI, systemd-boot, and both signed with a fresh key."""
    pecraft.need("objcopy", "objdump", "sbsign", "faketime")
    folder = tmp_path_factory.mktemp("pe")
    key = pecraft.keys(folder)
    sections = {".osrel": b"ID=clip\nIMAGE_VERSION=1\n", ".cmdline": b"console=ttyS0 ro",
                ".linux": bytes(range(256)) * 40 + b"end"}
    uki = pecraft.uki(folder, sections)
    loader = folder / "systemd-boot.efi"
    loader.write_bytes(pecraft.SYSTEMD_BOOT.read_bytes())
    return {"sections": sections, "uki": uki.read_bytes(), "uki_signed": pecraft.sign(uki, key).read_bytes(),
            "loader_signed": pecraft.sign(loader, key).read_bytes(), "folder": folder, "key": key}


def _objdump_sections(data: bytes, folder) -> list[tuple[str, int, int, int]]:
    path = folder / "objdump-input.efi"
    path.write_bytes(data)
    found = []
    for line in run(["objdump", "-h", str(path)]).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[0].isdigit():
            found.append((fields[1], int(fields[3], 16), int(fields[2], 16), int(fields[5], 16)))
    return found


def test_the_section_table_is_objdumps(made):
    for data in (made["uki"], made["loader_signed"]):
        mine = [(s.name, s.vma, s.virtual_size, s.raw_offset) for s in pe.sections(data)]
        assert mine == _objdump_sections(data, made["folder"])
    names = [s.name for s in pe.sections(made["uki"])]
    assert names[-3:] == [".osrel", ".cmdline", ".linux"]


def test_section_data_is_the_added_content_not_the_file_aligned_raw_data(made):
    cmdline = next(s for s in pe.sections(made["uki"]) if s.name == ".cmdline")
    assert cmdline.raw_size > cmdline.virtual_size == len(made["sections"][".cmdline"])
    for name, content in made["sections"].items():
        assert pe.section_data(made["uki"], name) == content
        assert pe.section_data(made["uki_signed"], name) == content
    assert pe.section_data(made["uki"], ".initrd") is None
    assert pe.section_data(made["uki"], ".cmdlin") is None


def _section_header_at(data: bytes, name: str) -> int:
    pe_at = struct.unpack_from("<I", data, 0x3C)[0]
    n_sections, opt_size = struct.unpack_from("<H", data, pe_at + 6)[0], struct.unpack_from("<H", data, pe_at + 20)[0]
    table = pe_at + 24 + opt_size
    for index in range(n_sections):
        at = table + 40 * index
        if data[at:at + 8].rstrip(b"\0") == name.encode():
            return at
    raise AssertionError(name)


def test_section_data_zero_fills_what_the_loader_zero_fills(made):
    data = bytearray(made["uki"])
    at = _section_header_at(data, ".cmdline")
    raw_size = struct.unpack_from("<I", data, at + 16)[0]
    struct.pack_into("<I", data, at + 8, raw_size + 100)  # VirtualSize beyond the raw data (the next page is free)
    raw_at = struct.unpack_from("<I", data, at + 20)[0]
    assert pe.section_data(bytes(data), ".cmdline") == bytes(data[raw_at:raw_at + raw_size]) + bytes(100)


def test_authenticode_is_the_digest_sbsign_signed(made):
    for signed in (made["uki_signed"], made["loader_signed"]):
        assert pe.authenticode_sha256(signed) == pecraft.signed_digest(signed)


def test_authenticode_is_virt_firmwares(made):
    pefile = pytest.importorskip("pefile")
    pesign = pytest.importorskip("virt.peutils.pesign")
    for signed in (made["uki_signed"], made["loader_signed"]):
        assert pe.authenticode_sha256(signed) == pesign.pe_authenticode_hash(pefile.PE(data=signed))


def test_authenticode_hashes_sections_in_file_order_not_table_order(made):
    """Swap two section headers: the table no longer follows the file; sbsign and virt-firmware still agree."""
    data = bytearray(made["uki"])
    first, second = _section_header_at(data, ".osrel"), _section_header_at(data, ".cmdline")
    data[first:first + 40], data[second:second + 40] = data[second:second + 40], data[first:first + 40]
    assert [s.name for s in pe.sections(bytes(data))][-3:] == [".cmdline", ".osrel", ".linux"]
    swapped = made["folder"] / "swapped.efi"
    swapped.write_bytes(bytes(data))
    signed = pecraft.sign(swapped, made["key"]).read_bytes()
    assert pe.authenticode_sha256(signed) == pecraft.signed_digest(signed)


def test_authenticode_skips_the_checksum_and_the_certificate_table(made):
    signed = bytearray(made["uki_signed"])
    digest = pe.authenticode_sha256(bytes(signed))
    pe_at = struct.unpack_from("<I", signed, 0x3C)[0]
    struct.pack_into("<I", signed, pe_at + 24 + 64, 0x12345678)  # CheckSum
    signed[-1] ^= 0xFF  # inside the certificate table
    assert pe.authenticode_sha256(bytes(signed)) == digest
    signed[pe_at + 8] ^= 0xFF  # TimeDateStamp: a header byte that is hashed
    assert pe.authenticode_sha256(bytes(signed)) != digest


def test_authenticode_covers_every_section_and_the_trailing_data(made):
    data = made["loader_signed"]
    digest = pe.authenticode_sha256(data)
    layout = pe.layout(data)
    hashed_end = layout.cert_table[0]
    for section in pe.sections(data):
        flipped = bytearray(data)
        flipped[section.raw_offset + section.raw_size // 2] ^= 1
        assert pe.authenticode_sha256(bytes(flipped)) != digest, section.name
    last = max(s.raw_offset + s.raw_size for s in pe.sections(data))
    assert hashed_end > last  # systemd-boot carries data after its sections, and sbsign padding
    flipped = bytearray(data)
    flipped[last] ^= 1
    assert pe.authenticode_sha256(bytes(flipped)) != digest


# -- malformed images ------------------------------------------------------------------------------------------


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _malformed(uki: bytes, signed: bytes) -> dict[str, tuple[bytes, str]]:
    pe_at = struct.unpack_from("<I", uki, 0x3C)[0]
    opt = pe_at + 24
    first_section = opt + struct.unpack_from("<H", uki, pe_at + 20)[0]
    return {
        "empty": (b"", "no MZ header"),
        "not a PE": (b"\x7fELF" + bytes(200), "no MZ header"),
        "e_lfanew past the end": (_patched(uki, 0x3C, "<I", len(uki) + 8), "no PE signature"),
        "PE signature broken": (_patched(uki, pe_at, "<I", 0x4551), "no PE signature"),
        "cut in the COFF header": (uki[:pe_at + 10], "COFF header"),
        "cut in the optional header": (uki[:opt + 1], "optional header"),
        "PE32": (_patched(uki, opt, "<H", 0x10B), "PE32 (32-bit)"),
        "unknown magic": (_patched(uki, opt, "<H", 0x107), "not PE32+"),
        "too many sections": (_patched(uki, pe_at + 6, "<H", 97), "more than the format's 96"),
        "optional header too small": (_patched(uki, pe_at + 20, "<H", 64), "SizeOfOptionalHeader 64"),
        "too many directories": (_patched(uki, opt + 108, "<I", 17), "NumberOfRvaAndSizes 17"),
        "directories past the header": (_patched(_patched(uki, opt + 108, "<I", 16), pe_at + 20, "<H", 120),
                                        "do not fit SizeOfOptionalHeader"),
        "headers smaller than the table": (_patched(uki, opt + 60, "<I", first_section), "SizeOfHeaders"),
        "headers past the end": (_patched(uki, opt + 60, "<I", len(uki) + 1), "SizeOfHeaders"),
        "huge image": (_patched(uki, opt + 56, "<I", 0xFFFFFFFF), "SizeOfImage"),
        "section outside the image": (_patched(uki, first_section + 8, "<I", 0x7FFFFFFF), "outside SizeOfImage"),
        "section data past the end": (_patched(uki, first_section + 20, "<I", len(uki)), "outside the file"),
        "truncated section table": (uki[:first_section + 50], "SizeOfHeaders"),
        "certificate table not at the end": (signed + b"\0" * 8, "not at the end"),
    }


def test_malformed_images_are_refused_with_what_is_wrong(made):
    for case, (data, words) in _malformed(made["uki"], made["uki_signed"]).items():
        with pytest.raises(InputError) as caught:
            pe.authenticode_sha256(data)
        assert words in str(caught.value), case


def test_the_certificate_table_must_not_overlap_the_hashed_bytes(made):
    signed = made["uki_signed"]
    layout = pe.layout(signed)
    start = layout.size_of_headers  # the table claims everything after the headers, sections included
    grown = _patched(_patched(signed, layout.cert_entry_offset, "<I", start), layout.cert_entry_offset + 4, "<I",
                     len(signed) - start)
    with pytest.raises(InputError, match="overlap the certificate table"):
        pe.authenticode_sha256(grown)


def _read(data: bytes) -> None:
    try:
        pe.authenticode_sha256(data)
        for section in pe.sections(data):
            pe.loaded_bytes(data, section)
    except InputError:
        return


@FUZZ
@given(st.data())
def test_mutated_and_truncated_images_raise_only_input_errors(made, data):
    blob = bytearray(made["uki_signed"][:8192] if data.draw(st.booleans()) else made["uki"])
    header_end = min(len(blob), 1024)
    for _ in range(data.draw(st.integers(1, 12))):
        where = data.draw(st.integers(0, header_end - 1))
        blob[where] = data.draw(st.integers(0, 255))
    _read(bytes(blob[:data.draw(st.integers(0, len(blob)))]))
