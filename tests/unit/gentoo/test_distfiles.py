"""Pinned distfiles that stay reachable: exact Debian versions from a real local apt archive (apt-ftparchive,
file: URI), the pin-gone error and `distfiles pin`, HTTP team mirrors on 127.0.0.1, `distfiles mirror` and
`distfiles list`. apt, dpkg-deb and apt-ftparchive are the real tools; only the archive is ours."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import shutil
import tarfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipbuild.core import errors
from clipbuild.core.errors import InputError
from clipbuild.core.run import run
from clipbuild.gentoo import fetch, pinmove
from clipbuild.gentoo.debarchive import Archive, sources_for
from clipbuild.gentoo.pins import read_pins
from tests.conftest import ROOT

SUITE = "clipsuite"
DIST = "clip-src-1.0.tar.gz"


def _payload(version: str) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.GNU_FORMAT) as tar:
        data = f"upstream tree, Debian build {version}\n".encode()
        info = tarfile.TarInfo("clip-src/README")
        info.size, info.mtime = len(data), 1700000000
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _manifest_line(name: str, data: bytes) -> str:
    return (f"DIST {name} {len(data)} BLAKE2B {hashlib.blake2b(data).hexdigest()} "
            f"SHA512 {hashlib.sha512(data).hexdigest()}")


def _deb(pool: Path, version: str) -> None:
    tree = pool.parent / "trees" / version
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr" / "src").mkdir(parents=True)
    (tree / "usr" / "src" / DIST).write_bytes(_payload(version))
    (tree / "DEBIAN" / "control").write_text(textwrap.dedent(f"""\
        Package: clip-src
        Version: {version}
        Architecture: all
        Maintainer: clipbuild tests <tests@clipbuild.invalid>
        Description: a source tree shipped under /usr/src, as linux-source-6.1 does
        """))
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, pool / f"clip-src_{version}_all.deb"])


def make_archive(root: Path, versions: list[str]) -> Path:
    """A Debian archive at `root` offering clip-src at `versions`; returns the apt sources file for it."""
    for old in root.glob("pool/*.deb"):
        old.unlink()
    pool = root / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    for version in versions:
        _deb(pool, version)
    binary = root / "dists" / SUITE / "main" / "binary-amd64"
    source = root / "dists" / SUITE / "main" / "source"
    binary.mkdir(parents=True, exist_ok=True)
    source.mkdir(parents=True, exist_ok=True)
    packages = run(["apt-ftparchive", "packages", "pool"], cwd=root).stdout
    (binary / "Packages").write_text(packages)
    (source / "Sources").write_text("")
    release = run(["apt-ftparchive", "-o", f"APT::FTPArchive::Release::Suite={SUITE}", "-o",
                   "APT::FTPArchive::Release::Components=main", "-o",
                   "APT::FTPArchive::Release::Architectures=amd64", "release", f"dists/{SUITE}"], cwd=root).stdout
    (root / "dists" / SUITE / "Release").write_text(release)
    sources = root / "test.sources"
    sources.write_text(f"Types: deb\nURIs: file://{root}\nSuites: {SUITE}\nComponents: main\nTrusted: yes\n")
    return sources


@pytest.fixture
def overlay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project overlay whose package app-clip/tool takes clip-src-1.0.tar.gz from clip-src 1.0-1."""
    monkeypatch.setenv("CLIPBUILD_CACHE", str(tmp_path / "cache"))
    package = tmp_path / "proj" / "overlays" / "clip" / "app-clip" / "tool"
    package.mkdir(parents=True)
    (package / "Manifest").write_text(_manifest_line(DIST, _payload("1.0-1")) + "\n")
    (package / "Pins").write_text(f"# test pin\nDEBIAN {DIST} binary clip-src 1.0-1\n")
    (package / "tool-1.0.ebuild").write_text('EAPI=8\nSRC_URI="clip-src-1.0.tar.gz"\n')
    conf = package.parent.parent / "clip-conf" / "tool-conf"
    conf.mkdir(parents=True)
    (conf / "tool-conf-1.0.ebuild").write_text('EAPI=8\nRDEPEND="=app-clip/tool-1.0"\n')
    return package.parent.parent


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "archive"
    monkeypatch.setenv("CLIPBUILD_APT_SOURCES", str(make_archive(root, ["1.0-1", "1.0-2"])))
    return root


