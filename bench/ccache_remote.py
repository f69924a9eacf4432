"""Benchmark: the kernel build with ccache's HTTP remote, cold remote then warm remote.

    .venv/bin/python bench/ccache_remote.py [--species kernel] [--keep DIR]

A copy of the project gets a species whose core set is the kernel alone (sys-kernel/clip-kernel: the only
package clipbuild compiles through ccache). It is built twice, each time into an empty package store and with an
empty local compiler cache (CLIPBUILD_BINPKGS, CLIPBUILD_CCACHE), both times with the same remote, a tiny HTTP
store on 127.0.0.1 (tests/ccache_http.py):

  cold: the remote is empty: every compile is a miss, its result written locally and to the remote;
  warm: what a second builder or a CI consumer gets: local misses answered by the remote.

Prints wall seconds, the kernel's seconds in emerge, and ccache's counts (local hits, remote hits, misses) of each
build, from the step's compiles.json. The remote is on loopback: a real one adds the network's latency per
object (a few hundred kB each way per kernel object file at most).
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
from tests.ccache_http import Store

ROOT = Path(__file__).resolve().parent.parent
CLIPBUILD = Path(sys.executable).with_name("clipbuild")
PROFILE = ("inherits: base\ndescription: the kernel alone, for bench/ccache_remote.py\n"
           "packages: !replace {clip: {core: [sys-kernel/clip-kernel]}}\n")


def build(project: Path, base: Path, name: str, species: str, remote: str) -> dict[str, Any]:
    env = {"CLIPBUILD_BINPKGS": str(base / f"store-{name}"), "CLIPBUILD_CCACHE": str(base / f"ccache-{name}"),
           "SOURCE_DATE_EPOCH": "1700000000"}
    started = time.monotonic()
    result = run([CLIPBUILD, "--project", project, "--workdir", base / f"work-{name}", "build", species, "--json",
                  "--ccache-remote", remote], env=env, check=False, timeout=7200)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"{name} build failed:\n{result.stderr[-3000:]}")
    core = json.loads(result.stdout)["sets"][0]
    emerge = sum(row["seconds"] for row in core["packages"] if row["status"] == "built")
    return {"wall": round(seconds, 1), "emerge": round(emerge, 1), **core.get("compiles", {}).get("ccache", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--species", default="kernel", help="name of the kernel-only species written in the copy")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary folder, removed)")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="clipbuild-bench-ccache-"))
    project = base / "proj"
    for sub in ("profiles", "jails", "kernel-patches", "overlays"):
        shutil.copytree(ROOT / sub, project / sub, dirs_exist_ok=True)
    (project / "profiles" / f"{args.species}.yaml").write_text(PROFILE)
    run([CLIPBUILD, "--project", project, "fetch", args.species], timeout=3600)
    try:
        with Store(base / "remote") as store:
            rows = {name: build(project, base, name, args.species, store.url) for name in ("cold", "warm")}
            served = dict(store.counts)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"{'build':6} {'wall s':>8} {'emerge s':>9} {'local hits':>11} {'remote hits':>12} {'misses':>7} "
          f"{'remote hit rate':>16}")
    for name, row in rows.items():
        asked = row.get("remote_hits", 0) + row.get("misses", 0)
        rate = f"{100 * row.get('remote_hits', 0) / asked:.1f} %" if asked else "-"
        print(f"{name:6} {row['wall']:8} {row['emerge']:9} {row.get('local_hits', 0):11} "
              f"{row.get('remote_hits', 0):12} {row.get('misses', 0):7} {rate:>16}")
    print(f"remote store: {served}")


if __name__ == "__main__":
    main()
