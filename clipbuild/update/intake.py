"""Taking in an update repository (a mirror's: hostile until proven otherwise), once its signed release
metadata is accepted (clipbuild.update.releasemeta):

- every repository folder under REPO is one the metadata lists, and every one it lists is there;
- each Packages.gz is a regular file read up to its signed size, never more, with the signed SHA-256;
- each stanza names `pool/NAME.deb` once, and is exactly an entry of the metadata (file, name, version, size,
  digest): a package not in the metadata, or with another size or digest, is refused;
- each pool file (a regular file, not a link, in a pool that is not a link) is copied aside, reading at most its
  signed size and hashing as it reads: a longer file is refused without reading past the size (endless data),
  and everything after (signatures, dpkg) works on the copy, which nobody else can change;
- the conf package of each repository pins exactly the other packages.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection
from pathlib import Path

from clipbuild.core import safefile
from clipbuild.core.errors import ImageError, NotAFile, RepositoryError
from clipbuild.formats.depmap import relation_names
from clipbuild.update.releasemeta import Entry, Repository, Statement
from clipbuild.update.repository import CONF, Package, decompress_index, parse_packages, pins, pool_file, read_package

CHUNK = 1 << 20


def read_repository(repo: Path, statement: Statement, scratch: Path) -> dict[str, tuple[str, str, Package,
                                                                                          tuple[Package, ...]]]:
    """Every conf repository under REPO, as (dist, part, conf package, members with the conf first), by
    `<dist>-<part>`; the packages are the copies in `scratch`."""
    found = {}
    for index in sorted(repo.glob("*/*/dists/*/main/binary-*/Packages.gz")):
        base = index.parents[4]
        if CONF.fullmatch(base.name) is None:
            continue
        name = f"{base.parent.name}/{base.name}"
        listed = statement.repositories.get(name)
        if listed is None:
            raise RepositoryError(f"{base}: this repository is not in the signed release metadata of "
                                  f"{statement.species} {statement.release}: refused (mix-and-match)")
        if index.relative_to(base).as_posix() != listed.index:
            raise RepositoryError(f"{index}: the signed release metadata lists {listed.index} for {name}")
        found[name] = (base, index, listed)
    if missing := sorted(set(statement.repositories) - set(found)):
        raise RepositoryError(f"{repo}: {missing[0]} is in the signed release metadata but not in the repository",
                              hint="copy the whole release's repository")
    parts = {}
    for name, (base, index, listed) in found.items():
        _no_links(repo, index.parent)
        match = CONF.fullmatch(base.name)
        members = _members(base, index, listed, scratch / name)
        conf = next((p for p in members if p.name == base.name), None)
        if conf is None:
            raise ImageError(f"{index}: the repository of {base.name} does not list {base.name} itself")
        _check_pinned(conf, members, str(index))
        parts[f"{match['dist']}-{match['part']}"] = (match["dist"], match["part"], conf,
                                                     (conf, *(p for p in members if p is not conf)))
    return parts


def _members(base: Path, index: Path, listed: Repository, scratch: Path) -> list[Package]:
    raw = read_signed(index, listed.index_size, listed.index_sha256)
    stanzas = _unique(parse_packages(decompress_index(raw, str(index)), str(index)), str(index))
    (scratch / "pool").mkdir(parents=True)
    members = []
    for stanza in stanzas:
        path = pool_file(base, stanza, str(index))
        entry = listed.entry(stanza["Filename"])
        said = (stanza.get("Package"), stanza.get("Version"), stanza.get("Size"), stanza.get("SHA256"))
        if entry is None or said != (entry.package, entry.version, str(entry.size), entry.sha256):
            raise RepositoryError(f"{index}: {stanza['Filename']} ({stanza.get('Package')} "
                                  f"{stanza.get('Version')}) is not the package the signed release metadata lists "
                                  "there (arbitrary package, or another release's: mix-and-match)")
        members.append(_copied(path, entry, scratch / stanza["Filename"]))
    if missing := sorted({e.filename for e in listed.packages} - {s["Filename"] for s in stanzas}):
        raise RepositoryError(f"{index}: {missing[0]} is in the signed release metadata but not in this index")
    return members


def _copied(path: Path, entry: Entry, out: Path) -> Package:
    copy_signed(path, entry.size, entry.sha256, out)
    package = read_package(out)
    if (package.name, package.version) != (entry.package, entry.version):
        raise RepositoryError(f"{path}: the package is {package.name} {package.version}, the signed release "
                              f"metadata says {entry.package} {entry.version}")
    return Package(out, package.fields)


def _open(path: Path, size: int) -> int:
    """A regular file, not a link; one bigger than `size` is refused before a byte is read."""
    try:
        return safefile.open_regular(path, follow=False, max_size=size)
    except NotAFile as exc:
        if "bytes allowed here" in str(exc):
            raise RepositoryError(f"{path}: larger than the {size} bytes the signed release metadata gives it: "
                                  "refused without reading past them (endless data)") from None
        raise


def read_signed(path: Path, size: int, sha256: str) -> bytes:
    """The file's bytes, read up to `size` and no further, with the SHA-256 `sha256`."""
    with os.fdopen(_open(path, size), "rb") as stream:
        data = stream.read(size + 1)
    _check(path, len(data), size, hashlib.sha256(data).hexdigest(), sha256)
    return data


