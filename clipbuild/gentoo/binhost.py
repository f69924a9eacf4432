"""A Portage binhost made of the package store, and builds that take their binpkgs from one.

`export` writes packages of the store (clipbuild.gentoo.binpkgs) into a folder in Portage's own binhost layout,
the one `FEATURES=binpkg-multi-instance` (Portage's default) gives PKGDIR and emerge --getbinpkg reads:

    Packages                    the index: a header stanza, then one stanza per binpkg (portage.getbinpkg)
    CAT/PN/PF-N.gpkg.tar        the binpkgs; N numbers the instances of one CPV (one per key)

Each stanza holds what Portage's bintree writes (CPV, PATH, SIZE, MTIME, BUILD_ID, BUILD_TIME, SLOT, USE, the
USE-evaluated dependencies, MD5 and SHA1 for Portage's own checks...) plus what clipbuild relies on: the
package's key (CLIPBUILD_KEY) and its SHA256 and BLAKE2B. Portage ignores the fields it does not know.

A build given a binhost (`clipbuild build SPECIES --binhost URL`) looks up, before emerging, each package whose
key its local store lacks: a package the index has under the same key is downloaded (bounded by the index's
SIZE, with a timeout), checked (size, SHA256, BLAKE2B, and its own CATEGORY/PF), and kept in the local store,
from which the build installs it. A package the index has only under other keys, a download that fails, or a
file whose digest is not the index's is built from source, and the build says why. An unreachable binhost is a
message, never a failure. The download runs in clipbuild's own process, outside the build root's sandbox,
whose network stays off.

Trust: the index pins every binpkg's digests, and a URL may pin the index itself (`URL#sha256=HEX`, the digest
`binhost export` prints). The index is not signed (see docs/scale-out.md): whoever controls an unpinned index
controls what a build installs from it.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import shutil
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from portage.dep import paren_enclose, use_reduce

from clipbuild.core.errors import BinhostError, ClipbuildError, InputError
from clipbuild.formats import gpkg
from clipbuild.gentoo import binpkgs
from clipbuild.gentoo.fetch import TOO_LARGE, digest_file, download

INDEX = "Packages"
KEY_FIELD = "CLIPBUILD_KEY"
VERIFIED = ("SHA256", "BLAKE2B")  # what clipbuild checks a download against
PORTAGE_DIGESTS = ("MD5", "SHA1")  # what Portage's own client checks (bintree._pkgindex_hashes)
HASHES = {"MD5": hashlib.md5, "SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "BLAKE2B": hashlib.blake2b}
INDEX_LIMIT = 64 << 20
BINPKG_LIMIT = 4 << 30
TIMEOUT = 30.0  # seconds any one read from the binhost may wait
# Metadata of the binpkg that Portage's bintree copies into its index (dbapi/bintree.py, bindbapi._aux_cache_keys
# less the digests and sizes it computes itself); dependencies are written USE-evaluated, as Portage does.
METADATA_KEYS = ("BDEPEND", "BUILD_ID", "BUILD_TIME", "CHOST", "DEFINED_PHASES", "DEPEND", "EAPI", "IDEPEND",
                 "IUSE", "KEYWORDS", "LICENSE", "PDEPEND", "PROPERTIES", "PROVIDES", "RDEPEND", "REQUIRES",
                 "RESTRICT", "SLOT", "USE")
USE_EVALUATED = ("BDEPEND", "DEPEND", "IDEPEND", "LICENSE", "RDEPEND", "PDEPEND", "PROPERTIES", "RESTRICT")
Say = Callable[[str], None]


# -- the index ------------------------------------------------------------------------------------------------


@dataclass
class Index:
    """A Packages file: the header, and one dict per binpkg, keys as written (MTIME, REPO...)."""

    header: dict[str, str] = field(default_factory=dict)
    packages: list[dict[str, str]] = field(default_factory=list)

    def by_key(self) -> dict[str, dict[str, str]]:
        return {p[KEY_FIELD]: p for p in self.packages if p.get(KEY_FIELD)}

    def render(self) -> str:
        """The file's text, as portage.getbinpkg.PackageIndex writes it: stanzas of sorted `KEY: value` lines,
        empty values left out, the packages by CPV."""
        header = {**self.header, "PACKAGES": str(len(self.packages)), "VERSION": self.header.get("VERSION", "0")}
        stanzas = [header, *sorted(self.packages, key=lambda p: (p["CPV"], p.get("PATH", "")))]
        return "".join("".join(f"{k}: {v}\n" for k, v in sorted(s.items()) if v) + "\n" for s in stanzas)


def parse_index(text: str, where: str) -> Index:
    """A Packages file's stanzas (every field kept); a stanza without CPV is skipped, as Portage does."""
    stanzas: list[dict[str, str]] = [{}]
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if stanzas[-1]:
                stanzas.append({})
            continue
        name, colon, value = line.partition(":")
        if not colon or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise BinhostError(f"{where}:{number}: not a Packages index line: {line[:80]!r}")
        stanzas[-1][name] = value.strip()
    header, *packages = [s for s in stanzas if s] or [{}]
    return Index(header, [p for p in packages if p.get("CPV")])


