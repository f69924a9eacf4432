"""Files opened as files: never a FIFO (opened without blocking, then refused), a directory or a device, and
written through temporaries created with O_CREAT|O_EXCL|O_NOFOLLOW, so a planted link is never followed."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from clipbuild.core.errors import NotAFile

KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))


def kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def _refuse(path: Path, reason: str) -> NotAFile:
    return NotAFile(f"{path}: {reason}: a regular file is expected")


def open_regular(path: Path, *, follow: bool = True, max_size: int | None = None, writable: bool = False) -> int:
    """A read-only (`writable`: read-write) descriptor on the regular file at `path`, or NotAFile saying what is
    there instead.

    A FIFO is never opened blocking (O_NONBLOCK), so a planted FIFO cannot hang the reader; `follow=False`
    refuses a symbolic link. `max_size` refuses larger files before anything is read."""
    access = os.O_RDWR if writable else os.O_RDONLY
    flags = access | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        problem = _open_problem(path)
        if problem is None:
            raise NotAFile(f"{path}: cannot open: {exc.strerror or exc}") from None
        raise _refuse(path, problem) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _refuse(path, f"it is {kind(info.st_mode)}")
    if max_size is not None and info.st_size > max_size:
        os.close(fd)
        raise NotAFile(f"{path}: {info.st_size} bytes, more than the {max_size} bytes allowed here: refused "
                       "before reading")
    os.set_blocking(fd, True)
    return fd


def _open_problem(path: Path) -> str | None:
    """What stands at `path` when it could not be opened, if it is not a regular file."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode):
        return "it is a symbolic link" + (" that leads nowhere" if not path.exists() else "")
    return None if stat.S_ISREG(mode) else f"it is {kind(mode)}"


def create_exclusive(directory: Path, prefix: str, mode: int = 0o644, *, readable: bool = False) -> tuple[int, Path]:
    """A new file in `directory`, created by us (O_EXCL|O_NOFOLLOW): never a planted file or link. `readable`
    opens it read-write (to map what was written), else write-only."""
    access = os.O_RDWR if readable else os.O_WRONLY
    for _ in range(16):
        path = directory / f".{prefix}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(path, access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        os.fchmod(fd, mode)  # the umask does not narrow a mode we were asked to keep
        return fd, path
    raise NotAFile(f"{directory}: cannot create a temporary file (16 names taken)")


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """`data` at `path`, complete or not at all; a link at `path` is replaced, never followed."""
    fd, tmp = create_exclusive(path.parent, path.name, mode)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sync_directory(directory: Path) -> None:
    """Make the renames done in `directory` durable (its entries reach the disk)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_regular(path: Path, max_size: int = 1 << 20) -> bytes:
    """The bytes of a small regular file (keys, certificates, policies, CRLs): NotAFile for anything else."""
    with os.fdopen(open_regular(path, max_size=max_size), "rb") as stream:
        return stream.read()
