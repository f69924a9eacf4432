"""Benchmark: cold and warm builds of the species, what each built or shared, and their image sizes.

    .venv/bin/python bench/species_build.py [SPECIES...] [--keep DIR] [--no-images]

Cold: a fresh work directory, an empty package store (CLIPBUILD_BINPKGS) and an empty kernel compiler cache
(CLIPBUILD_CCACHE), so every package of every species is compiled from source, kernels included. The build root
and the distfiles are the machine's (~/.cache/clipbuild: built and fetched once per machine; `make image` on a
fresh machine adds them, see README). The species build one after the other, as a developer or CI would: what
the second shares with the first (same package, same USE, same inputs) comes from the package store and is not
compiled twice.

Warm, on the same store: a no-op build in the same work directory (every set cached), and a build in a new work
directory (every package reused from the store: what a second work tree or a CI run on the same machine gets).

The baseline, measured in the same run: the seconds emerge spent on the packages it compiled (from each
package's "Emerging" line to the next, recorded in packages.json), so the cold wall time reads as Portage's own
work plus clipbuild's share (planning, keys, the build root's sandbox, binpkg store, reports).

Then, unless --no-images: each species' image (packages, signing, dpkg, filesystems, verity, GPT) with its
package count, installed size and file sizes. Issue P12's target: cold build of both species under 30 min on
2 cores.
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

CLIPBUILD = Path(sys.executable).with_name("clipbuild")


def build(workdir: Path, species: str, env: dict[str, str]) -> tuple[float, list[dict[str, Any]]]:
    """`clipbuild build SPECIES --json` as a user runs it: seconds, and the sets' package rows."""
    started = time.perf_counter()
    result = run([CLIPBUILD, "--workdir", workdir, "build", species, "--json"], env=env)
    seconds = time.perf_counter() - started
    return seconds, json.loads(result.stdout)["sets"]


def counts(sets: list[dict[str, Any]]) -> dict[str, Any]:
    """Packages in the sets, distinct builds among them, and those this run compiled (in sets that ran)."""
    rows = [row for s in sets for row in s["packages"]]
    built = [row for s in sets if s["status"] != "cached" for row in s["packages"] if row["status"] == "built"]
    return {"packages": len(rows), "distinct": len({row["key"] for row in rows}), "built": len(built),
            "emerge_seconds": sum(row.get("seconds", 0.0) for row in built),
            "slowest": sorted(((row.get("seconds", 0.0), row["cpv"]) for row in built), reverse=True)[:8]}


def image(workdir: Path, species: str, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    run([CLIPBUILD, "--workdir", workdir, "image", species], env=env)
    seconds = time.perf_counter() - started
    out = (workdir / "steps" / species / "image").resolve() / "out"
    disk = next(out.glob("*.img"))
    manifest = json.loads((out / "manifest.json").read_text())
    found = json.loads(run([CLIPBUILD, "--workdir", workdir, "inspect", disk, "--json"], env=env).stdout)
    installed = {t["tree"]: sum(p["installed_size"] for p in t["packages"]) for t in found.get("installed", [])}
    return {"seconds": seconds, "packages": len(manifest["packages"]), "disk": disk.stat().st_size,
            "allocated": disk.stat().st_blocks * 512, "installed": installed}


def report(species: list[str], cold: dict[str, tuple[float, dict]], warm: dict[str, dict[str, float]],
           images: dict[str, dict[str, Any]]) -> None:
    print("cold builds (empty package store and kernel ccache; the machine's build root and distfiles):")
    for name in species:
        seconds, c = cold[name]
        print(f"  {name}: {seconds / 60:.1f} min wall; {c['packages']} packages ({c['distinct']} distinct builds), "
              f"{c['built']} compiled here, the rest shared from the store")
        print(f"    baseline: emerge's own time on what it compiled {c['emerge_seconds'] / 60:.1f} min; "
              f"clipbuild's share {max(seconds - c['emerge_seconds'], 0) / 60:.1f} min")
        print("    slowest: " + ", ".join(f"{cpv} {s:.0f} s" for s, cpv in c["slowest"]))
    total = sum(seconds for seconds, _ in cold.values())
    print(f"  all species: {total / 60:.1f} min (target: under 30 min on 2 cores)")
    print("warm builds (same package store):")
    for name in species:
        w = warm[name]
        print(f"  {name}: no-op in the same work directory {w['noop']:.1f} s; new work directory, every package "
              f"from the store {w['fresh']:.1f} s")
    for name, info in images.items():
        trees = "; ".join(f"{tree} {format_size(size)}" for tree, size in info["installed"].items())
        print(f"image {name}: {info['packages']} packages, assembled in {info['seconds']:.0f} s; disk "
              f"{format_size(info['disk'])} sparse, {format_size(info['allocated'])} allocated; installed: {trees}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("species", nargs="*", default=["client", "gateway"])
    parser.add_argument("--keep", type=Path, help="Keep the cold work directory, store and ccache here.")
    parser.add_argument("--no-images", action="store_true", help="Skip the images.")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="clipbuild-bench-")) if args.keep is None else args.keep
    base.mkdir(parents=True, exist_ok=True)
    env = {"CLIPBUILD_BINPKGS": str(base / "binpkgs"), "CLIPBUILD_CCACHE": str(base / "ccache")}
    try:
        cold = {}
        for name in args.species:
            print(f"cold build: {name} ...", file=sys.stderr)
            seconds, sets = build(base / "work", name, env)
            cold[name] = (seconds, counts(sets))
        warm = {name: {"noop": build(base / "work", name, env)[0], "fresh": build(base / f"work-{name}", name, env)[0]}
                for name in args.species}
        images = {} if args.no_images else {name: image(base / "work", name, env) for name in args.species}
        report(args.species, cold, warm, images)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
