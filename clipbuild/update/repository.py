"""Update repositories in CLIP OS 4's layout (clipos4.md §3): one repository per (distribution, part) conf
package, holding the conf package and exactly the versions it pins.

    OUT/<dist>/<conf>/pool/*.deb
    OUT/<dist>/<conf>/dists/<dist>/main/binary-<arch>/Packages.gz

Only packages whose two signatures verify against the trust policy enter; each Packages stanza carries every
control field of the package plus Filename, Size, MD5sum, SHA1, SHA256 and SHA512, as apt-ftparchive writes them. Each
repository is written beside the old one and swapped in when complete.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from clipbuild.core.errors import RepositoryError
from clipbuild.core.run import run
from clipbuild.signing.trust import Policy, verify_file

CONF = re.compile(r"(?P<dist>clip|rm)-(?P<part>core|apps)-conf(-[bh])?")
_PIN = re.compile(r"^(?P<name>[a-z0-9][a-z0-9+.-]*) \(= (?P<version>[^)]+)\)$")


@dataclass(frozen=True)
class Package:
    path: Path
    fields: Deb822

    @property
    def name(self) -> str:
        return self.fields["Package"]

    @property
    def version(self) -> str:
        return self.fields["Version"]


def read_package(path: Path) -> Package:
    text = run(["dpkg-deb", "--field", path]).stdout
    return Package(path, Deb822(text))


def pins(conf: Package) -> list[tuple[str, str]]:
    """The `name (= version)` entries of a conf package's Depends and Suggests."""
    out = []
    for field in ("Depends", "Suggests"):
        for item in conf.fields.get(field, "").split(","):
            match = _PIN.match(item.strip())
            if match:
                out.append((match["name"], match["version"]))
    return out


def stanza(package: Package, filename: str) -> str:
    data = package.path.read_bytes()
    paragraph = Deb822(package.fields)
    paragraph["Filename"] = filename
    paragraph["Size"] = str(len(data))
    paragraph["MD5sum"] = hashlib.md5(data).hexdigest()  # Packages format fields, not a security check
    paragraph["SHA1"] = hashlib.sha1(data).hexdigest()
    paragraph["SHA256"] = hashlib.sha256(data).hexdigest()
    paragraph["SHA512"] = hashlib.sha512(data).hexdigest()
    return paragraph.dump()


def publish(debs: list[Path], policy: Policy, out: Path) -> list[Path]:
    """Verify every package, then write one repository per conf package found; returns their paths."""
    verdicts = [verify_file(deb, policy) for deb in debs]
    refused = [v for v in verdicts if not v.ok]
    if refused:
        lines = [f"  {Path(v.path).name}: {'; '.join(v.reasons)}" for v in refused]
        raise RepositoryError(f"{len(refused)} package(s) are not countersigned and verified; nothing published\n"
                              + "\n".join(lines))
    packages = [read_package(deb) for deb in debs]
    # The same package may be built for both distributions (busybox in clip/core and rm/core): the conf
    # package of a distribution pins its own.
    index = {(p.fields.get("Distribution", ""), p.name, p.version): p for p in packages}
    confs = [p for p in packages if CONF.fullmatch(p.name)]
    if not confs:
        raise RepositoryError("no conf package (clip-core-conf, clip-apps-conf, rm-core-conf, rm-apps-conf) "
                              "among the packages: a repository is published per conf package")
    written = []
    for conf in confs:
        dist = CONF.fullmatch(conf.name)["dist"]
        missing = [f"{n} (= {v})" for n, v in pins(conf) if (dist, n, v) not in index]
        if missing:
            raise RepositoryError(f"{conf.name} {conf.version} pins packages that are not given: "
                                  + ", ".join(missing))
        members = [conf, *(index[(dist, *pin)] for pin in pins(conf))]
        written.append(_write(out / dist / conf.name, dist, members))
    return written


def _write(target: Path, dist: str, members: list[Package]) -> Path:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "pool").mkdir(parents=True)
    stanzas = []
    arches = set()
    for package in sorted(members, key=lambda p: p.name):
        filename = f"pool/{package.path.name}"
        shutil.copyfile(package.path, tmp / filename)
        stanzas.append(stanza(Package(tmp / filename, package.fields), filename))
        arches.add(package.fields.get("Architecture", "amd64"))
    for arch in sorted(arches - {"all"}) or ["amd64"]:
        binary = tmp / "dists" / dist / "main" / f"binary-{arch}"
        binary.mkdir(parents=True)
        with gzip.GzipFile(binary / "Packages.gz", "wb", mtime=0) as stream:
            stream.write("\n".join(stanzas).encode())
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