def copy_signed(path: Path, size: int, sha256: str, out: Path) -> None:
    """The file copied to `out` (new), hashed while copied, read up to `size` and no further."""
    digest, count = hashlib.sha256(), 0
    with os.fdopen(_open(path, size), "rb") as source, out.open("xb") as target:
        while count <= size and (chunk := source.read(min(CHUNK, size + 1 - count))):
            digest.update(chunk)
            target.write(chunk)
            count += len(chunk)
    _check(path, count, size, digest.hexdigest(), sha256)


def _check(path: Path, count: int, size: int, digest: str, sha256: str) -> None:
    if count > size:
        raise RepositoryError(f"{path}: more than the {size} bytes the signed release metadata gives it (it grew "
                              "while read): refused without reading further (endless data)")
    if count != size or digest != sha256:
        raise RepositoryError(f"{path}: {count} bytes with SHA-256 {digest[:16]}..., the signed release metadata "
                              f"says {size} bytes, {sha256[:16]}...: not the file that was signed (mix-and-match "
                              "or a damaged mirror)")


def _no_links(repo: Path, path: Path) -> None:
    """Every folder between REPO and `path` is a folder of the repository, not a link to elsewhere."""
    parts = path.relative_to(repo).parts
    for depth in range(1, len(parts) + 1):
        if (folder := repo.joinpath(*parts[:depth])).is_symlink():
            raise RepositoryError(f"{folder}: a symbolic link inside the repository: refused")


def _unique(stanzas: list[dict[str, str]], where: str) -> list[dict[str, str]]:
    """A file or a package listed twice is refused: one stanza per package."""
    for key in ("Filename", "Package"):
        values = [s.get(key) for s in stanzas if s.get(key) is not None]
        if twice := sorted({v for v in values if values.count(v) > 1}):
            raise RepositoryError(f"{where}: {key} {twice[0]} is listed more than once")
    return stanzas


def _check_pinned(conf: Package, members: list[Package], where: str) -> None:
    """A repository holds its conf package and exactly the versions it pins (clipos4.md §3)."""
    pinned = set(pins(conf))
    if extra := [f"{p.name} {p.version}" for p in members if p is not conf and (p.name, p.version) not in pinned]:
        raise RepositoryError(f"{where}: {', '.join(extra)}: not pinned by {conf.name} {conf.version}; refused",
                              hint="a repository holds its conf package and exactly the versions it pins")


def undeclared_dependencies(packages: list[Package], statement: Statement,
                            installed: Collection[str] = ()) -> list[str]:
    """Each Depends or Pre-Depends of an update's package that neither a package of the signed release nor one
    the device has installed provides (extraneous dependencies: an update pulls in nothing else)."""
    listed = statement.names() | set(installed) | {name for package in packages
                                  for clause in relation_names(package.fields.get("Provides", "")) for name in clause}
    reasons = []
    for package in packages:
        for field in ("Pre-Depends", "Depends"):
            for clause in package.fields.get(field, "").split(","):
                names = [n for alternatives in relation_names(clause) for n in alternatives]
                if names and not any(n in listed for n in names):
                    reasons.append(f"{package.path.name}: {field} {clause.strip()}: no package of the signed release "
                                   f"metadata or installed provides it (extraneous dependency)")
    return reasons