def quiet(_message: str) -> None:
    pass


def test_pins_are_read_with_their_place_and_checked(overlay):
    pin = read_pins(overlay)[DIST]
    assert (pin.package, pin.version, pin.kind, pin.owner) == ("clip-src", "1.0-1", "binary", "app-clip/tool")
    assert pin.where == "clip/app-clip/tool/Pins:2" and pin.upstream_version == "1.0"
    assert fetch.read_manifests(overlay)[DIST].pin == pin
    (overlay / "app-clip" / "tool" / "Pins").write_text("DEBIAN x.tar.gz binary clip-src\n")
    with pytest.raises(InputError, match=r"clip/app-clip/tool/Pins:1: malformed pin"):
        read_pins(overlay)
    (overlay / "app-clip" / "tool" / "Pins").write_text("DEBIAN other.tar.gz binary clip-src 1.0-1\n")
    with pytest.raises(InputError, match=r"Pins:1: other.tar.gz is pinned but its package's Manifest has no DIST"):
        fetch.read_manifests(overlay)


def test_the_shipped_overlay_pins_every_distfile_to_an_exact_debian_version(project):
    dists = fetch.read_manifests(project.root / "overlays" / "clip")
    assert all(d.pin is not None for d in dists.values())
    assert dists["linux-source-6.1.tar.xz"].pin.package == "linux-source-6.1"
    assert dists["busybox-1.35.0.tar.bz2"].pin.kind == "source"


def test_sources_cover_the_suite_its_updates_and_security(monkeypatch, tmp_path):
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
                       "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\n"
                       "Suites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: http://x.invalid/\n"
                       "Suites: trixie\nComponents: main\n")
    monkeypatch.setenv("CLIPBUILD_APT_SOURCES", str(sources))
    text = sources_for("bookworm")
    assert "Suites: bookworm bookworm-updates" in text and "Suites: bookworm-security" in text
    assert "trixie" not in text and text.count("Types: deb deb-src") == 2


def test_an_exact_older_version_still_offered_is_fetched(overlay, archive, tmp_path):
    """The archive's candidate is 1.0-2; the pin says 1.0-1, and 1.0-1 is what is fetched."""
    dists = fetch.read_manifests(overlay).values()
    assert fetch.fetch(dists, [f"debian:{SUITE}"], tmp_path, say=quiet) == [DIST]
    assert (fetch.store_dir() / DIST).read_bytes() == _payload("1.0-1")
    assert fetch.origins()[DIST] == f"debian:{SUITE}"


def test_a_pin_the_archive_dropped_says_what_it_offers_and_how_to_move(overlay, tmp_path, monkeypatch, clipbuild):
    monkeypatch.setenv("CLIPBUILD_APT_SOURCES", str(make_archive(tmp_path / "archive", ["1.0-2", "1.0-3"])))
    proj = write_client(tmp_path, f"debian:{SUITE}", "packages:\n  clip:\n    core: [clip-conf/tool-conf]\n")
    manifest_before = (overlay / "app-clip" / "tool" / "Manifest").read_text()

    result = clipbuild("--project", proj, "fetch", "client")
    assert result.code == 2, result.err
    assert "could not fetch clip-src-1.0.tar.gz" in result.err
    assert "pinned to clip-src=1.0-1 (binary) (clip/app-clip/tool/Pins:2), which Debian no longer offers; " \
           "it offers 1.0-3, 1.0-2" in result.err
    assert "hint: move the pin with: clipbuild distfiles pin app-clip/tool" in result.err
    assert not (fetch.store_dir() / DIST).exists()  # nothing written
    assert (overlay / "app-clip" / "tool" / "Manifest").read_text() == manifest_before

    result = clipbuild("--project", proj, "distfiles", "pin", "app-clip/tool")
    assert result.code == 0, result.err
    assert "clip-src-1.0.tar.gz: clip-src=1.0-1 (binary) -> clip-src=1.0-3 (binary)" in result.out
    assert f"old: {manifest_before.strip()}" in result.out
    assert f"new: {_manifest_line(DIST, _payload('1.0-3'))}" in result.out
    assert "will rebuild: app-clip/tool, clip-conf/tool-conf" in result.out
    assert "species affected: client" in result.out
    assert (overlay / "app-clip" / "tool" / "Pins").read_text() == \
        f"# test pin\nDEBIAN {DIST} binary clip-src 1.0-3\n"
    assert (overlay / "app-clip" / "tool" / "Manifest").read_text() == _manifest_line(DIST, _payload("1.0-3")) + "\n"

    result = clipbuild("--project", proj, "fetch", "client")
    assert result.code == 0, result.err
    assert (fetch.store_dir() / DIST).read_bytes() == _payload("1.0-3")