# -- export ---------------------------------------------------------------------------------------------------


@dataclass
class Exported:
    folder: Path
    written: list[str]  # binpkgs copied by this export
    kept: list[str]  # binpkgs already there with the right digests
    packages: int  # stanzas in the index
    index_sha256: str
    index_changed: bool


def export(folder: Path, keys: Iterable[str], say: Say = lambda message: None,
           header: dict[str, str] | None = None) -> Exported:
    """Write the store's packages `keys` into `folder` as a binhost; packages already exported stay (an
    export only adds). Every file is written under a temporary name and renamed; a binpkg already there with
    the index's digests is not copied again, and an index that would not change is not rewritten. `header`: more
    fields for the index's header (CLIPBUILD_OBJECTS: the step objects' index digest, clipbuild.gentoo.stepobjects)."""
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / INDEX
    old_text = index_path.read_text() if index_path.is_file() else ""
    index = parse_index(old_text, str(index_path))
    index.header.update(header or {})
    present = index.by_key()
    written, kept = [], []
    for key in keys:
        found = binpkgs.stored(key)
        if found is None:
            raise BinhostError(f"the package store has no package under key {key}", hint="build it first")
        pkg, binpkg = found
        entry = present.get(key)
        if entry is not None and _intact(folder, entry):
            kept.append(entry["PATH"])
            continue
        if entry is not None:
            index.packages.remove(entry)
        entry = _copy_in(folder, pkg, binpkg, index)
        index.packages.append(entry)
        present[key] = entry
        written.append(entry["PATH"])
        say(f"exported {pkg.cpv} ({key[:16]}) as {entry['PATH']}")
    text = index.render()
    changed = _without_timestamp(text) != _without_timestamp(old_text)
    if changed:
        index.header["TIMESTAMP"] = str(int(time.time()))
        text = index.render()
        write_atomically(index_path, text.encode())
    else:
        text = old_text
    return Exported(folder, written, kept, len(index.packages), hashlib.sha256(text.encode()).hexdigest(), changed)


def _without_timestamp(text: str) -> str:
    return re.sub(r"^TIMESTAMP: .*\n", "", text, count=1, flags=re.M)


def _intact(folder: Path, entry: dict[str, str]) -> bool:
    path = folder / entry.get("PATH", "")
    if not entry.get("PATH") or not path.is_file() or str(path.stat().st_size) != entry.get("SIZE"):
        return False
    digests = digest_file(path, VERIFIED, HASHES)
    return all(digests[name] == entry.get(name) for name in VERIFIED)


def _copy_in(folder: Path, pkg: binpkgs.PackageKey, binpkg: Path, index: Index) -> dict[str, str]:
    """Copy one binpkg into the binhost under the next free instance number of its CPV; its index stanza."""
    pn = binpkgs.pn_of(pkg.cpv)
    taken = {p.get("PATH") for p in index.packages if p["CPV"] == pkg.cpv}
    number = 1
    while f"{pkg.category}/{pn}/{pkg.pf}-{number}.gpkg.tar" in taken:
        number += 1
    relative = f"{pkg.category}/{pn}/{pkg.pf}-{number}.gpkg.tar"
    target = folder / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copy2(binpkg, tmp)
    os.replace(tmp, target)
    return {**stanza(pkg.cpv, gpkg.read_metadata(target).metadata, target), "PATH": relative, KEY_FIELD: pkg.key}


