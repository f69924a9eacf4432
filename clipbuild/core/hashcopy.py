"""Copy a file into a new one in one pass, hashing the copy as it is written.

The main thread writes the source into the target in 1 MiB chunks (pwrite from a read-only mapping of the
source: a source truncated meanwhile makes the write fail with EFAULT, never a SIGBUS) and starts each 8 MiB's
writeback as it goes (sync_file_range, so the caller's final fsync has little left to wait for); one thread per
digest algorithm hashes the chunks already written, read back from a mapping of the *target* (hashlib releases
the GIL). The digests are therefore those of the copy's bytes, whatever happens to the source meanwhile, and
each byte is read once per algorithm, from the page cache.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from typing import Any

CHUNK = 1 << 20
WRITEBACK_EVERY = 8 << 20
INLINE = 4 << 20  # up to this size, hashing in this thread costs less than starting threads
_SYNC_FILE_RANGE_WRITE = 2  # start writing the range back, do not wait for it


@cache
def _writeback() -> Callable[..., int] | None:
    """libc's sync_file_range, or None where there is none (the final fsync then does all the writing)."""
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing [offset, offset + length) of `fd` to disk without waiting: a hint; errors show at fsync."""
    func = _writeback()
    if func is not None and length > 0:
        func(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """All of `data` at `offset` (pwrite may write less than asked)."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            with view[done:] as rest:  # released even on an error, or a mapping under it could not be closed
                written = os.pwrite(fd, rest, offset + done)
            if written == 0:
                raise OSError(0, f"no progress writing at byte {offset + done}")
            done += written


@contextmanager
def _mapped(fd: int, size: int) -> Iterator[memoryview]:
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data, memoryview(data) as view:
        yield view


def _update(hasher: Any, view: memoryview, start: int, end: int) -> None:
    with view[start:end] as part:
        hasher.update(part)


def copy_hashed(source: int, target: int, size: int, algorithms: Iterable[str], hash_upto: int | None = None,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Copy bytes [0, size) of `source` into `target` (a new empty file, opened read-write) and return, for each
    algorithm, a hasher over the copy's bytes [0, hash_upto) (all of them by default). `progress` is told how many
    bytes are written after each chunk. The target is not fsynced: its writeback is only started."""
    hashers = {name: hashlib.new(name) for name in sorted(set(algorithms))}
    upto = size if hash_upto is None else max(0, min(hash_upto, size))
    if size == 0:
        return hashers
    os.ftruncate(target, size)
    with _mapped(source, size) as src, _mapped(target, size) as copy:
        if size <= INLINE:
            _copy_chunks(src, target, upto, lambda start, end: [_update(h, copy, start, end) for h in hashers.values()],
                         progress)
            return hashers
        pools = {name: ThreadPoolExecutor(1, thread_name_prefix=f"hash-{name}") for name in hashers}

        def hash_chunk(start: int, end: int) -> list[Future[None]]:
            return [pools[name].submit(_update, hasher, copy, start, end) for name, hasher in hashers.items()]

        try:
            for future in _copy_chunks(src, target, upto, hash_chunk, progress):
                future.result()
        finally:
            for pool in pools.values():  # no thread may still read the mappings once they are closed
                pool.shutdown(wait=True, cancel_futures=True)
    return hashers


def _copy_chunks(source: memoryview, target: int, upto: int, hash_chunk: Callable[[int, int], list[Any]],
                 progress: Callable[[int], None] | None) -> list[Any]:
    """Write `source` into `target` chunk by chunk, handing each chunk written below `upto` to the hashers and
    starting the writeback every WRITEBACK_EVERY bytes (a smaller file is left to the caller's fsync)."""
    pending: list[Future[None]] = []
    done = flushed = 0
    while done < len(source):
        end = min(done + CHUNK, len(source))
        with source[done:end] as chunk:
            write_all(target, chunk, done)
        if done < upto:
            pending += hash_chunk(done, min(end, upto))
        done = end
        if done - flushed >= WRITEBACK_EVERY or (done == len(source) and flushed > 0):
            start_writeback(target, flushed, done - flushed)
            flushed = done
        if progress is not None:
            progress(done)
    return pending


def hash_view(view: memoryview, algorithms: Iterable[str], upto: int) -> dict[str, Any]:
    """For each algorithm, a hasher over bytes [0, upto) of `view`: one thread per algorithm when there are
    several and the bytes are many (hashlib releases the GIL), else in this thread."""
    hashers = {name: hashlib.new(name) for name in sorted(set(algorithms))}
    upto = max(0, min(upto, len(view)))
    if len(hashers) == 1 or upto <= INLINE:
        for hasher in hashers.values():
            _update(hasher, view, 0, upto)
        return hashers
    with ThreadPoolExecutor(len(hashers), thread_name_prefix="hash") as pool:
        for future in [pool.submit(_update, hasher, view, 0, upto) for hasher in hashers.values()]:
            future.result()
    return hashers
