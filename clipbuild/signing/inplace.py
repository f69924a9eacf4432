"""Signing in place: the signature member is appended to the package itself, all or nothing.

The package is opened read-write (no link followed, regular files only) and locked (an exclusive flock held
until the end); it is read once, from a mapping, for its digests, the layout check, the developer-signature
check (countersign) and the new signature. Then, through core.appendlog: an intent record beside it (original
length, device, inode, SHA-256), fsynced with its directory; the member written at the original end; the package
fsynced; the record removed and the directory fsynced. Any failure before that, KeyboardInterrupt included, cuts
the package back to its original length. A kill in between leaves the record: the next `sign`, `countersign` or
`verify` cuts the package back (core.appendlog.recover).

A package with several names (hard links, st_nlink > 1) is not appended to: every name would change. Nor is one
this process may not write. Those take the copy path (signer.stage), and `open_locked` returns None.
"""

from __future__ import annotations

import mmap
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipbuild.core import appendlog, hashcopy, safefile
from clipbuild.core.errors import NotAFile, SigningError
from clipbuild.formats import ar, clipsig
from clipbuild.signing import trust

# The last bytes of a package are hashed when a digest is asked for, not in the first pass: a signature covers
# the bytes before its member's header, and that header lies within them (a signature member is at most 64 KiB).
TAIL = ar.HEADER + clipsig.MAX_SIGNATURE_MEMBER + 1
# Tests only: "BYTES" stops (until killed) once a private copy has BYTES bytes written (the copy path); "append"
# stops once the intent record is on disk and half of the first signature member is written in place; "commit"
# stops once every signature is written and fsynced, before the records are removed (in place), or before the
# signed copies are renamed (the copy path). The tests SIGKILL the stopped process.
PAUSE_ENV = "CLIPBUILD_SIGN_PAUSE"


def pause(where: str) -> None:
    print(f"{PAUSE_ENV}: stopped: {where}", file=sys.stderr, flush=True)
    time.sleep(300)
    os._exit(9)  # never killed: give up, as a crash would


@dataclass(eq=False)
class Appending:
    """A package being signed in place, open read-write and locked until `finish` or `undo` closes it."""

    path: Path
    fd: int
    size: int  # its original length
    ident: tuple[int, int]
    member: bytes = b""
    before: Any = None  # SHA-256 over the original bytes
    recorded: bool = False

    def record(self) -> appendlog.Record:
        return appendlog.Record(self.size, *self.ident, self.before.hexdigest())

    def sha256_after(self) -> str:
        after = self.before.copy()
        after.update(self.member)
        return after.hexdigest()


def open_locked(path: Path) -> Appending | None:
    """The package, open read-write and locked, any interrupted signature recovered first; None when it must be
    signed on a copy instead (hard links, or not writable by us)."""
    try:
        fd = safefile.open_regular(path, follow=False, max_size=trust.MAX_PACKAGE_BYTES, writable=True)
    except NotAFile:
        if not _plain_file(path):
            raise
        appendlog.recover(path)  # raises what is wrong with a record, if there is one
        return None
    try:
        appendlog.lock(fd)
        appendlog.recover_locked(path, fd)
        info = os.fstat(fd)
        if info.st_size == 0:
            raise SigningError(f"{path}: empty file: not a package")
        if info.st_nlink > 1:
            os.close(fd)
            return None
        return Appending(path, fd, info.st_size, (info.st_dev, info.st_ino))
    except BaseException:
        os.close(fd)
        raise


def _plain_file(path: Path) -> bool:
    """A regular file we could not open for writing (the copy path says what else is wrong)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and not os.access(path, os.W_OK)


Work = Callable[[memoryview, trust.PrefixDigests], bytes]


def read(item: Appending, algorithms: Iterable[str], work: Work) -> None:
    """Read the package once: hash it (SHA-256 and `algorithms`), then `work` checks it and returns the member
    to append, from those digests. Any SigningError names the package."""
    with mmap.mmap(item.fd, item.size, access=mmap.ACCESS_READ) as data, memoryview(data) as view:
        upto = max(0, item.size - TAIL)
        running = hashcopy.hash_view(view, {"sha256", *algorithms}, upto)
        digests = trust.PrefixDigests(view, {name: (h, upto) for name, h in running.items()})
        try:
            item.member = work(view, digests)
        except SigningError as exc:
            problem = str(exc)
        else:
            problem = ""
            item.before = digests.hasher("sha256", item.size)
        digests.view = memoryview(b"")  # no view of the mapping may outlive it
    if problem:
        raise SigningError(f"{item.path}: {problem}")


def append(items: list[Appending]) -> None:
    """Every record written and fsynced (one directory fsync per directory), then every member appended and
    fsynced. The caller calls `finish`, or `undo` on any exception."""
    try:
        for item in items:
            appendlog.write_record(item.path, item.record())
            item.recorded = True
        _sync_directories(items)
    except OSError as exc:
        raise SigningError(f"{item.path}: cannot write the record of its signature: {exc.strerror or exc}") \
            from None
    for index, item in enumerate(items):
        try:
            if os.environ.get(PAUSE_ENV) == "append" and index == 0:
                hashcopy.write_all(item.fd, item.member[:len(item.member) // 2], item.size)
                pause(f"{item.path}: its record written, half of its signature appended")
            hashcopy.write_all(item.fd, item.member, item.size)
            os.fsync(item.fd)
        except OSError as exc:
            raise SigningError(f"{item.path}: cannot write its signature: {exc.strerror or exc}") from None
    if items and os.environ.get(PAUSE_ENV) == "commit":
        pause(f"{items[0].path}: signed and fsynced, its record not removed")


def finish(items: list[Appending]) -> None:
    """The records removed (one directory fsync per directory), every package unlocked and closed."""
    for item in items:
        appendlog.remove_record(item.path)
    _sync_directories(items)
    close(items)


def undo(items: list[Appending]) -> None:
    """Every package given back its original length and fsynced, the records removed, the packages closed: what
    a failure anywhere does. A package that cannot be cut back keeps its record (the next `sign`, `countersign`
    or `verify` cuts it back): SigningError says so, once every package was tried."""
    stuck: list[str] = []
    for item in items:
        if not item.recorded:
            continue
        try:
            os.ftruncate(item.fd, item.size)
            os.fsync(item.fd)
            appendlog.remove_record(item.path)
        except OSError as exc:
            stuck.append(f"{item.path} ({exc.strerror or exc})")
    try:
        _sync_directories([i for i in items if i.recorded])
    except OSError as exc:
        stuck.append(f"its directory ({exc.strerror or exc})")
    finally:
        close(items)
    if stuck:
        raise SigningError(f"after that failure, cutting back did not complete: {'; '.join(stuck)}; a record "
                           f"(.NAME{appendlog.SUFFIX}) left beside a package is undone by the next `clipbuild "
                           "verify`, `sign` or `countersign` of it")


def close(items: list[Appending]) -> None:
    for item in items:
        if item.fd >= 0:
            os.close(item.fd)
            item.fd = -1


def _sync_directories(items: list[Appending]) -> None:
    for directory in sorted({item.path.parent for item in items}):
        safefile.sync_directory(directory)
