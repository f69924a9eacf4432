"""Benchmark: a second machine's build from a team binhost against the same build from source.

    .venv/bin/python bench/binhost.py [SPECIES] [--step ID] [--keep DIR]

Builder (the baseline, measured in the same run): a fresh work directory, an EMPTY package store
(CLIPBUILD_BINPKGS) and an empty kernel compiler cache (CLIPBUILD_CCACHE), so every package is compiled from
source: the whole species, or only the package set `--step` names (`--step build/rm-core`: musl, the kernel
headers and busybox, a few minutes instead of half an hour). Then `clipbuild binhost export` writes what it
built into a folder that a Python HTTP server serves on 127.0.0.1.

Consumer ("a second machine"): another fresh work directory and another empty package store, the same build with
CLIPBUILD_BINHOST set to that server: every package is fetched, verified and installed, none compiled.

Both share the machine's build root and distfiles (~/.cache/clipbuild), as two machines of a team would each have
theirs. Printed: the two wall times, their ratio, what each compiled or fetched and the bytes moved. On one
machine, the loopback network makes the download nearly free; over a LAN add size / bandwidth.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clipbuild.core.run import run
from clipbuild.core.sizes import format_size
from clipbuild.gentoo.binhost import served

CLIPBUILD = Path(sys.executable).with_name("clipbuild")


def build(workdir: Path, species: str, step: str, env: dict[str, str]) -> tuple[float, dict[str, int]]:
    """The build as a user runs it (`build SPECIES`, or `run SPECIES --step ID`): seconds, and its packages by
    status (built, reused, fetched) read from the sets' packages.json."""
    command = ["build", species] if not step else ["run", species, "--step", step]
    started = time.perf_counter()
    run([CLIPBUILD, "--workdir", workdir, *command], env=env)
    seconds = time.perf_counter() - started
    statuses: dict[str, int] = {}
    for packages in (workdir / "steps" / species / "build").glob("*/out/packages.json"):
        for row in json.loads(packages.read_text()):
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    return seconds, statuses


def export(workdir: Path, species: str, folder: Path, env: dict[str, str]) -> dict[str, Any]:
    result = run([CLIPBUILD, "--workdir", workdir, "binhost", "export", folder, "--species", species, "--json"],
                 env=env)
    done = json.loads(result.stdout)
    done["bytes"] = sum(p.stat().st_size for p in folder.rglob("*.gpkg.tar"))
    return done


def report(what: str, source: tuple[float, dict[str, int]], binhost: tuple[float, dict[str, int]],
           exported: dict[str, Any]) -> None:
    (cold, built), (warm, got) = source, binhost
    print(f"{what}, each in a fresh work directory with an empty package store:")
    print(f"  baseline, from source:  {cold:7.1f} s  ({built})")
    print(f"  from the binhost:       {warm:7.1f} s  ({got})")
    print(f"  ratio: the binhost build takes {warm / cold:.1%} of the time ({cold / warm:.1f}x faster); "
          f"{exported['packages']} binpkgs, {format_size(exported['bytes'])} moved over 127.0.0.1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("species", nargs="?", default="client")
    parser.add_argument("--step", default="", help="Build only this package set (e.g. build/rm-core).")
    parser.add_argument("--keep", type=Path, help="Keep the work directories, stores and binhost here.")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="clipbuild-bench-")) if args.keep is None else args.keep
    base.mkdir(parents=True, exist_ok=True)
    # Empty stores and kernel compiler caches on both sides: what a new machine has.
    builder = {"CLIPBUILD_BINPKGS": str(base / "builder-binpkgs"), "CLIPBUILD_CCACHE": str(base / "builder-ccache")}
    try:
        print(f"from source: {args.species} {args.step} ...", file=sys.stderr)
        source = build(base / "builder", args.species, args.step, builder)
        exported = export(base / "builder", args.species, base / "binhost", builder)
        with served(base / "binhost") as url:
            print("from the binhost ...", file=sys.stderr)
            consumer = {"CLIPBUILD_BINPKGS": str(base / "consumer-binpkgs"), "CLIPBUILD_BINHOST": url,
                        "CLIPBUILD_CCACHE": str(base / "consumer-ccache")}
            fetched = build(base / "consumer", args.species, args.step, consumer)
        report(f"{args.species} {args.step or '(every set)'}", source, fetched, exported)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
