"""GPTs crafted byte by byte (struct), for the hostile-input corpus and the fuzz pass: every field can be set
to a hostile value while the CRCs stay right, so the reader's own checks are what refuses them."""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

SECTOR = 512
MIB = 1 << 20


def entry(first: int, last: int, label: bytes | str = "root_a", type_guid: bytes = uuid.uuid4().bytes_le,
          size: int = 128) -> bytes:
    """One partition entry (LBAs); a str label is encoded as UTF-16-LE, bytes are used as they are."""
    name = label.encode("utf-16-le") if isinstance(label, str) else label
    raw = type_guid + uuid.uuid4().bytes_le + struct.pack("<QQQ", first, last, 0) + name[:72].ljust(72, b"\0")
    return raw.ljust(size, b"\0")


@dataclass
class Gpt:
    """A disk of `disk_size` bytes; the fields of the primary header, each overridable."""

    disk_size: int = 8 * MIB
    entries: list[bytes] = field(default_factory=lambda: [entry(2048, 4095, "boot"), entry(4096, 8191, "root_a")])
    header_size: int = 92
    entry_size: int = 128
    count: int = 128
    entries_lba: int = 2
    first_usable: int = 34
    last_usable: int | None = None
    backup_lba: int | None = None
    file_size: int | None = None  # the file's length: the disk's unless truncated on purpose

    def write(self, path: Path) -> Path:
        sectors = self.disk_size // SECTOR
        last_usable = sectors - 34 if self.last_usable is None else self.last_usable
        backup = sectors - 1 if self.backup_lba is None else self.backup_lba
        table = b"".join(self.entries)[:self.count * self.entry_size]
        table = table.ljust(min(self.count * self.entry_size, 1 << 20), b"\0")
        header = bytearray(struct.pack("<8sIII4xQQQQ16sQIII", b"EFI PART", 0x10000, self.header_size, 0, 1,
                                       backup, self.first_usable, last_usable, uuid.uuid4().bytes_le,
                                       self.entries_lba, self.count, self.entry_size, zlib.crc32(table)))
        header = header.ljust(max(self.header_size, 92), b"\0")[:SECTOR]
        struct.pack_into("<I", header, 16, zlib.crc32(bytes(header[:self.header_size])))
        with path.open("wb") as stream:
            stream.truncate(self.disk_size if self.file_size is None else self.file_size)
            stream.seek(SECTOR)
            stream.write(bytes(header))
            stream.seek(self.entries_lba * SECTOR)
            stream.write(table)
            if self.file_size is not None:
                stream.truncate(self.file_size)
        return path
