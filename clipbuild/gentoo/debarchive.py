"""Debian's archive as a distfiles mirror: exact pinned versions of binary and source packages.

clipbuild keeps a private apt index per suite (under the cache, never touching the machine's apt state) over
every suite of the machine's Debian sources that belongs to it: `bookworm` means bookworm, bookworm-updates
and bookworm-security, as `deb` and `deb-src`. A pin (clipbuild.gentoo.pins) names the exact version; apt is asked
for `name=version`, so a newer candidate never replaces what the Manifest pins. The machine's sources are
read from $CLIPBUILD_APT_SOURCES, else /etc/apt/sources.list.d/debian.sources, else /etc/apt/sources.list.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from clipbuild.core.errors import ClipbuildError, PinGone
from clipbuild.core.paths import cache_dir
from clipbuild.core.run import require, run
from clipbuild.gentoo.pins import Pin

DEB822_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
ONE_LINE_SOURCES = Path("/etc/apt/sources.list")
DEFAULT_SOURCES = (("http://deb.debian.org/debian", ("", "-updates")),
                   ("http://deb.debian.org/debian-security", ("-security",)))
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
INDEX_MAX_AGE = 24 * 3600  # seconds before the private index is read anew

Say = Callable[[str], None]


@dataclass(frozen=True)
class Archive:
    """The private apt index of one suite (and its -updates and -security suites)."""

    suite: str

    @property
    def state(self) -> Path:
        return cache_dir() / "apt" / self.suite

    def options(self) -> list[str]:
        state = self.state
        return ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={state / 'sources'}",
                "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
                "-o", "Acquire::Retries=3", "-q"]

    def ensure_index(self, say: Say, *, force: bool = False) -> None:
        """Write the private sources and read the index when it is missing, stale, from other sources, or
        `force`d (after a pinned file was not found: the archive may have moved on since)."""
        require("apt-get", "apt-cache")
        state = self.state
        (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (state / "sources").mkdir(exist_ok=True)
        sources, stamp = state / "sources" / "clipbuild.sources", state / "index-read"
        stanzas = sources_for(self.suite)
        if not sources.is_file() or sources.read_text(encoding="utf-8") != stanzas:
            sources.write_text(stanzas, encoding="utf-8")
            stamp.unlink(missing_ok=True)
        age = time.time() - stamp.stat().st_mtime if stamp.is_file() else None
        if force or age is None or age > INDEX_MAX_AGE:
            say(f"fetch: reading the Debian {self.suite} index (deb and deb-src)")
            run(["apt-get", *self.options(), "update"], timeout=600)
            stamp.touch()

    def offered(self, pin: Pin) -> list[str]:
        """The versions of the pin's package (binary or source, as pinned) that the index offers."""
        result = run(["apt-cache", *self.options(), "madison", pin.package], check=False)
        wanted = "Packages" if pin.kind == "binary" else "Sources"
        versions = []
        for line in result.stdout.splitlines():
            cells = [c.strip() for c in line.split("|")]
            if len(cells) == 3 and cells[0] == pin.package and cells[2].endswith(wanted) and \
                    cells[1] not in versions:
                versions.append(cells[1])
        return versions

    def download(self, pin: Pin, tmp: Path, say: Say) -> Path:
        """The pinned distfile, extracted into `tmp`; PinGone when the archive no longer has that version."""
        self.ensure_index(say)
        found = self._download(pin, tmp)
        if found is None:
            self.ensure_index(say, force=True)  # the index may be older than the archive
            found = self._download(pin, tmp)
        if found is None:
            raise PinGone(pin.package, pin.version, self.offered(pin))
        return found

    def _download(self, pin: Pin, tmp: Path) -> Path | None:
        verb = ["download"] if pin.kind == "binary" else ["source", "--download-only"]
        run(["apt-get", *self.options(), *verb, f"{pin.package}={pin.version}"], cwd=tmp, check=False,
            timeout=1800)
        if pin.kind == "binary":
            debs = sorted(tmp.glob(f"{pin.package}_*.deb"))
            return _extract_usr_src(debs[0], pin.distfile, tmp) if debs else None
        origs = [p for p in tmp.glob(f"{pin.package}_{pin.upstream_version}.orig.tar.*")
                 if not p.name.endswith(".asc")]
        return origs[0] if len(origs) == 1 else None


def _extract_usr_src(deb: Path, name: str, tmp: Path) -> Path:
    member = f"./usr/src/{name}"
    run(["sh", "-c", 'dpkg-deb --fsys-tarfile "$1" | tar -xf - "$2"', "sh", deb.name, member], cwd=tmp)
    path = tmp / member
    if not path.is_file() or path.is_symlink():
        raise ClipbuildError(f"{deb.name} has no regular file {member}")
    return path


def sources_for(suite: str) -> str:
    """deb822 stanzas (deb and deb-src) for every source of the machine that serves `suite` or one of its
    -updates/-security suites; Debian's defaults when the machine has none."""
    stanzas = []
    for uri, suites, extra in _machine_sources():
        mine = [s for s in suites if s.split("-")[0] == suite]
        if mine:
            stanzas.append(_stanza(uri, mine, extra))
    if not stanzas:
        stanzas = [_stanza(uri, [suite + s for s in tails], {}) for uri, tails in DEFAULT_SOURCES]
    return "\n".join(stanzas)


def _stanza(uri: str, suites: list[str], extra: dict[str, str]) -> str:
    fields = {"Signed-By": KEYRING, **extra}
    lines = ["Types: deb deb-src", f"URIs: {uri}", f"Suites: {' '.join(suites)}", "Components: main",
             *(f"{k}: {v}" for k, v in sorted(fields.items()))]
    return "\n".join(lines) + "\n"


def _machine_sources() -> list[tuple[str, list[str], dict[str, str]]]:
    """(URI, suites, {Signed-By/Trusted}) of the machine's Debian sources."""
    configured = os.environ.get("CLIPBUILD_APT_SOURCES")
    path = Path(configured) if configured else DEB822_SOURCES
    if path.is_file() and (configured or path == DEB822_SOURCES):
        out = []
        for para in Deb822.iter_paragraphs(path.read_text(encoding="utf-8").splitlines(), use_apt_pkg=False):
            extra = {k: para[k] for k in ("Signed-By", "Trusted") if k in para}
            for uri in para.get("URIs", "").split():
                out.append((uri, para.get("Suites", "").split(), extra))
        return out
    if ONE_LINE_SOURCES.is_file():
        return _one_line_sources(ONE_LINE_SOURCES.read_text(encoding="utf-8"))
    return []


def _one_line_sources(text: str) -> list[tuple[str, list[str], dict[str, str]]]:
    out = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[0] == "deb" and not words[1].startswith("["):
            out.append((words[1], [words[2]], {}))
    return out
