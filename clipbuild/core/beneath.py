"""File operations confined to a tree: every path is resolved beneath the tree's root, never outside it.

An installed tree holds what signed packages put there, symbolic links included; host-side work on it (writing
/etc/fstab, reading os-release, moving /var to the mounts partition) must not follow a package's link out of
the tree. Each path here is relative to a root and resolved by the kernel with openat2(2) and
RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS: a link that stays inside the tree is followed, one that leads out (an
absolute target, `..` above the root) is refused with `TreeEscape`, which names the tree, the path and the rule;
anything else amiss (a missing file, a FIFO or a directory where a file is expected, a file where a folder is)
is a `TreeError` naming the tree and the path.
Where openat2 is missing (kernel < 5.6, ENOSYS) the walk is done component by component with O_NOFOLLOW and
dir_fd, and then every symbolic link is refused, inside or not.

Creation, removal and renaming act on a final name in a parent directory opened that way (mkdirat, unlinkat,
renameat), so the final name itself is never followed either. Files are opened without blocking and must be
regular files, so a FIFO or a device in a tree cannot hang or feed the build.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import ParamSpec, TypeVar

from clipbuild.core.errors import ClipbuildError
from clipbuild.core.safefile import kind

SYS_OPENAT2 = 437  # the same number on every architecture (syscalls from 424 on share one table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
P = ParamSpec("P")
T = TypeVar("T")
RULE = "clipbuild never follows a path out of an installed tree (no link out, no absolute link, no '..' above it)"


class TreeError(ClipbuildError):
    """A path in an installed tree that is not what clipbuild expects there (missing, not a file, ...)."""


class TreeEscape(TreeError):
    """A path in an installed tree that leads out of it."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_openat2_missing = False


def _escape(root: Path, rel: str, why: str) -> TreeEscape:
    return TreeEscape(f"{root}: '{rel}': {why}: refused", hint=RULE)


def _problem(root: Path, rel: str | PurePosixPath, why: str) -> TreeError:
    return TreeError(f"{root}: '{PurePosixPath(rel).as_posix()}': {why}")


def _reported(function: Callable[P, T]) -> Callable[P, T]:
    """Any OSError but a missing path (which callers may expect) becomes a TreeError naming tree and path."""
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return function(*args, **kwargs)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _problem(Path(str(args[0])), str(args[1]), exc.strerror or str(exc)) from None
    return wrapper


def _relative(root: Path, rel: str | PurePosixPath) -> str:
    text = PurePosixPath(rel).as_posix()
    if text.startswith("/") or ".." in PurePosixPath(text).parts:
        raise _escape(root, text, "an absolute path or one holding '..'")
    return text


def _openat2(dir_fd: int, rel: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    for _ in range(8):  # EAGAIN: a concurrent rename somewhere in the kernel's walk; try again
        fd = _syscall(SYS_OPENAT2, dir_fd, os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            raise OSError(err, os.strerror(err), rel)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), rel)


def _walk(dir_fd: int, rel: str, flags: int, mode: int) -> int:
    """openat2's fallback: each component opened with O_NOFOLLOW, so any symbolic link is refused (ELOOP)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    current = os.dup(dir_fd)
    try:
        for part in parts[:-1]:
            if stat.S_ISLNK(os.stat(part, dir_fd=current, follow_symlinks=False).st_mode):
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), part)
            following = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            os.close(current)
            current = following
        if not parts:
            return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=current)
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=current)
    finally:
        os.close(current)


def open_fd(root: Path, rel: str | PurePosixPath, flags: int, mode: int = 0o644) -> int:
    """A descriptor on `rel` in the tree at `root`, resolved beneath it (see the module's docstring)."""
    global _openat2_missing
    text = _relative(root, rel)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not _openat2_missing:
            try:
                return _openat2(root_fd, text or ".", flags, mode)
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise _translate(root, text, exc) from None
                _openat2_missing = True
        try:
            return _walk(root_fd, text, flags, mode)
        except OSError as exc:
            raise _translate(root, text, exc, fallback=True) from None
    finally:
        os.close(root_fd)


def _translate(root: Path, rel: str, exc: OSError, *, fallback: bool = False) -> OSError | TreeError:
    if exc.errno == errno.EXDEV:
        return _escape(root, rel, "leads out of the tree through a symbolic link")
    if exc.errno == errno.ELOOP:
        why = "passes through a symbolic link (not followed without openat2)" if fallback else \
            "a symbolic link loop or a magic link"
        return _escape(root, rel, why)
    if exc.errno == errno.ENXIO:  # opened for writing without blocking: a FIFO without a reader, a socket
        return _problem(root, rel, "is a FIFO or a socket, a regular file is expected")
    if exc.errno == errno.ENOENT:
        return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(root / rel))
    return _problem(root, rel, exc.strerror or str(exc))


@contextmanager
def opened(root: Path, rel: str | PurePosixPath, flags: int, mode: int = 0o644) -> Iterator[int]:
    fd = open_fd(root, rel, flags, mode)
    try:
        yield fd
    finally:
        os.close(fd)