def stanza(cpv: str, metadata: dict[str, str], path: Path) -> dict[str, str]:
    """The index stanza Portage's bintree writes for a binpkg (its metadata, size, mtime, digests)."""
    use = metadata.get("USE", "").split()
    entry = {k: metadata[k] for k in METADATA_KEYS if metadata.get(k)}
    for name in USE_EVALUATED:
        if entry.get(name):
            entry[name] = paren_enclose(use_reduce(entry[name], uselist=use))
    digests = digest_file(path, [*PORTAGE_DIGESTS, *VERIFIED], HASHES)
    return {**entry, **digests, "CPV": cpv, "SIZE": str(path.stat().st_size),
            "MTIME": str(int(path.stat().st_mtime)), "REPO": metadata.get("repository", "")}


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- serving (tests, benchmarks, trying it out) ---------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        """No line per request."""


@contextmanager
def served(folder: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """`folder` served over HTTP (Python's http.server, a thread per request) while the block runs; yields its
    URL. For tests, benchmarks and `clipbuild binhost serve`; a team serves its binhost with a real web server."""
    server = http.server.ThreadingHTTPServer((host, port), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)  # ends with the process, come what may
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# -- builds taking their packages from a binhost --------------------------------------------------------------


class Unreachable(BinhostError):
    """The binhost did not answer: the rest of the build does without it."""


@dataclass(frozen=True)
class Remote:
    """A binhost: its base URL (http, https or file) and, when pinned, its index's SHA-256."""

    base: str
    pin: str = ""

    @classmethod
    def parse(cls, spec: str) -> Remote:
        """`URL`, `URL#sha256=HEX` or a folder; raises InputError on anything else."""
        location, _, fragment = spec.partition("#")
        if fragment and not re.fullmatch(r"sha256=[0-9a-f]{64}", fragment):
            raise InputError(f"binhost {spec}: '#{fragment}' is not an index pin (#sha256=<64 hex digits>)")
        if "://" not in location:
            location = Path(location).resolve().as_uri()
        elif urllib.parse.urlsplit(location).scheme not in ("http", "https", "file"):
            raise InputError(f"binhost {spec}: only http://, https://, file:// URLs and folders are binhosts")
        return cls(location.rstrip("/") + "/", fragment.removeprefix("sha256="))

    def url(self, relative: str) -> str:
        return self.base + urllib.parse.quote(relative)


def read_index(remote: Remote, scratch: Path) -> Index:
    """The binhost's index, downloaded (bounded, with a timeout) and checked against its pin."""
    data = read_small(remote, INDEX, scratch, "its index")
    actual = hashlib.sha256(data).hexdigest()
    if remote.pin and actual != remote.pin:
        raise BinhostError(f"binhost {remote.base}: its index has SHA-256 {actual}, the URL pins {remote.pin}")
    try:
        return parse_index(data.decode(), remote.url(INDEX))
    except UnicodeDecodeError:
        raise BinhostError(f"binhost {remote.base}: its index is not UTF-8 text") from None


def read_small(remote: Remote, path: str, scratch: Path, what: str) -> bytes:
    """A small file of the binhost (an index: at most INDEX_LIMIT bytes), downloaded with a timeout."""
    target = scratch / Path(path).name
    problem = download(remote.url(path), target, INDEX_LIMIT, TIMEOUT)
    if problem:
        raise Unreachable(f"binhost {remote.base}: {what}: {problem}")
    return target.read_bytes()


@dataclass
class Pulled:
    """What a build asked of a binhost, package by package (CPVs)."""

    binhost: str
    fetched: list[str] = field(default_factory=list)  # downloaded, verified, in the local store now
    refused: dict[str, str] = field(default_factory=dict)  # in the index, but not what it says: built instead
    other_keys: dict[str, str] = field(default_factory=dict)  # in the index under other keys only: built
    unreachable: str = ""  # why the binhost was not used (for some or all packages)

    def why_not(self, cpv: str) -> str:
        """Why a package wanted from the binhost is built here instead ("" when the binhost has no such CPV)."""
        return self.refused.get(cpv) or self.other_keys.get(cpv) or (
            f"binhost unreachable ({self.unreachable})" if self.unreachable else "")


def pull(plan: Iterable[binpkgs.PackageKey], remote: Remote, scratch: Path, say: Say) -> Pulled:
    """Fetch into the local store every package of `plan` it lacks and the binhost has under the same key."""
    pulled = Pulled(remote.base)
    wanted = [pkg for pkg in plan if binpkgs.lookup(pkg) is None]
    if not wanted:
        return pulled
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        index = read_index(remote, scratch)
    except BinhostError as exc:
        pulled.unreachable = str(exc)
        say(f"{exc}: every package missing from the local store is built here")
        return pulled
    by_key = index.by_key()
    for pkg in wanted:
        entry = by_key.get(pkg.key)
        if entry is None:
            others = [p for p in index.packages if p["CPV"] == pkg.cpv]
            if others:
                pulled.other_keys[pkg.cpv] = f"the binhost has it only under {len(others)} other key(s): a rebuild"
            continue
        try:
            take(remote, pkg, entry, scratch)
        except Unreachable as exc:
            pulled.unreachable = str(exc)
            say(f"{exc}: the remaining packages are built here")
            break
        except BinhostError as exc:
            pulled.refused[pkg.cpv] = f"binhost copy refused: {exc}"
            say(f"refused {exc}; it is built here instead")
            continue
        pulled.fetched.append(pkg.cpv)
        say(f"fetched {pkg.cpv} from the binhost ({int(entry['SIZE']):,} bytes, SHA256 and BLAKE2B verified)")
    return pulled


_NAME = r"[A-Za-z0-9_+][A-Za-z0-9_.+-]*"
_PATH = re.compile(rf"{_NAME}/{_NAME}/{_NAME}\.gpkg\.tar")  # CAT/PN/PF-N.gpkg.tar: no '..', nothing absolute


def take(remote: Remote, pkg: binpkgs.PackageKey, entry: dict[str, str], scratch: Path) -> Path:
    """Download one binpkg the index lists under the package's key, check it, keep it in the local store."""
    path, size = entry.get("PATH", ""), entry.get("SIZE", "")
    if not _PATH.fullmatch(path) or not size.isdigit() or int(size) > BINPKG_LIMIT:
        raise BinhostError(f"{pkg.cpv}: the index's PATH {path!r} or SIZE {size!r} is not acceptable")
    if missing := [name for name in VERIFIED if not re.fullmatch(r"[0-9a-f]+", entry.get(name, ""))]:
        raise BinhostError(f"{pkg.cpv}: the index gives no {' or '.join(missing)} for it")
    target = scratch / f"{pkg.key}.gpkg.tar"
    try:
        download_verified(remote, path, int(size), {name: entry[name] for name in VERIFIED}, target, pkg.cpv)
        _check_package(pkg, target, remote.url(path))
        return binpkgs.keep(pkg, target)
    finally:
        target.unlink(missing_ok=True)


def download_verified(remote: Remote, path: str, size: int, digests: dict[str, str], target: Path,
                      what: str) -> None:
    """Download the binhost's `path` into `target`, bounded by `size` and with a timeout, and check its size and
    `digests` (names of HASHES -> hex); raises Unreachable when the binhost does not answer, BinhostError naming
    `what`, the URL and the digest when the file is not the one expected."""
    url = remote.url(path)
    problem = download(url, target, size, TIMEOUT)
    if problem and problem != TOO_LARGE:
        raise (Unreachable if problem.startswith("cannot reach") else BinhostError)(f"{what}: {url}: {problem}")
    if target.stat().st_size != size:
        raise BinhostError(f"{what}: {url}: {'more than' if problem else 'size'} {target.stat().st_size} bytes, "
                           f"the index says {size}")
    actual = digest_file(target, digests, HASHES)
    for name, expected in digests.items():
        if actual[name] != expected:
            raise BinhostError(f"{what}: {url}: {name} {actual[name]}, the index says {expected}")


def _check_package(pkg: binpkgs.PackageKey, binpkg: Path, url: str) -> None:
    """The binpkg is the package it is fetched as (its own CATEGORY and PF), not another one."""
    try:
        found = gpkg.read_metadata(binpkg).cpv
    except (ClipbuildError, tarfile.TarError, KeyError, OSError) as exc:
        raise BinhostError(f"{pkg.cpv}: {url}: not a readable gpkg ({exc})") from None
    if found != pkg.cpv:
        raise BinhostError(f"{pkg.cpv}: {url}: the binpkg is {found}")
