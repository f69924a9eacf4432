"""Digests: the canonical JSON cache keys are computed over, file and tree digests (sparse files hashed
without reading their holes), and the key of a set of components."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any


def canonical_json(data: Any) -> str:
    """The one serialisation cache keys are computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot be part of a plan")


def key_of(data: Any) -> str:
    """SHA-256 over the canonical JSON of `data`: a step's or a package's key components, a build root recipe."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's content. Holes in a sparse file (a disk image is mostly holes) are hashed as the
    zeros they read as, without reading them."""
    digest = hashlib.sha256()
    zeros = bytes(1 << 20)
    with path.open("rb") as stream:
        for offset, length, is_data in extents(stream.fileno()):
            if is_data:
                stream.seek(offset)
                while length > 0:
                    chunk = stream.read(min(length, 1 << 20))
                    if not chunk:
                        raise OSError(f"{path} shrank while being read")
                    digest.update(chunk)
                    length -= len(chunk)
            else:
                for _ in range(length >> 20):
                    digest.update(zeros)
                digest.update(zeros[:length & ((1 << 20) - 1)])
    return digest.hexdigest()


def extents(fd: int) -> list[tuple[int, int, bool]]:
    """(offset, length, is_data) runs covering a file, from SEEK_DATA/SEEK_HOLE (one data run when the
    filesystem cannot tell)."""
    size = os.fstat(fd).st_size
    runs: list[tuple[int, int, bool]] = []
    offset = 0
    while offset < size:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            data = size
        if data > offset:
            runs.append((offset, data - offset, False))
        if data >= size:
            break
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        runs.append((data, hole - data, True))
        offset = hole
    return runs


def tree_digest(paths: list[Path], base: Path) -> str:
    """One digest over files (names relative to `base`, and contents)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        if path.is_file():
            digest.update(f"{path.relative_to(base).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()