def _regular(root: Path, rel: str | PurePosixPath, flags: int, mode: int = 0o644) -> int:
    try:
        fd = open_fd(root, rel, flags | os.O_NONBLOCK, mode)
    except FileNotFoundError:
        raise _problem(root, rel, "does not exist") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _problem(root, rel, f"is {kind(info.st_mode)}, a regular file is expected")
    os.set_blocking(fd, True)
    return fd


@_reported
def read_bytes(root: Path, rel: str | PurePosixPath) -> bytes:
    with os.fdopen(_regular(root, rel, os.O_RDONLY), "rb") as stream:
        return stream.read()


def read_text(root: Path, rel: str | PurePosixPath) -> str:
    return read_bytes(root, rel).decode()


@_reported
def write_bytes(root: Path, rel: str | PurePosixPath, data: bytes, mode: int = 0o644) -> None:
    """`data` in the regular file `rel` (created with `mode` if missing), truncated only once checked."""
    with os.fdopen(_regular(root, rel, os.O_WRONLY | os.O_CREAT, mode), "wb") as stream:
        stream.truncate(0)
        stream.write(data)


def write_text(root: Path, rel: str | PurePosixPath, text: str, mode: int = 0o644) -> None:
    write_bytes(root, rel, text.encode(), mode)


@_reported
def copy_in(source: Path, root: Path, rel: str | PurePosixPath, mode: int = 0o644) -> None:
    """A host file (one clipbuild chose, e.g. a verified package) copied to `rel` in the tree."""
    with open(source, "rb") as stream, os.fdopen(_regular(root, rel, os.O_WRONLY | os.O_CREAT, mode), "wb") as out:
        out.truncate(0)
        shutil.copyfileobj(stream, out)


@_reported
def exists(root: Path, rel: str | PurePosixPath) -> bool:
    """Whether `rel` is there (a link out is refused, not answered)."""
    try:
        os.close(open_fd(root, rel, os.O_PATH))
    except FileNotFoundError:
        return False
    return True


@_reported
def is_dir(root: Path, rel: str | PurePosixPath) -> bool:
    try:
        with opened(root, rel, os.O_PATH) as fd:
            return stat.S_ISDIR(os.fstat(fd).st_mode)
    except FileNotFoundError:
        return False


@_reported
def regular_path(root: Path, rel: str | PurePosixPath) -> Path:
    """The link-free path of the regular file `rel` inside the tree, for a tool that takes a path (mcopy)."""
    fd = _regular(root, rel, os.O_RDONLY)
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)


def _split(root: Path, rel: str | PurePosixPath) -> tuple[str, str]:
    text = _relative(root, rel)
    parent, _, name = text.rpartition("/")
    if name in ("", "."):
        raise _problem(root, text, "names no entry")
    return parent or ".", name


@_reported
def mkdir(root: Path, rel: str | PurePosixPath, mode: int = 0o755) -> None:
    """`rel` and its missing parents as directories (like mkdir -p), each created in its resolved parent."""
    path = ""
    for part in PurePosixPath(_relative(root, rel)).parts:
        path = f"{path}/{part}" if path else part
        parent, name = _split(root, path)
        with opened(root, parent, os.O_PATH | os.O_DIRECTORY) as parent_fd:
            try:
                os.mkdir(name, mode, dir_fd=parent_fd)
                continue
            except FileExistsError:
                pass
        if not is_dir(root, path):
            raise _problem(root, path, "exists and is not a directory")


@_reported
def unlink(root: Path, rel: str | PurePosixPath, *, missing_ok: bool = True) -> None:
    """The entry `rel` removed (a link itself, never what it points to)."""
    parent, name = _split(root, rel)
    try:
        with opened(root, parent, os.O_PATH | os.O_DIRECTORY) as parent_fd:
            os.unlink(name, dir_fd=parent_fd)
    except FileNotFoundError:
        if not missing_ok:
            raise


@_reported
def remove_tree(root: Path, rel: str | PurePosixPath) -> None:
    """The entry `rel` removed with all it holds, links never followed (shutil.rmtree with dir_fd)."""
    parent, name = _split(root, rel)
    try:
        with opened(root, parent, os.O_PATH | os.O_DIRECTORY) as parent_fd:
            mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                with opened(root, parent, os.O_RDONLY | os.O_DIRECTORY) as listable:
                    shutil.rmtree(name, dir_fd=listable)
            else:
                os.unlink(name, dir_fd=parent_fd)
    except FileNotFoundError:
        pass


@_reported
def replace(source_root: Path, source: str | PurePosixPath, root: Path, rel: str | PurePosixPath) -> None:
    """The entry `source` of one tree renamed to `rel` in another (or the same) tree on the same filesystem."""
    source_parent, source_name = _split(source_root, source)
    parent, name = _split(root, rel)
    with opened(source_root, source_parent, os.O_PATH | os.O_DIRECTORY) as from_fd, \
            opened(root, parent, os.O_PATH | os.O_DIRECTORY) as to_fd:
        os.replace(source_name, name, src_dir_fd=from_fd, dst_dir_fd=to_fd)


@_reported
def entries(root: Path, rel: str | PurePosixPath) -> list[tuple[str, int]]:
    """The names in directory `rel` with their lstat modes, sorted."""
    with opened(root, rel, os.O_RDONLY | os.O_DIRECTORY) as fd:
        return sorted((entry.name, entry.stat(follow_symlinks=False).st_mode) for entry in os.scandir(fd))
