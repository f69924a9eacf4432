"""Update repositories in CLIP OS 4's layout (clipos4.md §3): one repository per (distribution, part) conf
package, holding the conf package and exactly the versions it pins.

    OUT/<dist>/<conf>/pool/*.deb
    OUT/<dist>/<conf>/dists/<dist>/main/binary-<arch>/Packages.gz

Only packages whose two signatures verify against the trust policy enter; each Packages stanza carries every
control field of the package plus Filename, Size, MD5sum, SHA1, SHA256 and SHA512, as apt-ftparchive writes them. Each
repository is written beside the old one and swapped in when complete.

Reading a repository (a mirror's, so hostile until proven otherwise): Packages.gz must be a regular gzip file,
decompressing to at most MAX_INDEX_BYTES of UTF-8 text in Debian's stanza format; each stanza names its file
as `pool/NAME.deb` (nothing absolute, nothing leaving the pool, no link), once.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from clipbuild.core import safefile
from clipbuild.core.errors import RepositoryError
from clipbuild.core.run import run
from clipbuild.signing.trust import Policy, verify_file

CONF = re.compile(r"(?P<dist>clip|rm)-(?P<part>core|apps)-conf(-[bh])?")
_PIN = re.compile(r"^(?P<name>[a-z0-9][a-z0-9+.-]*) \(= (?P<version>[^)]+)\)$")
MAX_INDEX_BYTES = 64 << 20  # Packages, compressed or not: far above any CLIP repository, a bound on a gzip bomb
POOL_NAME = re.compile(r"pool/[A-Za-z0-9][A-Za-z0-9+._~:-]*\.deb")  # name_version_arch.deb, epochs too
_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*):(.*)")


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
    try:
        text = run(["dpkg-deb", "--field", path]).stdout
    except UnicodeDecodeError:
        raise RepositoryError(f"{path}: its control fields are not UTF-8 text") from None
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


def decompress_index(raw: bytes, where: str) -> str:
    """Packages.gz as text: gzip, complete, at most MAX_INDEX_BYTES once decompressed, UTF-8."""
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        text = stream.decompress(raw, MAX_INDEX_BYTES + 1)
    except zlib.error as exc:
        raise RepositoryError(f"{where}: not gzip data ({exc})") from None
    if len(text) > MAX_INDEX_BYTES:
        raise RepositoryError(f"{where}: decompresses to more than {MAX_INDEX_BYTES} bytes: refused (gzip bomb?)")
    if not stream.eof:
        raise RepositoryError(f"{where}: truncated gzip data")
    if stream.unused_data:
        raise RepositoryError(f"{where}: bytes after the gzip data")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RepositoryError(f"{where}: not UTF-8 text (byte {exc.start})") from None


def parse_packages(text: str, where: str) -> list[dict[str, str]]:
    """Debian's stanza format, strictly: `Field: value` lines, continuation lines, blank lines between stanzas;
    a field given twice in a stanza, or any other line, is an error naming the line."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, ""
        elif line[0] in " \t" and last:
            current[last] += "\n" + line
        elif (match := _FIELD.fullmatch(line)) and match[1] not in current:
            last = match[1]
            current[last] = match[2].strip()
        else:
            problem = "the field is given twice" if match else "not a `Field: value` line"
            raise RepositoryError(f"{where}:{number}: {problem}: {line[:80]!r}")
    if current:
        stanzas.append(current)
    return stanzas


def read_index(index: Path) -> list[dict[str, str]]:
    """The stanzas of a repository's Packages.gz (a regular file, not a link)."""
    fd = safefile.open_regular(index, follow=False, max_size=MAX_INDEX_BYTES)
    with os.fdopen(fd, "rb") as stream:
        raw = stream.read()
    return parse_packages(decompress_index(raw, str(index)), str(index))


