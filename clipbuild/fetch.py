"""Distfiles: fetched once from the profile's mirrors, verified against the overlay's Manifests, stored by name
under ~/.cache/clipbuild/distfiles. Builds only ever read this store, with the network off.

Mirrors, tried in the order the profile lists them (`sources.mirrors`):
- `dir:PATH` (or an absolute path): a local directory holding distfiles by name;
- `debian-source:SUITE`: Debian's source archive, the practical upstream on machines that only reach Debian's
  archive. A distfile NAME-VERSION.tar.EXT is the `.orig` tarball of the Debian source package NAME, which is
  the unmodified upstream release (same bytes, so the Manifest keeps upstream's name and digests).
- `debian-binary:SUITE`: a file shipped under /usr/src by a Debian binary package of the same name: the
  distfile linux-source-6.1.tar.xz is /usr/src/linux-source-6.1.tar.xz of the package linux-source-6.1.
  Debian replaces such packages with each update, so the Manifest pins one build of it; keep a copy in a
  `dir:` mirror to survive the next update.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from clipbuild.buildroot import cache_dir
from clipbuild.errors import ClipbuildError, InputError
from clipbuild.run import require, run

HASHES = {"BLAKE2B": hashlib.blake2b, "SHA512": hashlib.sha512, "SHA256": hashlib.sha256}
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_DEBIAN_URI = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
_UPSTREAM = re.compile(r"(?P<name>[A-Za-z0-9+_.-]+?)-(?P<version>\d[A-Za-z0-9.+~_]*)\.(?P<ext>tar\.(?:gz|bz2|xz|zst))")


class FetchError(ClipbuildError):
    """A distfile could not be fetched or verified."""


@dataclass(frozen=True)
class Distfile:
    name: str
    size: int
    hashes: dict[str, str]
    manifest: str  # the Manifest that declares it, for messages

    def verify(self, path: Path) -> str | None:
        """None when `path` matches the Manifest entry; otherwise what is wrong."""
        size = path.stat().st_size
        if size != self.size:
            return f"size {size}, Manifest says {self.size}"
        digests = {name: HASHES[name]() for name in self.hashes if name in HASHES}
        if not digests:
            return "the Manifest gives no hash clipbuild knows (BLAKE2B, SHA512, SHA256)"
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                for digest in digests.values():
                    digest.update(chunk)
        for name, digest in digests.items():
            if digest.hexdigest() != self.hashes[name].lower():
                return f"{name} {digest.hexdigest()[:16]}..., Manifest says {self.hashes[name][:16]}..."
        return None


def read_manifests(overlay: Path) -> dict[str, Distfile]:
    """Every DIST entry of every Manifest in the overlay, by distfile name."""
    found: dict[str, Distfile] = {}
    for manifest in sorted(overlay.glob("*/*/Manifest")):
        shown = str(manifest.relative_to(overlay.parent))
        for number, line in enumerate(manifest.read_text().splitlines(), 1):
            words = line.split()
            if not words or words[0] != "DIST":
                continue
            if len(words) < 5 or len(words) % 2 == 0 or not words[2].isdigit():
                raise InputError(f"{shown}:{number}: malformed DIST line (DIST NAME SIZE HASH VALUE ...)")
            entry = Distfile(words[1], int(words[2]), dict(zip(words[3::2], words[4::2], strict=True)),
                             f"{shown}:{number}")
            if words[1] in found and found[words[1]].hashes != entry.hashes:
                raise InputError(f"{shown}:{number}: {words[1]} has other digests in {found[words[1]].manifest}")
            found[words[1]] = entry
    return found


def store_dir() -> Path:
    return cache_dir() / "distfiles"


def missing_or_bad(distfiles: Iterable[Distfile]) -> list[tuple[Distfile, str]]:
    """Distfiles the store lacks or holds with the wrong content."""
    out = []
    for dist in distfiles:
        path = store_dir() / dist.name
        if not path.is_file():
            out.append((dist, "missing"))
        elif problem := dist.verify(path):
            out.append((dist, f"wrong content: {problem}"))
    return out


Say = Callable[[str], None]


def fetch(distfiles: Iterable[Distfile], mirrors: Iterable[str], project_root: Path, say: Say = print) -> list[str]:
    """Bring every distfile into the store, verified; returns the names fetched now. Raises FetchError naming
    each distfile that no mirror could provide, and why."""
    store = store_dir()
    store.mkdir(parents=True, exist_ok=True)
    fetched, failures = [], []
    mirrors = list(mirrors)
    for dist, state in missing_or_bad(distfiles):
        attempts = [f"store: {state}"]
        for mirror in mirrors:
            problem = _try_mirror(dist, mirror, project_root, store, say)
            if problem is None:
                fetched.append(dist.name)
                break
            attempts.append(f"{mirror}: {problem}")
        else:
            failures.append((dist, attempts))
    if failures:
        lines = []
        for dist, attempts in failures:
            lines.append(f"{dist.name} ({dist.manifest}):")
            lines += [f"    {a}" for a in attempts]
        raise FetchError("could not fetch " + ", ".join(d.name for d, _ in failures) + "\n  " + "\n  ".join(lines))
    return fetched


def _try_mirror(dist: Distfile, mirror: str, project_root: Path, store: Path, say: Say) -> str | None:
    with tempfile.TemporaryDirectory(dir=store, prefix=".fetch-") as tmp:
        kind, _, where = mirror.partition(":")
        if mirror.startswith("/"):
            kind, where = "dir", mirror
        if kind == "dir":
            candidate = (project_root / where) / dist.name
            if not candidate.is_file():
                return "not there"
            shutil.copyfile(candidate, Path(tmp) / dist.name)
        elif kind in ("debian-source", "debian-binary"):
            fetcher = _from_debian_source if kind == "debian-source" else _from_debian_binary
            problem = fetcher(dist, where, Path(tmp), say)
            if problem:
                return problem
        else:
            return f"unknown mirror kind '{kind}'"
        problem = dist.verify(Path(tmp) / dist.name)
        if problem:
            return f"wrong content: {problem}"
        (Path(tmp) / dist.name).replace(store / dist.name)
        say(f"fetch: {dist.name} from {mirror} (verified)")
        return None


def _debian_stanzas(suite: str, types: str) -> str:
    """The machine's own Debian sources for `suite` (and its -updates and -security suites), as `types`;
    Debian's defaults where the machine has none."""
    stanzas = []
    if DEBIAN_SOURCES.is_file():
        for paragraph in Deb822.iter_paragraphs(DEBIAN_SOURCES.read_text().splitlines(), use_apt_pkg=False):
            suites = [s for s in paragraph.get("Suites", "").split() if s.split("-")[0] == suite]
            if types == "deb-src":
                suites = [s for s in suites if s == suite]
            if suites and paragraph.get("URIs"):
                stanzas.append(f"Types: {types}\nURIs: {paragraph['URIs']}\nSuites: {' '.join(suites)}\n"
                               f"Components: main\nSigned-By: {KEYRING}\n")
    if not stanzas:
        suites = suite if types == "deb-src" else f"{suite} {suite}-updates"
        stanzas.append(f"Types: {types}\nURIs: {DEFAULT_DEBIAN_URI}\nSuites: {suites}\nComponents: main\n"
                       f"Signed-By: {KEYRING}\n")
    return "\n".join(stanzas)


