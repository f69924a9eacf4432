"""Distfiles: fetched once from the profile's mirrors, verified against the overlay's Manifests, stored by name
under ~/.cache/clipbuild/distfiles. Builds only ever read this store, with the network off.

Mirrors, tried in the order the profile lists them (`sources.mirrors`), every failure kept with its reason:
- `dir:PATH` (or an absolute path): a local folder of distfiles by name;
- `http://HOST/PATH/`, `https://...`: a team mirror, a folder of distfiles by name served over HTTP (what
  `clipbuild distfiles mirror` writes), as Gentoo's distfiles mirrors;
- `debian:SUITE`: Debian's archive, SUITE with its -updates and -security suites as the machine's apt sources
  give them, at the exact version the package's `Pins` file names (clipbuild.gentoo.pins, clipbuild.gentoo.debarchive).
  `debian-source:SUITE` and `debian-binary:SUITE` are older spellings of the same.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipbuild.core import safefile
from clipbuild.core.errors import ClipbuildError, FetchError, InputError, PinGone
from clipbuild.core.paths import cache_dir
from clipbuild.gentoo.debarchive import Archive, Say
from clipbuild.gentoo.pins import Pin, read_pins

HASHES = {"BLAKE2B": hashlib.blake2b, "SHA512": hashlib.sha512, "SHA256": hashlib.sha256}
DEBIAN_KINDS = ("debian", "debian-source", "debian-binary")
HTTP_TIMEOUT = 60
ORIGINS = ".origins.json"  # in the store: which mirror each distfile came from


@dataclass(frozen=True)
class Distfile:
    name: str
    size: int
    hashes: dict[str, str]
    manifest: str  # the Manifest line that declares it (FILE:LINE), for messages
    package: str = ""  # CATEGORY/PN of the package whose Manifest declares it
    pin: Pin | None = None

    def verify(self, path: Path) -> str | None:
        """None when `path` matches the Manifest entry; otherwise what is wrong."""
        size = path.stat().st_size
        if size != self.size:
            return f"size {size}, Manifest says {self.size}"
        digests = digest_file(path, [n for n in self.hashes if n in HASHES])
        if not digests:
            return "the Manifest gives no hash clipbuild knows (BLAKE2B, SHA512, SHA256)"
        for name, value in digests.items():
            if value != self.hashes[name].lower():
                return f"{name} {value[:16]}..., Manifest says {self.hashes[name][:16]}..."
        return None


def digest_file(path: Path, names: Iterable[str], hashes: Mapping[str, Callable[[], Any]] = HASHES) -> dict[str, str]:
    """The digests `names` of a file (read once), each a function of `hashes`."""
    digests = {name: hashes[name]() for name in names}
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def read_manifests(overlay: Path) -> dict[str, Distfile]:
    """Every DIST entry of every Manifest in the overlay, by distfile name, with its Debian pin if any. Several
    packages may declare one distfile with the same digests (the kernel's tarball: sys-kernel/clip-kernel and
    sys-kernel/linux-headers); the entry kept is the one of the package whose Pins file pins it."""
    pins = read_pins(overlay)
    found: dict[str, Distfile] = {}
    declared: dict[str, set[str]] = {}
    for manifest in sorted(overlay.glob("*/*/Manifest")):
        shown = str(manifest.relative_to(overlay.parent))
        package = manifest.parent.relative_to(overlay).as_posix()
        for number, line in enumerate(manifest.read_text().splitlines(), 1):
            words = line.split()
            if not words or words[0] != "DIST":
                continue
            if len(words) < 5 or len(words) % 2 == 0 or not words[2].isdigit():
                raise InputError(f"{shown}:{number}: malformed DIST line (DIST NAME SIZE HASH VALUE ...)")
            entry = Distfile(words[1], int(words[2]), dict(zip(words[3::2], words[4::2], strict=True)),
                             f"{shown}:{number}", package, pins.get(words[1]))
            if words[1] in found and found[words[1]].hashes != entry.hashes:
                raise InputError(f"{shown}:{number}: {words[1]} has other digests in {found[words[1]].manifest}")
            declared.setdefault(words[1], set()).add(package)
            if words[1] not in found or (entry.pin is not None and entry.pin.owner == package):
                found[words[1]] = entry
    for name, pin in pins.items():
        if pin.owner not in declared.get(name, ()):
            raise InputError(f"{pin.where}: {name} is pinned but its package's Manifest has no DIST line for it")
    return found


def store_dir() -> Path:
    return cache_dir() / "distfiles"


def state_of(dist: Distfile) -> str:
    """'present', 'missing' or 'wrong content: ...' for the store's copy of `dist`."""
    path = store_dir() / dist.name
    if not path.is_file():
        return "missing"
    problem = dist.verify(path)
    return f"wrong content: {problem}" if problem else "present"


def missing_or_bad(distfiles: Iterable[Distfile]) -> list[tuple[Distfile, str]]:
    """Distfiles the store lacks or holds with the wrong content."""
    return [(dist, state) for dist in distfiles if (state := state_of(dist)) != "present"]