def test_a_new_upstream_version_renames_the_ebuild_and_its_exact_atoms(overlay, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPBUILD_APT_SOURCES", str(make_archive(tmp_path / "archive", ["1.0-1", "1.1-1"])))
    result = pinmove.move_pins(overlay, "app-clip/tool", [SUITE], "1.1-1", quiet)
    assert [str(m.new) for m in result.moves] == ["clip-src=1.1-1 (binary)"]
    assert result.renamed == [("tool-1.0.ebuild", "tool-1.1.ebuild")]
    assert result.rewritten == ["clip-conf/tool-conf/tool-conf-1.0.ebuild"]
    assert 'RDEPEND="=app-clip/tool-1.1"' in (overlay / "clip-conf/tool-conf/tool-conf-1.0.ebuild").read_text()
    with pytest.raises(InputError, match=r"clip-src 9.9-1 is not offered; Debian offers 1.0-1, 1.1-1"):
        pinmove.move_pins(overlay, "app-clip/tool", [SUITE], "9.9-1", quiet)


def _share(overlay: Path) -> Path:
    """app-clip/tool-headers declares the distfile app-clip/tool pins (as linux-headers the kernel's tarball)."""
    sharer = overlay / "app-clip" / "tool-headers"
    sharer.mkdir()
    (sharer / "Manifest").write_text((overlay / "app-clip" / "tool" / "Manifest").read_text())
    (sharer / "tool-headers-1.0.ebuild").write_text('EAPI=8\nSRC_URI="clip-src-1.0.tar.gz"\n')
    return sharer


def test_a_distfile_two_packages_declare_keeps_its_pin(overlay):
    _share(overlay)
    dist = fetch.read_manifests(overlay)[DIST]
    assert (dist.package, str(dist.pin)) == ("app-clip/tool", "clip-src=1.0-1 (binary)")
    (overlay / "app-clip" / "tool" / "Manifest").write_text("")
    with pytest.raises(InputError, match="is pinned but its package's Manifest has no DIST line for it"):
        fetch.read_manifests(overlay)


def test_a_pin_move_carries_the_packages_sharing_the_distfile(overlay, tmp_path, monkeypatch):
    sharer = _share(overlay)
    monkeypatch.setenv("CLIPBUILD_APT_SOURCES", str(make_archive(tmp_path / "archive", ["1.0-1", "1.1-1"])))
    result = pinmove.move_pins(overlay, "app-clip/tool", [SUITE], "1.1-1", quiet)
    assert result.shared == ["app-clip/tool-headers"]
    assert result.renamed == [("tool-1.0.ebuild", "tool-1.1.ebuild"),
                              ("tool-headers-1.0.ebuild", "tool-headers-1.1.ebuild")]
    new_line = _manifest_line(DIST, _payload("1.1-1"))
    assert (sharer / "Manifest").read_text() == (overlay / "app-clip" / "tool" / "Manifest").read_text() == \
        new_line + "\n"
    assert fetch.read_manifests(overlay)[DIST].hashes["SHA512"] == hashlib.sha512(_payload("1.1-1")).hexdigest()


def write_client(tmp_path: Path, mirror: str, extra: str = "") -> str:
    """The project beside the overlay: the real base profile and jails, a client taking distfiles from
    `mirror` only."""
    proj = tmp_path / "proj"
    for sub in ("jails", "kernel-patches"):
        if not (proj / sub).exists():
            shutil.copytree(ROOT / sub, proj / sub)
    (proj / "profiles").mkdir(exist_ok=True)
    shutil.copy(ROOT / "profiles" / "base.yaml", proj / "profiles" / "base.yaml")
    (proj / "profiles" / "client.yaml").write_text(
        f"species: client\ninherits: base\nsources:\n  mirrors: !replace [{mirror}]\n{extra}")
    return str(proj)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 (an ephemeral port), as a team's distfiles mirror."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_mirror_serves_a_distfile_and_a_corrupt_copy_is_refused(overlay, http_root, tmp_path):
    folder, url = http_root
    (folder / "bad").mkdir()
    (folder / "good").mkdir()
    (folder / "bad" / DIST).write_bytes(_payload("1.0-1").replace(b"\x00", b"\x01", 1))
    (folder / "good" / DIST).write_bytes(_payload("1.0-1"))
    messages: list[str] = []
    dists = fetch.read_manifests(overlay).values()
    assert fetch.fetch(dists, [f"{url}/bad/", f"{url}/missing", f"{url}/good"], tmp_path,
                       say=messages.append) == [DIST]
    assert (fetch.store_dir() / DIST).read_bytes() == _payload("1.0-1")
    assert messages == [f"fetch: {DIST} from {url}/good (verified)"]
    (fetch.store_dir() / DIST).unlink()
    with pytest.raises(errors.FetchError) as exc:
        fetch.fetch(dists, [f"{url}/bad/", f"{url}/missing"], tmp_path, say=quiet)
    text = "\n".join(exc.value.lines())
    assert f"{url}/bad/: wrong content: BLAKE2B" in text and f"{url}/missing: HTTP 404" in text
    assert exc.value.exit_code == 1


def test_an_http_mirror_never_reads_past_the_manifest_size(overlay, http_root, tmp_path):
    folder, url = http_root
    (folder / DIST).write_bytes(_payload("1.0-1") + b"\0" * (10 << 20))
    with pytest.raises(errors.FetchError, match="could not fetch") as exc:
        fetch.fetch(fetch.read_manifests(overlay).values(), [url], tmp_path, say=quiet)
    assert "larger than the" in "\n".join(exc.value.lines())


def test_distfiles_mirror_output_served_back_is_enough_to_fetch(overlay, archive, http_root, tmp_path, clipbuild,
                                                                 monkeypatch):
    folder, url = http_root
    proj = write_client(tmp_path, f"debian:{SUITE}")
    result = clipbuild("--project", proj, "distfiles", "mirror", str(folder / "clip"), "client")
    assert result.code == 0, result.err
    assert (folder / "clip" / DIST).read_bytes() == _payload("1.0-1")

    monkeypatch.setenv("CLIPBUILD_CACHE", str(tmp_path / "fresh-cache"))  # a new machine, Debian unreachable
    monkeypatch.setenv("CLIPBUILD_APT_SOURCES", str(tmp_path / "nowhere.sources"))
    write_client(tmp_path, f"{url}/clip/")
    result = clipbuild("--project", proj, "fetch", "client")
    assert result.code == 0, result.err
    assert (fetch.store_dir() / DIST).read_bytes() == _payload("1.0-1")

    result = clipbuild("--project", proj, "distfiles", "list", "client", "--json")
    [row] = json.loads(result.out)
    assert row["state"] == "present" and row["origin"] == f"{url}/clip/" and row["pin"]["version"] == "1.0-1"
    assert row["size"] == len(_payload("1.0-1")) and row["package"] == "app-clip/tool"


def test_a_debian_mirror_needs_a_pin(overlay, archive, tmp_path):
    (overlay / "app-clip" / "tool" / "Pins").unlink()
    with pytest.raises(errors.FetchError) as exc:
        fetch.fetch(fetch.read_manifests(overlay).values(), [f"debian:{SUITE}"], tmp_path, say=quiet)
    assert "no Debian pin for it (add a DEBIAN line to app-clip/tool/Pins)" in "\n".join(exc.value.lines())


def test_the_private_index_is_read_again_when_a_pinned_version_is_missing(overlay, tmp_path, monkeypatch):
    """A stale index (read before the archive published 1.0-1) is refreshed once before giving up."""
    root = tmp_path / "archive"
    monkeypatch.setenv("CLIPBUILD_APT_SOURCES", str(make_archive(root, ["1.0-2"])))
    Archive(SUITE).ensure_index(quiet)
    make_archive(root, ["1.0-1", "1.0-2"])
    assert fetch.fetch(fetch.read_manifests(overlay).values(), [f"debian:{SUITE}"], tmp_path, say=quiet) == [DIST]
