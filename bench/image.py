"""Benchmark: `clipbuild image SPECIES` warm (nothing changed) and image assembly, beside a plain
`cp --sparse=always` of the same image file, in the same run.

    .venv/bin/python bench/image.py [SPECIES] [--runs N] [--workdir DIR]

Builds the image first if needed (not timed). Then, median of N runs each:
- no-op: the `clipbuild image SPECIES` command as a user runs it (new process), every step cached;
- assembly: the image step alone, its cached output removed first (verification of every package, dpkg,
  filesystems, verity, bootloader, GPT, hashing the image);
- copy: `cp --sparse=always` of the finished image. coreutils 9 skips holes with SEEK_HOLE, so on a 3 GiB image
  holding ~40 MiB of data this copy costs next to nothing; `dd conv=sparse`, which reads every byte as older
  copies did, is printed as a second baseline.
Targets (issue P6): no-op under 5 s; assembly within 3x the copy.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from clipbuild.core.run import run

CLIPBUILD = Path(sys.executable).with_name("clipbuild")


def timed(args: list) -> float:
    started = time.perf_counter()
    run(args)
    return time.perf_counter() - started


def main() -> None:
    from benchargs import parse

    args = parse(__doc__, runs=3)
    base = [CLIPBUILD, "--workdir", args.workdir]
    run([*base, "image", args.species])  # warm-up: build whatever is missing
    noop = [timed([*base, "image", args.species]) for _ in range(args.runs)]
    link = args.workdir / "steps" / args.species / "image"
    assembly, copy, full = [], [], []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for _ in range(args.runs):
            shutil.rmtree(link.resolve())
            assembly.append(timed([*base, "run", args.species, "--step", "image"]))
            image = next((link.resolve() / "out").glob("*.img"))
            copy.append(timed(["cp", "--sparse=always", image, Path(tmp) / "copy.img"]))
            (Path(tmp) / "copy.img").unlink()
            full.append(timed(["dd", f"if={image}", f"of={Path(tmp) / 'copy.img'}", "bs=4M", "conv=sparse",
                               "status=none"]))
            (Path(tmp) / "copy.img").unlink()
    size = image.stat().st_size
    used = image.stat().st_blocks * 512
    noop_s, assembly_s, copy_s, full_s = (statistics.median(v) for v in (noop, assembly, copy, full))
    print(f"image {image.name}: {size / 2**30:.1f} GiB, {used / 2**20:.0f} MiB allocated; median of {args.runs}")
    print(f"  no-op clipbuild image {args.species:<10} {noop_s:7.2f} s   (target < 5 s)")
    print(f"  image assembly (step alone)      {assembly_s:7.2f} s")
    print(f"  cp --sparse=always of the image  {copy_s:7.2f} s")
    print(f"  dd conv=sparse (reads every byte) {full_s:6.2f} s")
    print(f"  assembly / cp                    {assembly_s / copy_s:7.1f} x  (target <= 3 x)")
    print(f"  assembly / dd                    {assembly_s / full_s:7.1f} x")


if __name__ == "__main__":
    main()
