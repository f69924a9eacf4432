"""Publishing an image: the image step's output copied out of the work directory (sparse, atomically), with
its manifest beside it and qcow2 or zstd copies on request."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipbuild.core.run import run
from clipbuild.image.manifest import MANIFEST


@dataclass(frozen=True)
class Published:
    image: Path
    manifest: Path
    copies: tuple[Path, ...]
    updated: bool


def publish(step_out: Path, out_dir: Path, *, qcow2: bool = False, zstd: bool = False) -> Published:
    """Copy the image step's output to `out_dir` (`<species>-<version>.img`, `.manifest.json`, and qcow2 or
    zstd copies on request), each written under a temporary name and renamed when complete. An up-to-date
    copy (same manifest, same size and mtime) is left alone."""
    manifest = json.loads((step_out / MANIFEST).read_text())
    name = manifest["image"]["file"]
    source = step_out / name
    out_dir.mkdir(parents=True, exist_ok=True)
    image, sidecar = out_dir / name, out_dir / f"{Path(name).stem}.manifest.json"
    state = source.stat()
    current = (sidecar.is_file() and sidecar.read_bytes() == (step_out / MANIFEST).read_bytes()
               and image.is_file() and (image.stat().st_size, image.stat().st_mtime_ns) ==
               (state.st_size, state.st_mtime_ns))
    if not current:
        _atomic_copy(["cp", "--sparse=always", "--preserve=timestamps", source], image)
        _atomic_copy(["cp", step_out / MANIFEST], sidecar)
    copies = []
    if qcow2:
        copies.append(_derived(image, image.with_suffix(".qcow2"), ["qemu-img", "convert", "-q", "-f", "raw",
                                                                       "-O", "qcow2", image], not current))
    if zstd:
        copies.append(_derived(image, image.with_name(image.name + ".zst"),
                               ["zstd", "-q", "-f", "-T0", "-10", image, "-o"], not current))
    return Published(image, sidecar, tuple(copies), not current)


def _atomic_copy(command: list[Any], target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        run([*command, tmp])
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _derived(image: Path, target: Path, command: list[Any], stale: bool) -> Path:
    if stale or not target.is_file() or target.stat().st_mtime_ns < image.stat().st_mtime_ns:
        _atomic_copy(command, target)
    return target
