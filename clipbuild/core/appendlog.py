"""Appending to a file all or nothing, against kills and power cuts: an intent record beside the file.

Before anything is appended to FILE, `.FILE.clipbuild-signing` is written beside it (whole or not at all: written
into a temporary, fsynced, then hard-linked under its name, which fails if one is there) with FILE's original
length, device and inode and the SHA-256 of its original bytes, and the directory is fsynced. The append is
fsynced before the record is removed. A process killed (or a machine stopped) in between leaves the record:
`recover` then cuts FILE back to the recorded length, once it has checked that the record is clipbuild's, names
this very file, and that the file's first `length` bytes still hash to the recorded SHA-256. A record that does
not match is refused (AppendRecordRefused) and nothing is changed.

Whoever appends, or recovers, holds an exclusive flock on FILE from before the record exists until it is gone:
a record whose file is locked belongs to a live process, and is never recovered under it.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from clipbuild.core import safefile
from clipbuild.core.errors import AppendRecordRefused, NotAFile

SUFFIX = ".clipbuild-signing"
MAX_RECORD = 512  # bytes: a record is about 150
_FORMAT = "clipbuild interrupted append, format 1\nlength {length}\ndevice {device}\ninode {inode}\nsha256 {sha256}\n"
_PATTERN = re.compile(r"clipbuild interrupted append, format 1\nlength (0|[1-9][0-9]{0,18})\ndevice ([0-9]{1,20})\n"
                      r"inode ([0-9]{1,20})\nsha256 ([0-9a-f]{64})\n")


@dataclass(frozen=True)
class Record:
    length: int
    device: int
    inode: int
    sha256: str

    def text(self) -> bytes:
        return _FORMAT.format(**self.__dict__).encode()


def record_path(path: Path) -> Path:
    return path.parent / f".{path.name}{SUFFIX}"


def lock(fd: int) -> None:
    """The exclusive flock every appender and recoverer holds (waits for a live one to finish)."""
    fcntl.flock(fd, fcntl.LOCK_EX)


def write_record(path: Path, record: Record) -> None:
    """The record beside `path`, whole, fsynced (the caller fsyncs the directory before appending)."""
    fd, tmp = safefile.create_exclusive(path.parent, f"{path.name}{SUFFIX}", 0o600)
    try:
        os.write(fd, record.text())
        os.fsync(fd)
        os.link(tmp, record_path(path), follow_symlinks=False)
    except FileExistsError:
        raise AppendRecordRefused(f"{path}: {record_path(path).name} is already there: another clipbuild was "
                                  "interrupted signing it; run `clipbuild verify` on it first") from None
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


def remove_record(path: Path) -> None:
    """The record's name removed (the caller fsyncs the directory)."""
    record_path(path).unlink(missing_ok=True)


def read_record(path: Path) -> Record | None:
    """The record beside `path`, None when there is none; AppendRecordRefused when what has its name is not one
    of clipbuild's records (a link, not a regular file, too large, another shape)."""
    where = record_path(path)
    try:
        fd = safefile.open_regular(where, follow=False, max_size=MAX_RECORD)
    except NotAFile as exc:
        if not os.path.lexists(where):
            return None
        raise _refused(path, str(exc)) from None
    with os.fdopen(fd, "rb") as stream:
        text = stream.read(MAX_RECORD + 1)
    match = _PATTERN.fullmatch(text.decode("ascii", "replace"))
    if match is None:
        raise _refused(path, f"{where.name} is not a record clipbuild wrote")
    length, device, inode = (int(match[i]) for i in (1, 2, 3))
    return Record(length, device, inode, match[4])


def _refused(path: Path, why: str) -> AppendRecordRefused:
    return AppendRecordRefused(f"{path}: a record of an interrupted signature is refused: {why}; nothing was "
                               "changed", hint=f"check {path} by hand, then remove {record_path(path)}")


def recover_locked(path: Path, fd: int) -> int | None:
    """With the flock on `fd` (open read-write on `path`) held: the package cut back to its recorded length and
    the record removed, when there is a record; the length, or None. AppendRecordRefused if it does not match."""
    record = read_record(path)
    if record is None:
        return None
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != (record.device, record.inode) or not stat.S_ISREG(info.st_mode):
        raise _refused(path, f"{record_path(path).name} names another file (device {record.device}, inode "
                             f"{record.inode})")
    if info.st_size < record.length:
        raise _refused(path, f"the package has {info.st_size} bytes, fewer than the {record.length} recorded")
    if _sha256(fd, record.length) != record.sha256:
        raise _refused(path, f"its first {record.length} bytes are not those recorded (sha256 differs)")
    os.ftruncate(fd, record.length)
    os.fsync(fd)
    remove_record(path)
    safefile.sync_directory(path.parent)
    print(f"recovered an interrupted signature: {path} back to {record.length} bytes", file=sys.stderr)
    return record.length


def _sha256(fd: int, length: int) -> str:
    if length == 0:
        return hashlib.sha256().hexdigest()
    with mmap.mmap(fd, length, access=mmap.ACCESS_READ) as data:
        return hashlib.sha256(data).hexdigest()


def recover(path: Path) -> int | None:
    """`recover_locked` for a package not yet opened: nothing is opened when there is no record beside it."""
    if not os.path.lexists(record_path(path)):
        return None
    fd = safefile.open_regular(path, follow=False, writable=True)
    try:
        lock(fd)
        return recover_locked(path, fd)
    finally:
        os.close(fd)
