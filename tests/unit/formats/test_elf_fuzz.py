"""Fuzzing the ELF reader: any input ends in an `Elf` or an `ElfError` (malformed, unsupported), never another
exception; mutated and truncated real files, and headers whose tables point anywhere."""

from __future__ import annotations

import shutil
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipbuild.core.errors import ElfError
from clipbuild.core.run import run
from clipbuild.formats import elf

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SOURCE = """#include <stdio.h>
#include <string.h>
static void echo(const char *s) { char b[64]; strcpy(b, s); puts(b); }
int main(int argc, char **argv) { echo(argc > 1 ? argv[1] : "x"); return 0; }
"""


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> bytes:
    if shutil.which("gcc") is None:
        pytest.skip("needs the host's gcc")
    folder = tmp_path_factory.mktemp("elf")
    (folder / "p.c").write_text(SOURCE)
    run(["gcc", "-O2", "-fPIE", "-pie", "-fstack-protector-strong", "-Wl,-z,relro,-z,now", "-Wl,-rpath,$ORIGIN",
         "-o", folder / "p", folder / "p.c"])
    return (folder / "p").read_bytes()


def _parse(data: bytes) -> None:
    try:
        found = elf.parse(data)
    except ElfError:
        return
    assert isinstance(found, elf.Elf)
    assert all(isinstance(name, str) for name in found.needed)


@FUZZ
@given(st.data())
def test_mutated_real_files(seed, data):
    blob = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 16))):
        where = data.draw(st.integers(0, len(blob) - 1))
        blob[where] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    _parse(bytes(blob[:cut]))


@FUZZ
@given(st.data())
def test_mutated_headers_and_tables(seed, data):
    """Mutations aimed at the fields the reader trusts least: header fields, program headers, dynamic entries."""
    blob = bytearray(seed)
    phoff = struct.unpack_from("<Q", blob, 32)[0]
    targets = [st.integers(16, 63), st.integers(phoff, phoff + 13 * 56 - 1)]
    for _ in range(data.draw(st.integers(1, 8))):
        where = data.draw(st.one_of(*targets))
        value = data.draw(st.sampled_from([0, 1, 0xFF, 0x7F, 0x80]) | st.integers(0, 255))
        blob[where] = value
    _parse(bytes(blob))


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([1, 2, 3]), st.integers(0, 2**16 - 1))
def test_random_bytes_after_an_elf64_identification(blob, etype, phnum):
    header = bytearray(b"\x7fELF\x02\x01\x01" + bytes(9) + bytes(48))
    struct.pack_into("<HHI", header, 16, etype, elf.EM_X86_64, 1)
    struct.pack_into("<QQQ", header, 24, 0, 64, 0)
    struct.pack_into("<HHHHHH", header, 52, 64, 56, phnum % 64, 64, 0, 0)
    _parse(bytes(header) + blob)


@FUZZ
@given(st.binary(max_size=512))
def test_any_bytes(blob):
    _parse(b"\x7fELF" + blob)
    _parse(blob)
