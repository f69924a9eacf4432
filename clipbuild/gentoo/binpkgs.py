"""The binary package store: Portage binpkgs kept by a key over everything that affects their build.

Portage re-uses a binpkg when its version and USE match; it does not notice an edited ebuild, new CFLAGS, a
changed profile or another build root. clipbuild keys each package itself, over: the ebuild, its files/ and
Manifest, the eclasses it inherits, the overlay's profiles/, the rendered make.conf and package.* files, its
USE, the build root, and the keys of the packages it builds against (DEPEND, BDEPEND). A package whose key is in
the store is handed to emerge as a binpkg; any other is built from source, and the store says why.

Layout under ~/.cache/clipbuild/binpkgs/:
    <key>/<PF>.gpkg.tar       the binpkg
    <key>/components.json     what went into the key
    last/<set>/<cat>/<pn>.json  components of the latest build of that package in that set, for explanations
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portage.versions import catpkgsplit

from clipbuild.core.digest import key_of, sha256_file, tree_digest
from clipbuild.core.paths import cache_dir


def store_dir() -> Path:
    """~/.cache/clipbuild/binpkgs, or $CLIPBUILD_BINPKGS (tests use a fresh one to force builds from source)."""
    return Path(os.environ["CLIPBUILD_BINPKGS"]) if os.environ.get("CLIPBUILD_BINPKGS") else cache_dir() / "binpkgs"


@dataclass(frozen=True)
class PackageKey:
    cpv: str
    components: dict[str, Any]

    @property
    def key(self) -> str:
        return key_of(self.components)

    @property
    def category(self) -> str:
        return self.cpv.split("/", 1)[0]

    @property
    def pf(self) -> str:
        return self.cpv.split("/", 1)[1]


def package_components(cpv: str, use: list[str], ebuild_dir: Path, overlay: Path, inherited: list[str],
                       shared: Mapping[str, str], dep_keys: Mapping[str, str]) -> dict[str, Any]:
    """Key components of one package. `shared` holds digests common to a package set (profile, make.conf,
    package.* files, build root)."""
    pf = cpv.split("/", 1)[1]
    own = [ebuild_dir / f"{pf}.ebuild", ebuild_dir / "Manifest", *(ebuild_dir / "files").rglob("*")]
    return {
        "cpv": cpv,
        "use": sorted(use),
        "ebuild": tree_digest([p for p in own if p.exists()], ebuild_dir),
        "eclasses": {name: sha256_file(overlay / "eclass" / f"{name}.eclass") for name in sorted(inherited)
                     if (overlay / "eclass" / f"{name}.eclass").is_file()},
        **shared,
        "deps": dict(sorted(dep_keys.items())),
    }


def lookup(pkg: PackageKey) -> Path | None:
    candidate = store_dir() / pkg.key / f"{pkg.pf}.gpkg.tar"
    return candidate if candidate.is_file() else None


def save(pkg: PackageKey, binpkg: Path, set_name: str) -> None:
    """Keep a freshly built binpkg under its key (atomically), and remember it as the set's latest."""
    keep(pkg, binpkg)
    remember(pkg, set_name)


def keep(pkg: PackageKey, binpkg: Path) -> Path:
    """Put `binpkg` into the store under the package's key (atomically; a copy already there is kept);
    returns the stored file."""
    final = store_dir() / pkg.key
    if not (final / f"{pkg.pf}.gpkg.tar").is_file():
        tmp = store_dir() / f".tmp-{pkg.key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copyfile(binpkg, tmp / f"{pkg.pf}.gpkg.tar")
        (tmp / "components.json").write_text(json.dumps(pkg.components, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not final.is_dir():
                raise
    return final / f"{pkg.pf}.gpkg.tar"


def stored(key: str) -> tuple[PackageKey, Path] | None:
    """The package kept under `key` (its components, as saved) and its binpkg; None when the store has none."""
    folder = store_dir() / key
    try:
        components = json.loads((folder / "components.json").read_text())
    except (OSError, ValueError):
        return None
    pkg = PackageKey(components["cpv"], components)
    binpkg = folder / f"{pkg.pf}.gpkg.tar"
    return (pkg, binpkg) if binpkg.is_file() and pkg.key == key else None


def all_keys() -> list[str]:
    """Every key the store holds a package under (folders without a readable package left out)."""
    root = store_dir()
    names = sorted(p.name for p in root.iterdir() if len(p.name) == 64) if root.is_dir() else []
    return [name for name in names if stored(name) is not None]


def remember(pkg: PackageKey, set_name: str) -> None:
    last = _last_path(pkg, set_name)
    last.parent.mkdir(parents=True, exist_ok=True)
    tmp = last.with_suffix(".tmp")
    tmp.write_text(json.dumps(pkg.components, indent=2, sort_keys=True) + "\n")
    tmp.replace(last)


def _last_path(pkg: PackageKey, set_name: str) -> Path:
    pn = pkg.components.get("pn") or pn_of(pkg.cpv)
    return store_dir() / "last" / set_name / pkg.category / f"{pn}.json"


def pn_of(cpv: str) -> str:
    """The package name of a CPV: sys-apps/busybox-1.35.0-r1 -> busybox."""
    split = catpkgsplit(cpv)
    return split[1] if split else cpv.split("/", 1)[1]


def why_rebuilt(pkg: PackageKey, set_name: str) -> str:
    """What changed since this package was last built in this set, in words."""
    try:
        previous = json.loads(_last_path(pkg, set_name).read_text())
    except (OSError, ValueError):
        return "not built before"
    now = pkg.components
    reasons = []
    if previous.get("cpv") != now["cpv"]:
        reasons.append(f"new version ({previous.get('cpv')} -> {now['cpv']})")
    labels = {"ebuild": "ebuild or its files changed", "profile": "the overlay's profiles changed",
              "make_conf": "make.conf changed", "package_config": "package.* configuration changed",
              "build_root": "another build root"}
    for name, label in labels.items():
        if previous.get(name) != now.get(name):
            reasons.append(label)
    if previous.get("use") != now["use"]:
        old, new = set(previous.get("use", [])), set(now["use"])
        change = " ".join([*(f"+{f}" for f in sorted(new - old)), *(f"-{f}" for f in sorted(old - new))])
        reasons.append(f"USE changed ({change})")
    if previous.get("eclasses") != now["eclasses"]:
        reasons.append("an eclass changed")
    old_deps, new_deps = previous.get("deps", {}), now["deps"]
    for dep in sorted(set(old_deps) | set(new_deps)):
        if old_deps.get(dep) != new_deps.get(dep):
            reasons.append(f"dependency {dep} changed")
    return "; ".join(reasons) or "not in the package store (removed?)"
