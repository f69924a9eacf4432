"""Debian pins: which Debian package, at which exact version, each distfile is taken from.

A package whose distfiles come from Debian's archive keeps a `Pins` file beside its Manifest, one line per
distfile (docs/building.md):

    DEBIAN linux-source-6.1.tar.xz binary linux-source-6.1 6.1.192-2
    DEBIAN busybox-1.35.0.tar.bz2 source busybox 1:1.35.0-4+deb12u1

`binary`: the file is /usr/src/DISTFILE inside that binary package (linux-source-6.1 ships the kernel tree);
`source`: the file is the upstream `.orig` tarball of that source package. The Manifest still pins the bytes;
the pin says where to find them, so a Debian update of the package never changes what a fresh machine fetches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from clipbuild.core import safefile
from clipbuild.core.errors import InputError

PINS = "Pins"
KINDS = ("binary", "source")
_VERSION = re.compile(r"(?:\d+:)?[0-9][A-Za-z0-9.+~-]*")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")


@dataclass(frozen=True)
class Pin:
    distfile: str
    kind: str  # "binary" or "source"
    package: str
    version: str  # the exact Debian version, epoch included
    where: str  # FILE:LINE, for messages
    owner: str = ""  # CATEGORY/PN of the package whose Pins file holds it

    @property
    def upstream_version(self) -> str:
        """The version without epoch and Debian revision: 1:1.35.0-4+deb12u1 -> 1.35.0."""
        version = self.version.split(":", 1)[-1]
        return version.rsplit("-", 1)[0] if "-" in version else version

    def line(self) -> str:
        return f"DEBIAN {self.distfile} {self.kind} {self.package} {self.version}"

    def __str__(self) -> str:
        return f"{self.package}={self.version} ({self.kind})"


def pins_file(package_dir: Path) -> Path:
    return package_dir / PINS


def read_pins(overlay: Path) -> dict[str, Pin]:
    """Every pin of every package of the overlay, by distfile name."""
    found: dict[str, Pin] = {}
    for path in sorted(overlay.glob(f"*/*/{PINS}")):
        owner = path.parent.relative_to(overlay).as_posix()
        for pin in read_pin_file(path, str(path.relative_to(overlay.parent)), owner):
            if pin.distfile in found:
                raise InputError(f"{pin.where}: {pin.distfile} is already pinned in {found[pin.distfile].where}")
            found[pin.distfile] = pin
    return found


def read_pin_file(path: Path, shown: str, owner: str = "") -> list[Pin]:
    pins = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        words = text.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{shown}:{number}"
        if words[0] != "DEBIAN" or len(words) != 5:
            raise InputError(f"{where}: malformed pin (DEBIAN DISTFILE binary|source PACKAGE VERSION)")
        _, distfile, kind, package, version = words
        if kind not in KINDS:
            raise InputError(f"{where}: pin kind '{kind}' is neither binary nor source")
        if not _PACKAGE.fullmatch(package) or not _VERSION.fullmatch(version):
            raise InputError(f"{where}: '{package} {version}' is not a Debian package name and version")
        pins.append(Pin(distfile, kind, package, version, where, owner))
    return pins


def write_pin_file(path: Path, pins: list[Pin]) -> None:
    """Rewrite a Pins file with `pins`, keeping its comment lines; atomically."""
    by_name = {p.distfile: p for p in pins}
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        words = text.split()
        if len(words) >= 2 and words[0] == "DEBIAN" and words[1] in by_name:
            lines.append(by_name.pop(words[1]).line())
        else:
            lines.append(text)
    lines += [p.line() for p in by_name.values()]
    safefile.write_atomic(path, ("\n".join(lines) + "\n").encode())


def moved(pin: Pin, version: str) -> Pin:
    return replace(pin, version=version)