def _apt_options(suite: str, types: str, say: Say) -> list[str]:
    """apt-get options for a private index of Debian's `types` (deb or deb-src) for `suite` (and its updates)."""
    require("apt-get")
    state = cache_dir() / f"apt-{types}" / suite
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "sources").mkdir(exist_ok=True)
    sources = state / "sources" / "clipbuild.sources"
    stanzas = _debian_stanzas(suite, types)
    if not sources.is_file() or sources.read_text() != stanzas:
        sources.write_text(stanzas)
        for old in (state / "lists").glob("*_*"):  # another set of sources: read the indexes anew
            old.unlink()
    options = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={state / 'sources'}",
               "-o", f"Dir::State::Lists={state / 'lists'}", "-o", "Dir::Cache=" + str(state / "cache"),
               "-o", "Acquire::Retries=3", "-q"]
    if not any((state / "lists").glob("*_Packages*" if types == "deb" else "*Sources*")):
        say(f"fetch: reading Debian {suite} {types} index")
        run(["apt-get", *options, "update"], timeout=600)
    return options


def _from_debian_binary(dist: Distfile, suite: str, tmp: Path, say: Say) -> str | None:
    package = dist.name.split(".tar.")[0]
    options = _apt_options(suite, "deb", say)
    result = run(["apt-get", *options, "download", package], cwd=tmp, check=False, timeout=1800)
    debs = sorted(tmp.glob(f"{package}_*.deb"))
    if not debs:
        return f"Debian {suite} has no binary package {package} ({result.stderr.strip()[-200:]})"
    member = f"./usr/src/{dist.name}"
    run(["sh", "-c", f"dpkg-deb --fsys-tarfile {debs[0].name} | tar -xf - {member}"], cwd=tmp)
    (tmp / member).rename(tmp / dist.name)
    say(f"fetch: {dist.name} from {debs[0].name}")
    return None


def _from_debian_source(dist: Distfile, suite: str, tmp: Path, say: Say) -> str | None:
    match = _UPSTREAM.fullmatch(dist.name)
    if not match:
        return "not NAME-VERSION.tar.*, so no Debian source package to map it to"
    options = _apt_options(suite, "deb-src", say)
    name, version, ext = match["name"], match["version"], match["ext"]
    result = run(["apt-get", *options, "source", "--download-only", name], cwd=tmp, check=False, timeout=1800)
    orig = tmp / f"{name}_{version}.orig.{ext}"
    if not orig.is_file():
        offered = sorted(p.name for p in tmp.glob("*.orig.*")) or [result.stderr.strip()[-200:] or "nothing"]
        return f"Debian {suite} has no {orig.name} (it offers {', '.join(offered)})"
    orig.rename(tmp / dist.name)
    return None
