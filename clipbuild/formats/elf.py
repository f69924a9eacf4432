"""A small, strict reader of ELF files: what the image's hardening checks need, nothing more.

It reads ELF64 little-endian x86-64 files (what clipbuild builds): the file header, the program headers
(PT_LOAD, PT_DYNAMIC, PT_GNU_RELRO, PT_INTERP), the dynamic section (DT_NEEDED, DT_SONAME, DT_RUNPATH, DT_RPATH,
DT_FLAGS, DT_FLAGS_1) with its string table, and the dynamic and static symbol tables, enough to find the
stack protector's symbols (`__stack_chk_fail`, `__stack_chk_fail_local`, `__stack_chk_guard`). It also counts
the instructions that read the stack canary (`%fs:0x28` on x86-64) in executable segments, which is the
evidence left in a stripped static binary.

The input is hostile: every offset and size is checked against the file before it is used, counts are bounded,
and a truncated or malformed file raises `ElfError` naming the part and the offset, never another exception.
A well-formed ELF of another class, byte order or machine is not an error: `parse` raises `ElfUnsupported`
with the reason, and callers skip the file with that note.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from clipbuild.core.errors import ElfError

MAGIC = b"\x7fELF"
ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4
EM_X86_64 = 62
PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_GNU_RELRO = 1, 2, 3, 0x6474E552
PF_X = 1
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH = 0, 1, 5, 10, 14, 15
DT_FLAGS, DT_RUNPATH, DT_FLAGS_1 = 30, 29, 0x6FFFFFFB
DF_BIND_NOW = 0x8
DF_1_NOW, DF_1_PIE = 0x1, 0x08000000
SHT_SYMTAB, SHT_DYNSYM = 2, 11
STACK_SYMBOLS = frozenset({"__stack_chk_fail", "__stack_chk_fail_local", "__stack_chk_guard"})

HEADER = struct.Struct("<16sHHIQQQIHHHHHH")  # 64 bytes
PHDR = struct.Struct("<IIQQQQQQ")  # 56 bytes
SHDR = struct.Struct("<IIQQQQIIQQ")  # 64 bytes
DYN = struct.Struct("<qQ")  # 16 bytes
SYM = struct.Struct("<IBBHQQ")  # 24 bytes
MAX_HEADERS = 4096  # program or section headers: real files have tens
MAX_DYNAMIC = 1 << 16  # dynamic entries
MAX_SYMBOLS = 1 << 22
MAX_STRING = 4096  # a library name, an interpreter, a run path
# mov/sub/xor %fs:0x28, reg (any of the 16 general registers): how GCC and Clang read the x86-64 stack canary.
CANARY = re.compile(rb"\x64[\x48\x4c][\x8b\x2b\x33][\x04\x0c\x14\x1c\x24\x2c\x34\x3c]\x25\x28\x00\x00\x00")
# sub $N, %rsp with N >= 64 (imm8 0x40..0x7f, or imm32): a stack frame large enough to hold an array.
BIG_FRAME = re.compile(rb"\x48\x83\xec[\x40-\x7f]|\x48\x81\xec(....)", re.DOTALL)
FRAME_BYTES = 64


class ElfUnsupported(ElfError):
    """A well-formed ELF file this reader does not check (ELF32, big-endian, another machine)."""


@dataclass(frozen=True)
class Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Elf:
    """What the checks read from one ELF file."""

    type: int
    machine: int
    segments: tuple[Segment, ...]
    interp: str | None = None
    has_dynamic: bool = False
    needed: tuple[str, ...] = ()
    soname: str | None = None
    runpath: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    flags: int = 0
    flags_1: int = 0
    stack_symbols: frozenset[str] = field(default_factory=frozenset)
    symbol_tables: tuple[str, ...] = ()  # "dynsym", "symtab": the tables the file has
    code_size: int = 0  # bytes of executable PT_LOAD segments in the file
    canary_reads: int = 0  # instructions reading %fs:0x28 in them
    big_frames: int = 0  # instructions reserving FRAME_BYTES or more of stack in them

    @property
    def relro(self) -> bool:
        return any(s.type == PT_GNU_RELRO for s in self.segments)

    @property
    def bind_now(self) -> bool:
        return bool(self.flags & DF_BIND_NOW or self.flags_1 & DF_1_NOW)

    @property
    def pie_flag(self) -> bool:
        return bool(self.flags_1 & DF_1_PIE)


def is_elf(head: bytes) -> bool:
    return head[:4] == MAGIC


def _unpack(layout: struct.Struct, data: bytes | memoryview, offset: int, what: str) -> tuple:
    if offset < 0 or offset + layout.size > len(data):
        raise ElfError(f"{what} at byte {offset} runs past the end of the file ({len(data)} bytes)")
    return layout.unpack_from(data, offset)


def _span(data: bytes | memoryview, offset: int, size: int, what: str) -> None:
    if offset < 0 or size < 0 or offset + size > len(data):
        raise ElfError(f"{what}: bytes {offset}..{offset + size} lie outside the file ({len(data)} bytes)")


def _header(data: bytes | memoryview) -> tuple:
    if len(data) < 16 or bytes(data[:4]) != MAGIC:
        raise ElfError(f"not an ELF file: {len(data)} bytes, no \\x7fELF magic")
    ident = bytes(data[:16])
    if ident[4] != 2:
        raise ElfUnsupported(f"ELF class {ident[4]} (only ELF64 is checked)")
    if ident[5] != 1:
        raise ElfUnsupported(f"byte order {ident[5]} (only little-endian is checked)")
    if ident[6] != 1:
        raise ElfError(f"ELF version {ident[6]} in the identification bytes, 1 expected")
    fields = _unpack(HEADER, data, 0, "the ELF header (64 bytes)")
    if fields[2] != EM_X86_64:
        raise ElfUnsupported(f"machine {fields[2]} (only x86-64 is checked)")
    return fields


def _segments(data: bytes | memoryview, phoff: int, phentsize: int, phnum: int) -> tuple[Segment, ...]:
    if phnum == 0:
        return ()
    if phentsize != PHDR.size:
        raise ElfError(f"program header size {phentsize}, {PHDR.size} expected")
    if phnum >= 0xFFFF or phnum > MAX_HEADERS:
        raise ElfError(f"{phnum} program headers: more than this reader accepts ({MAX_HEADERS})")
    _span(data, phoff, phnum * PHDR.size, "the program header table")
    out = []
    for i in range(phnum):
        ptype, flags, offset, vaddr, _paddr, filesz, memsz, _align = PHDR.unpack_from(data, phoff + i * PHDR.size)
        if ptype in (PT_LOAD, PT_DYNAMIC, PT_INTERP):
            _span(data, offset, filesz, f"segment {i} (type {ptype:#x})")
        out.append(Segment(ptype, flags, offset, vaddr, filesz, memsz))
    return tuple(out)


def _file_offset(segments: tuple[Segment, ...], vaddr: int, size: int, what: str) -> int:
    """The file offset of `size` bytes at address `vaddr`, which one PT_LOAD segment must hold in the file."""
    for seg in segments:
        if seg.type == PT_LOAD and seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.filesz:
            return seg.offset + (vaddr - seg.vaddr)
    raise ElfError(f"{what}: address {vaddr:#x} (+{size}) lies in no loaded part of the file")


def _string(data: bytes | memoryview, table: tuple[int, int], offset: int, what: str) -> str:
    start, size = table
    if not 0 <= offset < size:
        raise ElfError(f"{what}: string offset {offset} outside its string table ({size} bytes)")
    chunk = bytes(data[start + offset:start + min(size, offset + MAX_STRING + 1)])
    end = chunk.find(b"\0")
    if end < 0:
        raise ElfError(f"{what}: string at table offset {offset} has no end within {MAX_STRING} bytes")
    try:
        return chunk[:end].decode()
    except UnicodeDecodeError:
        raise ElfError(f"{what}: string at table offset {offset} is not UTF-8") from None


def _interp(data: bytes | memoryview, segments: tuple[Segment, ...]) -> str | None:
    found = [s for s in segments if s.type == PT_INTERP]
    if not found:
        return None
    if len(found) > 1:
        raise ElfError(f"{len(found)} PT_INTERP segments, at most one expected")
    seg = found[0]
    raw = bytes(data[seg.offset:seg.offset + min(seg.filesz, MAX_STRING)])
    if not raw.endswith(b"\0") or b"\0" in raw[:-1] or len(raw) < 2:
        raise ElfError(f"PT_INTERP at byte {seg.offset}: not one NUL-terminated path")
    try:
        return raw[:-1].decode()
    except UnicodeDecodeError:
        raise ElfError(f"PT_INTERP at byte {seg.offset}: not UTF-8") from None


def _dynamic_entries(data: bytes | memoryview, seg: Segment) -> Iterator[tuple[int, int]]:
    count = min(seg.filesz // DYN.size, MAX_DYNAMIC)
    for i in range(count):
        tag, value = DYN.unpack_from(data, seg.offset + i * DYN.size)
        if tag == DT_NULL:
            return
        yield tag, value
    raise ElfError(f"dynamic section at byte {seg.offset}: no DT_NULL within its {seg.filesz} bytes")


def _dynamic(data: bytes | memoryview, segments: tuple[Segment, ...]) -> dict[str, Any]:
    found = [s for s in segments if s.type == PT_DYNAMIC]
    if not found:
        return {}
    if len(found) > 1:
        raise ElfError(f"{len(found)} PT_DYNAMIC segments, at most one expected")
    entries = list(_dynamic_entries(data, found[0]))
    values: dict[int, list[int]] = {}
    for tag, value in entries:
        values.setdefault(tag, []).append(value)
    names = [v for t, v in entries if t in (DT_NEEDED, DT_SONAME, DT_RUNPATH, DT_RPATH)]
    out: dict[str, Any] = {"has_dynamic": True, "flags": _one(values, DT_FLAGS, "DT_FLAGS"),
                              "flags_1": _one(values, DT_FLAGS_1, "DT_FLAGS_1")}
    if not names:
        return out
    strtab, strsz = _one(values, DT_STRTAB, "DT_STRTAB"), _one(values, DT_STRSZ, "DT_STRSZ")
    if strsz == 0:
        raise ElfError("the dynamic section names libraries or paths but has no DT_STRTAB/DT_STRSZ")
    table = (_file_offset(segments, strtab, strsz, "the dynamic string table"), strsz)

    def strings(tag: int, what: str) -> tuple[str, ...]:
        return tuple(_string(data, table, v, what) for v in values.get(tag, []))

    out["needed"] = strings(DT_NEEDED, "DT_NEEDED")
    sonames = strings(DT_SONAME, "DT_SONAME")
    out["soname"] = sonames[0] if sonames else None
    out["runpath"] = tuple(p for s in strings(DT_RUNPATH, "DT_RUNPATH") for p in s.split(":"))
    out["rpath"] = tuple(p for s in strings(DT_RPATH, "DT_RPATH") for p in s.split(":"))
    return out


def _one(values: dict[int, list[int]], tag: int, name: str) -> int:
    found = values.get(tag, [])
    if len(found) > 1 and len(set(found)) > 1:
        raise ElfError(f"{len(found)} different {name} entries in the dynamic section")
    return found[0] if found else 0


def _symbols(data: bytes | memoryview, shoff: int, shentsize: int,
             shnum: int) -> tuple[frozenset[str], tuple[str, ...]]:
    """The stack protector's symbols named in .dynsym or .symtab, and which of the two tables exist."""
    if shnum == 0 or shoff == 0:
        return frozenset(), ()
    if shentsize != SHDR.size:
        raise ElfError(f"section header size {shentsize}, {SHDR.size} expected")
    if shnum > MAX_HEADERS:
        raise ElfError(f"{shnum} section headers: more than this reader accepts ({MAX_HEADERS})")
    _span(data, shoff, shnum * SHDR.size, "the section header table")
    sections = [SHDR.unpack_from(data, shoff + i * SHDR.size) for i in range(shnum)]
    found: set[str] = set()
    tables = []
    for i, (_name, stype, _flags, _addr, offset, size, link, _info, _align, entsize) in enumerate(sections):
        if stype not in (SHT_SYMTAB, SHT_DYNSYM):
            continue
        what = f"section {i} ({'symtab' if stype == SHT_SYMTAB else 'dynsym'})"
        tables.append("symtab" if stype == SHT_SYMTAB else "dynsym")
        if entsize != SYM.size or size % SYM.size or size // SYM.size > MAX_SYMBOLS:
            raise ElfError(f"{what}: {size} bytes of {entsize}-byte entries is not a symbol table")
        _span(data, offset, size, what)
        if not 0 < link < shnum:
            raise ElfError(f"{what}: string table section {link} does not exist")
        str_offset, str_size = sections[link][4], sections[link][5]
        _span(data, str_offset, str_size, f"section {link} (strings of {what})")
        found |= _stack_names(data, offset, size // SYM.size, (str_offset, str_size), what)
    return frozenset(found), tuple(sorted(set(tables)))


def _stack_names(data: bytes | memoryview, offset: int, count: int, strings: tuple[int, int],
                 what: str) -> set[str]:
    found = set()
    blob = bytes(data[strings[0]:strings[0] + strings[1]])
    if not any(name.encode() in blob for name in STACK_SYMBOLS):
        return found  # no table entry can name them
    for i in range(count):
        name_offset = SYM.unpack_from(data, offset + i * SYM.size)[0]
        if name_offset and (name := _string(data, strings, name_offset, f"{what} symbol {i}")) in STACK_SYMBOLS:
            found.add(name)
    return found


def _code(data: bytes | memoryview, segments: tuple[Segment, ...]) -> tuple[int, int, int]:
    """Bytes of executable segments, canary reads and large stack frames found in them (byte patterns: a
    heuristic, see the image checks)."""
    size = reads = frames = 0
    for seg in segments:
        if seg.type == PT_LOAD and seg.flags & PF_X:
            code = bytes(data[seg.offset:seg.offset + seg.filesz])
            size += seg.filesz
            reads += sum(1 for _ in CANARY.finditer(code))
            frames += sum(1 for m in BIG_FRAME.finditer(code)
                          if m.group(1) is None or int.from_bytes(m.group(1), "little", signed=True) >= FRAME_BYTES)
    return size, reads, frames


def parse(data: bytes | memoryview) -> Elf:
    """One ELF file read (see the module's docstring); `ElfError` if malformed, `ElfUnsupported` if not
    ELF64 little-endian x86-64."""
    fields = _header(data)
    etype, machine, phoff, shoff = fields[1], fields[2], fields[5], fields[6]
    phentsize, phnum, shentsize, shnum = fields[9], fields[10], fields[11], fields[12]
    segments = _segments(data, phoff, phentsize, phnum)
    dynamic = _dynamic(data, segments)
    stack, tables = _symbols(data, shoff, shentsize, shnum)
    size, reads, frames = _code(data, segments)
    return Elf(etype, machine, segments, interp=_interp(data, segments), stack_symbols=stack,
               symbol_tables=tables, code_size=size, canary_reads=reads, big_frames=frames, **dynamic)
