"""The GPT disk: where each partition goes, the table written with sgdisk (fixed GUIDs, so reproducible), and
the table read back from an image file for `clipbuild inspect`.

Disk order follows CLIP OS 4 (clipos4.md §4): the profile's partitions in order with slot A's copies in place
(a verity partition right after its data partition), and every slot B copy at the end, as CLIP kept its second
root set in partitions 10 and 11.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
import struct
import uuid
import zlib
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from clipbuild.core import safefile
from clipbuild.core.digest import extents
from clipbuild.core.errors import ImageError, NotAFile
from clipbuild.core.run import run
from clipbuild.spec.layout import ALIGNMENT, GPT_HEAD, GPT_TAIL, align, verity_hash_size
from clipbuild.spec.model import Disk

SECTOR = 512
# Partition type GUIDs (Discoverable Partitions Specification where one exists).
TYPES = {
    "esp": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "root": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",  # x86-64 root
    "root-verity": "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5",
    "home": "933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
    "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
    "linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
}


@dataclass(frozen=True)
class Slice:
    """One partition of the disk: GPT label, what it holds, where it is."""

    number: int
    label: str  # GPT partition name: the profile name, plus _a/_b, plus _verity
    name: str  # the profile's partition name
    slot: str  # "a", "b" or "" when shared
    role: str  # "data" or "verity"
    fs: str
    mount: str | None
    options: tuple[str, ...]
    start: int  # bytes
    size: int  # bytes
    type_guid: str
    guid: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Slice:
        """A slice as the plan and the manifest store it (JSON: options is a list)."""
        return cls(**{**data, "options": tuple(data["options"])})


def stable_guid(*words: str) -> str:
    """A GUID derived from `words` (same image identity, same GUID), shaped as a random (v4) UUID."""
    digest = sha256(":".join(("clipbuild", *words)).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4)).upper()


def _type_guid(fs: str, mount: str | None, role: str) -> str:
    if role == "verity":
        return TYPES["root-verity"]
    if mount == "/":
        return TYPES["root"]
    if mount == "/boot" or fs == "vfat":
        return TYPES["esp"]
    if fs == "swap":
        return TYPES["swap"]
    if mount == "/home":
        return TYPES["home"]
    return TYPES["linux"]


def plan(disk: Disk, identity: str) -> tuple[int, list[Slice]]:
    """The disk size and its partitions, in disk order. `identity` (species) seeds the GUIDs."""
    if disk.size is None:
        raise ImageError("the profile gives no disk.size", hint="set disk.size, e.g. 3GiB")
    fixed = sum(align(p.size) * max(1, len(p.slots)) + (align(verity_hash_size(p.size)) * max(1, len(p.slots))
                                                         if p.verity else 0) for p in disk.partitions)
    spare = disk.size - GPT_HEAD - GPT_TAIL - fixed
    if spare < 0:
        raise ImageError(f"the partitions need {(fixed + GPT_HEAD + GPT_TAIL) / 2**20:.0f} MiB, more than "
                         f"disk.size ({disk.size / 2**20:.0f} MiB)", hint="raise disk.size")
    spare -= spare % ALIGNMENT
    entries: list[tuple[str, str, str, Any, int]] = []  # label, slot, role, partition, size
    later: list[tuple[str, str, str, Any, int]] = []
    for part in disk.partitions:
        size = align(part.size) + (spare if part.grow else 0)
        for slot in part.slots or ("",):
            label = f"{part.name}_{slot}" if slot else part.name
            copies = [(label, slot, "data", part, size)]
            if part.verity:
                copies.append((f"{label}_verity", slot, "verity", part, align(verity_hash_size(part.size))))
            (later if slot == "b" else entries).extend(copies)
    slices = []
    offset = GPT_HEAD
    for number, (label, slot, role, part, size) in enumerate([*entries, *later], 1):
        fs = "verity" if role == "verity" else part.fs
        slices.append(Slice(number, label, part.name, slot, role, fs, part.mount if role == "data" else None,
                            tuple(part.options) if role == "data" else (), offset, size,
                            _type_guid(part.fs, part.mount, role), stable_guid(identity, "partition", label)))
        offset += size
    return disk.size, slices


def write_table(image: Path, size: int, slices: list[Slice], identity: str, bootable: str) -> None:
    """A sparse file of `size` bytes with the GPT; the `bootable` partition gets the legacy BIOS flag."""
    with image.open("wb") as stream:
        stream.truncate(size)
    args = ["sgdisk", "-a", str(ALIGNMENT // SECTOR), "-U", stable_guid(identity, "disk")]
    for s in slices:
        first, last = s.start // SECTOR, (s.start + s.size) // SECTOR - 1
        args += [f"-n{s.number}:{first}:{last}", f"-t{s.number}:{s.type_guid}", f"-c{s.number}:{s.label}",
                 f"-u{s.number}:{s.guid}"]
        if s.label == bootable:
            args.append(f"-A{s.number}:set:2")
    run([*args, image])


def copy_into(image: Path, part: Slice, source: Path) -> None:
    """Write a filesystem file into its partition: only its data extents are copied, holes stay holes."""
    length = source.stat().st_size
    if length > part.size:
        raise ImageError(f"{source.name} ({length} bytes) does not fit partition {part.label} ({part.size} bytes)")
    copy_range(source, 0, length, image, part.start)


def copy_out(image: Path, start: int, length: int, out: Path) -> None:
    """Bytes [start, start+length) of the disk into a new sparse file."""
    with out.open("xb") as stream:  # a new file: never a planted one, never through a link
        stream.truncate(length)
    copy_range(image, start, length, out, 0)


def copy_range(source: Path, start: int, length: int, target: Path, at: int) -> None:
    """Copy source[start:start+length] to target[at:] with copy_file_range, skipping the source's holes
    (the target must already read as zeros there: a fresh sparse file)."""
    with source.open("rb") as src, target.open("r+b") as dst:
        for offset, size, is_data in extents(src.fileno()):
            begin, end = max(offset, start), min(offset + size, start + length)
            if not is_data or begin >= end:
                continue
            done = begin
            while done < end:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), end - done, done, at + done - start)
                if copied == 0:
                    raise ImageError(f"{source} ended before byte {end} while copying into {target}")
                done += copied


def write_mbr_code(image: Path, code: bytes) -> None:
    """The boot code of the protective MBR (syslinux's gptmbr.bin): its first 440 bytes only."""
    if len(code) > 440:
        raise ImageError(f"MBR boot code is {len(code)} bytes; at most 440 fit before the partition table")
    with image.open("r+b") as stream:
        stream.write(code)


@dataclass(frozen=True)
class Entry:
    """A partition as read back from an image's GPT."""

    number: int
    label: str
    type_guid: str
    guid: str
    start: int
    size: int
    attributes: int


# Bounds on what is read from an image's GPT: a crafted header never makes clipbuild read much.
MAX_HEADER = SECTOR
MAX_ENTRIES = 1024
MAX_ENTRY_SIZE = 4096
MAX_TABLE = 1 << 20
PART_ALIGNMENT = 4096  # every clipbuild partition starts and ends on a 4 KiB block (dm-verity, ext4, FAT)


@dataclass(frozen=True)
class Table:
    """The GPT of an image file: its disk GUID, partitions, and the SHA-256 of the primary header and entries
    (what an update journal is bound to)."""

    disk_guid: str
    entries: list[Entry]
    digest: str
    file_size: int


def read_table(image: Path) -> tuple[str, list[Entry]]:
    """The disk GUID and partitions of an image file (see `read_gpt`)."""
    table = read_gpt(image)
    return table.disk_guid, table.entries


def read_gpt(image: Path) -> Table:
    """The GPT of an image file, every field checked before it is used: the header's size and CRC, the entry
    size and count (bounded: never more than MAX_TABLE bytes are read), the entries' CRC, UTF-16 labels, and
    the partitions against each other and the file (inside the usable area and the file, aligned, no
    overlap). Anything else is an ImageError naming the image and the rule."""
    with contextlib.suppress(OSError):  # a FIFO, folder or device is refused before it is ever opened
        if not stat.S_ISREG(mode := os.stat(image).st_mode):
            raise NotAFile(f"{image}: it is {safefile.kind(mode)}: a regular file is expected")
    with os.fdopen(safefile.open_regular(image), "rb") as stream:
        file_size = os.fstat(stream.fileno()).st_size
        header = _read_at(stream, SECTOR, MAX_HEADER)
        if header[:8] != b"EFI PART":
            raise ImageError(f"{image}: no GPT (no 'EFI PART' signature at sector 1)")
        fields = _check_header(image, header, file_size)
        entries_lba, count, entry_size, entries_crc = fields
        raw = _read_at(stream, entries_lba * SECTOR, count * entry_size)
    if len(raw) != count * entry_size:
        raise ImageError(f"{image}: the GPT partition entries run past the end of the file (truncated image?)")
    if zlib.crc32(raw) != entries_crc:
        raise ImageError(f"{image}: the GPT partition entries' checksum is wrong")
    size = struct.unpack_from("<I", header, 12)[0]
    entries = [e for i in range(count) if (e := _entry(image, i, raw[i * entry_size:i * entry_size + 128]))]
    first_usable, last_usable = struct.unpack_from("<QQ", header, 40)
    check_layout(image, entries, (first_usable * SECTOR, (last_usable + 1) * SECTOR), file_size)
    return Table(str(uuid.UUID(bytes_le=header[56:72])).upper(), entries,
                 sha256(header[:size] + raw).hexdigest(), file_size)


def _read_at(stream: Any, offset: int, length: int) -> bytes:
    stream.seek(offset)
    return stream.read(length)


def _check_header(image: Path, header: bytes, file_size: int) -> tuple[int, int, int, int]:
    """The header's own checks; returns where the entries are, how many, their size and CRC."""
    if len(header) < 92:
        raise ImageError(f"{image}: the GPT header is cut short (truncated image?)")
    size, crc = struct.unpack_from("<II", header, 12)
    if not 92 <= size <= len(header):
        raise ImageError(f"{image}: GPT header size {size} is outside 92..{MAX_HEADER} bytes")
    full = bytearray(header[:size])
    full[16:20] = bytes(4)
    if zlib.crc32(full) != crc:
        raise ImageError(f"{image}: the GPT header checksum is wrong")
    backup_lba, first_usable, last_usable = struct.unpack_from("<QQQ", header, 32)
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", header, 72)
    if entry_size < 128 or entry_size % 8 or entry_size > MAX_ENTRY_SIZE:
        raise ImageError(f"{image}: GPT entry size {entry_size} is not a multiple of 8 in 128..{MAX_ENTRY_SIZE}")
    if count > MAX_ENTRIES or count * entry_size > MAX_TABLE:
        raise ImageError(f"{image}: {count} GPT entries of {entry_size} bytes: more than clipbuild reads "
                         f"({MAX_ENTRIES} entries, {MAX_TABLE} bytes)")
    if not 2 <= entries_lba < first_usable <= last_usable < backup_lba:
        raise ImageError(f"{image}: the GPT header's areas are out of order (entries at LBA {entries_lba}, "
                         f"usable LBAs {first_usable}..{last_usable}, backup header at LBA {backup_lba})")
    if (backup_lba + 1) * SECTOR > file_size:
        raise ImageError(f"{image}: {file_size} bytes, but its GPT describes a disk of {(backup_lba + 1) * SECTOR} "
                         "bytes (truncated image?)")
    return entries_lba, count, entry_size, entries_crc


def _entry(image: Path, index: int, raw: bytes) -> Entry | None:
    if raw[:16] == bytes(16):
        return None
    first, last, attributes = struct.unpack_from("<QQQ", raw, 32)
    try:
        label = raw[56:128].decode("utf-16-le").split("\0", 1)[0]
    except UnicodeDecodeError:
        raise ImageError(f"{image}: GPT partition {index + 1}: its name is not valid UTF-16") from None
    if last < first:
        raise ImageError(f"{image}: GPT partition {index + 1} ({label}) ends (LBA {last}) before it starts "
                         f"(LBA {first})")
    return Entry(index + 1, label, str(uuid.UUID(bytes_le=raw[:16])).upper(),
                 str(uuid.UUID(bytes_le=raw[16:32])).upper(), first * SECTOR, (last - first + 1) * SECTOR,
                 attributes)


def check_layout(image: Path, entries: list[Entry], usable: tuple[int, int], file_size: int) -> None:
    """Partitions inside the usable area and the file, aligned, not overlapping, labels unique: the offsets
    an update writes to are only ever these."""
    labels = [e.label for e in entries]
    if twice := sorted({label for label in labels if labels.count(label) > 1}):
        raise ImageError(f"{image}: GPT: two partitions are labelled {twice[0]!r}")
    for e in entries:
        where = f"{image}: GPT partition {e.number} ({e.label})"
        if e.start < usable[0] or e.start + e.size > usable[1]:
            raise ImageError(f"{where}: bytes {e.start}..{e.start + e.size} are outside the disk's usable area "
                             f"{usable[0]}..{usable[1]}")
        if e.start + e.size > file_size:
            raise ImageError(f"{where}: ends at byte {e.start + e.size}, past the end of the file ({file_size} "
                             "bytes; truncated image?)")
        if e.start % PART_ALIGNMENT or e.size % PART_ALIGNMENT:
            raise ImageError(f"{where}: not aligned on {PART_ALIGNMENT} bytes (start {e.start}, size {e.size})")
    ordered = sorted(entries, key=lambda e: e.start)
    for a, b in itertools.pairwise(ordered):
        if a.start + a.size > b.start:
            raise ImageError(f"{image}: GPT partitions {a.number} ({a.label}) and {b.number} ({b.label}) overlap")