def pool_file(base: Path, stanza: dict[str, str], where: str) -> Path:
    """The pool file a stanza names: `pool/NAME.deb` in this repository, a regular file, not a link."""
    name = stanza.get("Filename")
    if name is None:
        raise RepositoryError(f"{where}: the stanza of {stanza.get('Package', '?')} has no Filename")
    if not POOL_NAME.fullmatch(name):
        raise RepositoryError(f"{where}: Filename {name!r} is not pool/NAME.deb: a repository's files are in its "
                              "own pool, never absolute or elsewhere")
    if (base / "pool").is_symlink():
        raise RepositoryError(f"{base / 'pool'}: the pool is a symbolic link: refused")
    return base / name


def publish(debs: list[Path], policy: Policy, out: Path) -> list[Path]:
    """Verify every package, then write one repository per conf package found; returns their paths."""
    verdicts = [verify_file(deb, policy) for deb in debs]
    refused = [v for v in verdicts if not v.ok]
    if refused:
        lines = [f"  {Path(v.path).name}: {'; '.join(v.reasons)}" for v in refused]
        raise RepositoryError(f"{len(refused)} package(s) are not countersigned and verified; nothing published\n"
                              + "\n".join(lines))
    verified = {Path(v.path): v.sha256 for v in verdicts}
    packages = [read_package(deb) for deb in debs]
    # The same package may be built for both distributions (busybox in clip/core and rm/core): the conf
    # package of a distribution pins its own.
    index = _index(packages, verified)
    confs = [p for p in packages if CONF.fullmatch(p.name)]
    if not confs:
        raise RepositoryError("no conf package (clip-core-conf, clip-apps-conf, rm-core-conf, rm-apps-conf) "
                              "among the packages: a repository is published per conf package")
    plans = []
    for conf in confs:
        dist = CONF.fullmatch(conf.name)["dist"]
        missing = [f"{n} (= {v})" for n, v in pins(conf) if (dist, n, v) not in index]
        if missing:
            raise RepositoryError(f"{conf.name} {conf.version} pins packages that are not given: "
                                  + ", ".join(missing))
        members = [conf, *(index[(dist, *pin)] for pin in pins(conf))]
        _check_names(members)
        plans.append((out / dist / conf.name, dist, members))
    written = [_write(target, dist, members, verified) for target, dist, members in plans]
    return written


def _index(packages: list[Package], verified: dict[Path, str]) -> dict[tuple[str, str, str], Package]:
    """Packages by (distribution, name, version); the same one given twice with other bytes is refused."""
    index: dict[tuple[str, str, str], Package] = {}
    for package in packages:
        key = (package.fields.get("Distribution", ""), package.name, package.version)
        if key in index and verified[index[key].path] != verified[package.path]:
            raise RepositoryError(f"{index[key].path} and {package.path} are both {package.name} {package.version} "
                                  "with different bytes: one would be left out; nothing published",
                                  hint="give each package once")
        index.setdefault(key, package)
    return index


def _check_names(members: list[Package]) -> None:
    """Two packages with one file name would share one pool file: refuse, naming both."""
    seen: dict[str, Path] = {}
    for package in members:
        name = package.path.name
        if name in seen and seen[name] != package.path:
            raise RepositoryError(f"{seen[name]} and {package.path} have the same file name: one would replace the "
                                  "other in the pool; nothing published", hint="give each package once")
        seen[name] = package.path


def _write(target: Path, dist: str, members: list[Package], verified: dict[Path, str]) -> Path:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "pool").mkdir(parents=True)
    stanzas = []
    arches = set()
    for package in sorted(members, key=lambda p: p.name):
        filename = f"pool/{package.path.name}"
        shutil.copyfile(package.path, tmp / filename)
        stanzas.append(stanza(Package(tmp / filename, package.fields), filename))
        if hashlib.sha256((tmp / filename).read_bytes()).hexdigest() != verified[package.path]:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RepositoryError(f"{package.path} changed after it was verified; {target} was not published")
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