def origins() -> dict[str, str]:
    """Which mirror each stored distfile was fetched from."""
    try:
        data = json.loads((store_dir() / ORIGINS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _record_origin(name: str, mirror: str) -> None:
    data = origins()
    data[name] = mirror
    safefile.write_atomic(store_dir() / ORIGINS, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def fetch(distfiles: Iterable[Distfile], mirrors: Iterable[str], project_root: Path, say: Say = print) -> list[str]:
    """Bring every distfile into the store, verified; returns the names fetched now. Raises FetchError naming
    each distfile that no mirror could provide, and why."""
    store = store_dir()
    store.mkdir(parents=True, exist_ok=True)
    fetched: list[str] = []
    failures: list[tuple[Distfile, list[str]]] = []
    gone: list[tuple[Distfile, PinGone]] = []
    mirrors = list(mirrors)
    for dist, state in missing_or_bad(distfiles):
        attempts = [f"store: {state}"]
        for mirror in mirrors:
            try:
                problem = _try_mirror(dist, mirror, project_root, store, say)
            except PinGone as exc:
                gone.append((dist, exc))
                problem = str(exc)
            if problem is None:
                fetched.append(dist.name)
                break
            attempts.append(f"{mirror}: {problem}")
        else:
            failures.append((dist, attempts))
    if failures:
        raise _fetch_error(failures, [(d, e) for d, e in gone if any(d is f for f, _ in failures)])
    return fetched


def _fetch_error(failures: list[tuple[Distfile, list[str]]], gone: list[tuple[Distfile, PinGone]]) -> FetchError:
    """Each distfile with what every mirror said, then each pin Debian no longer offers and how to move it."""
    detail = []
    for dist, attempts in failures:
        detail.append(f"  {dist.name} ({dist.manifest}):")
        detail += [f"      {a}" for a in attempts]
    for dist, exc in gone:
        pin = f"{dist.pin} ({dist.pin.where})" if dist.pin else "a version"
        detail.append(f"  {dist.name} is pinned to {pin}, which Debian no longer offers; it offers "
                      f"{', '.join(exc.offered) or 'no version'}")
    packages = sorted({d.package for d, _ in gone})
    hints = [f"move the pin with: clipbuild distfiles pin {package}" for package in packages]
    return FetchError("could not fetch " + ", ".join(d.name for d, _ in failures), detail=detail, hint=hints,
                      pin_gone=bool(gone))


def _try_mirror(dist: Distfile, mirror: str, project_root: Path, store: Path, say: Say) -> str | None:
    with tempfile.TemporaryDirectory(dir=store, prefix=".fetch-") as tmp:
        got, problem = _from_mirror(dist, mirror, project_root, Path(tmp), say)
        if got is None:
            return problem
        problem = dist.verify(got)
        if problem:
            return f"wrong content: {problem}"
        got.replace(store / dist.name)
        _record_origin(dist.name, mirror)
        say(f"fetch: {dist.name} from {mirror} (verified)")
        return None


def _from_mirror(dist: Distfile, mirror: str, project_root: Path, tmp: Path, say: Say) -> tuple[Path | None, str]:
    """The distfile as `mirror` gives it, in `tmp`; or None and why not."""
    kind, _, where = mirror.partition(":")
    if mirror.startswith("/"):
        kind, where = "dir", mirror
    if kind == "dir":
        candidate = (project_root / where) / dist.name
        if not candidate.is_file():
            return None, "not there"
        shutil.copyfile(candidate, tmp / dist.name)
        return tmp / dist.name, ""
    if kind in ("http", "https"):
        return _from_http(dist, mirror, tmp)
    if kind in DEBIAN_KINDS:
        if dist.pin is None:
            return None, f"no Debian pin for it (add a DEBIAN line to {dist.package}/Pins)"
        return Archive(where).download(dist.pin, tmp, say), ""
    return None, f"unknown mirror kind '{kind}'"


def _from_http(dist: Distfile, base: str, tmp: Path) -> tuple[Path | None, str]:
    target = tmp / dist.name
    problem = download(base.rstrip("/") + "/" + urllib.request.quote(dist.name), target, dist.size)
    if problem == TOO_LARGE:
        return None, f"wrong content: larger than the {dist.size} bytes the Manifest says"
    return (None, problem) if problem else (target, "")


TOO_LARGE = "larger than expected"


def download(url: str, target: Path, limit: int, timeout: float = HTTP_TIMEOUT) -> str:
    """GET `url` (http, https or file) into `target`, reading at most one byte past `limit`, each read waiting
    at most `timeout` seconds. "" when done; otherwise what went wrong (TOO_LARGE past `limit`)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
            left = limit + 1
            while left > 0 and (chunk := response.read(min(1 << 20, left))):
                out.write(chunk)
                left -= len(chunk)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        return f"cannot reach it ({getattr(exc, 'reason', exc)})"
    return TOO_LARGE if target.stat().st_size > limit else ""


def copy_to_mirror(distfiles: Iterable[Distfile], folder: Path) -> list[str]:
    """Copy every (already fetched and verified) distfile into `folder`, each under a temporary name first;
    returns the names written. A copy already there with the right content is kept."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for dist in distfiles:
        target = folder / dist.name
        if target.is_file() and dist.verify(target) is None:
            continue
        tmp = folder / f".{dist.name}.tmp"
        shutil.copyfile(store_dir() / dist.name, tmp)
        if problem := dist.verify(tmp):
            tmp.unlink()
            raise ClipbuildError(f"{dist.name} changed while being copied to {folder}: {problem}")
        tmp.replace(target)
        written.append(dist.name)
    return written
