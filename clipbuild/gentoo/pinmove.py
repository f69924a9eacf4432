"""`clipbuild distfiles pin`: move a package's Debian pins to a version the archive offers now.

Everything is downloaded and hashed first; only then are the store, the Manifest, the Pins file (each written
under a temporary name and renamed) and, when the upstream version changed, the ebuild's name and the exact
`=CAT/PN-VERSION` atoms naming it rewritten. Nothing is written when any download or check fails.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cmp_to_key
from pathlib import Path

from debian.debian_support import version_compare

from clipbuild.core import safefile
from clipbuild.core.errors import InputError
from clipbuild.gentoo import fetch
from clipbuild.gentoo.debarchive import Archive, Say
from clipbuild.gentoo.pins import Pin, moved, pins_file, read_pin_file, write_pin_file

MANIFEST_HASHES = ("BLAKE2B", "SHA512")


@dataclass
class Moved:
    """One distfile whose pin moved, with the Manifest line before and after."""

    distfile: str
    old: Pin
    new: Pin
    old_line: str
    new_line: str


@dataclass
class PinMove:
    package: str
    moves: list[Moved] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)  # other packages declaring a moved distfile: moved along
    renamed: list[tuple[str, str]] = field(default_factory=list)  # ebuilds renamed (old, new)
    rewritten: list[str] = field(default_factory=list)  # ebuilds whose exact atoms were updated
    rebuilds: list[str] = field(default_factory=list)  # packages that will rebuild
    species: list[str] = field(default_factory=list)  # species that will rebuild


def move_pins(overlay: Path, package: str, suites: Iterable[str], version: str | None, say: Say) -> PinMove:
    """Move every pin of `package` (CATEGORY/PN) to `version`, or to the newest version the suites offer."""
    directory = overlay / package
    pins = read_pin_file(pins_file(directory), f"{package}/Pins", package) if pins_file(directory).is_file() else []
    if not pins:
        raise InputError(f"{package} has no Debian pins (no {overlay.name}/{package}/Pins)",)
    suites = list(suites)
    if not suites:
        raise InputError("no debian:SUITE mirror in any profile's sources.mirrors: nowhere to look for versions")
    result = PinMove(package)
    manifest = directory / "Manifest"
    text = manifest.read_text(encoding="utf-8")
    fetch.store_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=fetch.store_dir(), prefix=".pin-") as tmp:
        downloads = []
        for pin in pins:
            archive, target = _choose(pin, suites, version, say)
            if target == pin.version:
                say(f"pin: {pin.distfile} is already pinned to {pin}, the version asked for")
                continue
            new = moved(pin, target)
            work = Path(tmp) / pin.distfile
            work.mkdir()
            got = archive.download(new, work, say)
            digests = fetch.digest_file(got, MANIFEST_HASHES)
            line = " ".join(["DIST", pin.distfile, str(got.stat().st_size),
                             *(w for name in MANIFEST_HASHES for w in (name, digests[name]))])
            downloads.append((got, Moved(pin.distfile, pin, new, _dist_line(text, pin.distfile, manifest), line)))
        for got, move in downloads:  # every download succeeded: now write
            got.replace(fetch.store_dir() / move.distfile)
            text = text.replace(move.old_line, move.new_line)
            result.moves.append(move)
    if not result.moves:
        return result
    sharers = _sharers(overlay, package, result.moves)
    result.shared = list(sharers)
    safefile.write_atomic(manifest, text.encode())
    for other, other_text in sharers.items():
        for move in result.moves:
            other_text = other_text.replace(move.old_line, move.new_line)
        safefile.write_atomic(overlay / other / "Manifest", other_text.encode())
    write_pin_file(pins_file(directory), [m.new for m in result.moves])
    for name in (package, *sharers):
        _follow_upstream_version(overlay, name, result)
    return result


def _sharers(overlay: Path, package: str, moves: list[Moved]) -> dict[str, str]:
    """The other packages whose Manifest declares a moved distfile with the same line (the kernel's tarball:
    sys-kernel/linux-headers beside sys-kernel/clip-kernel), with their Manifest's text: they move with it."""
    found = {}
    for other in sorted(overlay.glob("*/*/Manifest")):
        name = other.parent.relative_to(overlay).as_posix()
        text = other.read_text(encoding="utf-8")
        if name != package and any(m.old_line in text.splitlines() for m in moves):
            found[name] = text
    return found


def _choose(pin: Pin, suites: list[str], version: str | None, say: Say) -> tuple[Archive, str]:
    offers = {}
    for suite in suites:
        archive = Archive(suite)
        archive.ensure_index(say)
        offers[suite] = archive.offered(pin)
    everything = sorted({v for vs in offers.values() for v in vs}, key=cmp_to_key(version_compare))
    if not everything:
        raise InputError(f"{pin.where}: Debian ({', '.join(suites)}) offers no {pin.kind} package {pin.package}")
    target = version or everything[-1]
    for suite, versions in offers.items():
        if target in versions:
            return Archive(suite), target
    raise InputError(f"{pin.package} {target} is not offered; Debian offers {', '.join(everything)}")


def _dist_line(text: str, distfile: str, manifest: Path) -> str:
    for line in text.splitlines():
        words = line.split()
        if len(words) > 1 and words[0] == "DIST" and words[1] == distfile:
            return line
    raise InputError(f"{manifest}: no DIST line for {distfile}, which Pins names")


def _follow_upstream_version(overlay: Path, package: str, result: PinMove) -> None:
    """When the upstream version changed and the ebuild is named after it, rename the ebuild and update the
    exact atoms (=CAT/PN-OLD) other ebuilds pin it with."""
    pn = package.split("/")[1]
    for move in result.moves:
        old, new = move.old.upstream_version, move.new.upstream_version
        ebuild = overlay / package / f"{pn}-{old}.ebuild"
        if old == new or not ebuild.is_file():
            continue
        ebuild.rename(ebuild.with_name(f"{pn}-{new}.ebuild"))
        result.renamed.append((ebuild.name, f"{pn}-{new}.ebuild"))
        exact = re.compile(rf"(?<=[=~]){re.escape(package)}-{re.escape(old)}(?![0-9A-Za-z.])")
        for other in sorted(overlay.glob("*/*/*.ebuild")):
            content = other.read_text(encoding="utf-8")
            updated = exact.sub(f"{package}-{new}", content)
            if updated != content:
                safefile.write_atomic(other, updated.encode())
                result.rewritten.append(other.relative_to(overlay).as_posix())


def reverse_dependencies(overlay: Path, package: str) -> list[str]:
    """`package` and every package of the overlay whose ebuild names it, transitively (what will rebuild)."""
    texts = {p.parent.relative_to(overlay).as_posix(): p.read_text(encoding="utf-8")
             for p in sorted(overlay.glob("*/*/*.ebuild"))}
    found, todo = [package], [package]
    while todo:
        name = todo.pop()
        pattern = re.compile(rf"(?<![\w/-]){re.escape(name)}(?!\w|-[A-Za-z_])")
        for other, text in texts.items():
            if other not in found and pattern.search(text):
                found.append(other)
                todo.append(other)
    return found


def atom_package(atom: str) -> str:
    """CATEGORY/PN of a package atom: >=sys-apps/busybox-1.35:0 -> sys-apps/busybox."""
    match = re.search(r"([\w+][\w+.-]*/[\w+][\w+-]*?)(?:-\d[^:\[]*)?(?:[:\[].*)?$", atom.lstrip("<>=~!"))
    return match.group(1) if match else atom
