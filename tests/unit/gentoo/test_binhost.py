"""The binhost: the index written as Portage reads it, export (atomic, incremental, idempotent), and a build's
pull from it (verified, refused with both digests, other keys, a binhost gone), on fake gpkgs in a temporary
package store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from portage.checksum import verify_all
from portage.getbinpkg import PackageIndex

from clipbuild.cli.show import build_origins, format_build_summary
from clipbuild.core.errors import InputError
from clipbuild.gentoo import binhost, binpkgs
from tests.unit.formats.test_packaging import _fake_gpkg

METADATA = {"SLOT": "0/1", "USE": "amd64 elibc_musl", "EAPI": "8", "BUILD_ID": "1", "BUILD_TIME": "1700000000",
            "RDEPEND": ">=sys-libs/musl-1.2.3 static? ( sys-libs/other )", "LICENSE": "ZLIB",
            "CHOST": "x86_64-pc-linux-gnu", "repository": "clip", "DESCRIPTION": "not in Portage's index"}


@pytest.fixture()
def store(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "store"
    monkeypatch.setenv("CLIPBUILD_BINPKGS", str(folder))
    return folder


def stored_package(tmp: Path, cpv: str = "sys-libs/zlib-1.2.13", use: tuple[str, ...] = ()) -> binpkgs.PackageKey:
    """A fake binpkg of `cpv` kept in the store under a key of its own (its USE makes another key)."""
    category, pf = cpv.split("/")
    pkg = binpkgs.PackageKey(cpv, {"cpv": cpv, "use": list(use), "pn": binpkgs.pn_of(cpv)})
    made = tmp / "made" / pkg.key
    made.mkdir(parents=True)
    binpkgs.keep(pkg, _fake_gpkg(made, category, pf, METADATA, {"usr/lib/libz.so.1": b"\x7fELF" + bytes(use and 1)}))
    return pkg


def test_the_index_is_portage_s_and_pins_each_binpkg(store, tmp_path):
    pkg = stored_package(tmp_path)
    done = binhost.export(tmp_path / "bh", [pkg.key])
    assert done.written == ["sys-libs/zlib/zlib-1.2.13-1.gpkg.tar"] and done.packages == 1 and done.index_changed
    # Portage's own reader, as its bintree configures it for the fields it renames.
    index = PackageIndex(translated_keys=(("DESCRIPTION", "DESC"), ("_mtime_", "MTIME"), ("repository", "REPO")))
    with (tmp_path / "bh" / "Packages").open() as stream:
        index.read(stream)
    assert index.header["PACKAGES"] == "1" and index.header["VERSION"] == "0" and index.header["TIMESTAMP"]
    [entry] = index.packages
    binpkg = tmp_path / "bh" / entry["PATH"]
    assert entry["CPV"] == "sys-libs/zlib-1.2.13" and entry["repository"] == "clip" and entry["_mtime_"]
    assert entry["SLOT"] == "0/1" and entry["BUILD_ID"] == "1" and entry["CLIPBUILD_KEY"] == pkg.key
    assert entry["RDEPEND"] == ">=sys-libs/musl-1.2.3"  # USE-evaluated, as Portage writes it
    assert "DESC" not in entry and "DESCRIPTION" not in entry
    # What Portage's digestCheck verifies (SIZE, MD5, SHA1), and what clipbuild does (SHA256, BLAKE2B).
    ok, reason = verify_all(str(binpkg), {"size": int(entry["SIZE"]), **{
        name: entry[name] for name in ("MD5", "SHA1", "SHA256", "BLAKE2B")}})
    assert ok, reason
    ours = binhost.parse_index((tmp_path / "bh" / "Packages").read_text(), "Packages")
    assert ours.by_key()[pkg.key]["PATH"] == entry["PATH"]
    assert ours.render() == (tmp_path / "bh" / "Packages").read_text()


def test_export_is_incremental_idempotent_and_repairs(store, tmp_path):
    first, second = stored_package(tmp_path), stored_package(tmp_path, use=("static",))
    target = tmp_path / "bh"
    binhost.export(target, [first.key])
    before = (target / "Packages").read_bytes()
    again = binhost.export(target, [first.key])
    assert again.written == [] and again.kept == ["sys-libs/zlib/zlib-1.2.13-1.gpkg.tar"] and not again.index_changed
    assert (target / "Packages").read_bytes() == before
    (store / ("0" * 64)).mkdir()  # a folder without a package: not part of the store
    assert binpkgs.all_keys() == sorted([first.key, second.key])
    more = binhost.export(target, binpkgs.all_keys())  # the same CPV under another key: another instance
    assert more.written == ["sys-libs/zlib/zlib-1.2.13-2.gpkg.tar"] and more.packages == 2
    damaged = target / "sys-libs/zlib/zlib-1.2.13-1.gpkg.tar"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"x")
    repaired = binhost.export(target, [first.key, second.key])
    assert repaired.written == ["sys-libs/zlib/zlib-1.2.13-1.gpkg.tar"] and repaired.packages == 2
    assert sorted(p.name for p in target.rglob("*") if p.name.startswith(".")) == []  # no temporary file left


def test_a_build_takes_what_it_lacks_from_the_binhost(store, tmp_path, monkeypatch):
    pkg = stored_package(tmp_path)
    binhost.export(tmp_path / "bh", [pkg.key])
    monkeypatch.setenv("CLIPBUILD_BINPKGS", str(tmp_path / "empty"))
    messages: list[str] = []
    pulled = binhost.pull([pkg], binhost.Remote.parse(str(tmp_path / "bh")), tmp_path / "scratch", messages.append)
    assert pulled.fetched == [pkg.cpv] and pulled.refused == {} and binpkgs.lookup(pkg) is not None
    assert "SHA256 and BLAKE2B verified" in messages[0]
    # Now in the local store: the binhost is not even asked (this one would not answer).
    assert binhost.pull([pkg], binhost.Remote.parse("http://127.0.0.1:9/"), tmp_path / "s", print).unreachable == ""


def test_a_tampered_binpkg_is_refused_naming_both_digests(store, tmp_path, monkeypatch):
    pkg = stored_package(tmp_path)
    binhost.export(tmp_path / "bh", [pkg.key])
    entry = binhost.parse_index((tmp_path / "bh" / "Packages").read_text(), "Packages").packages[0]
    binpkg = tmp_path / "bh" / entry["PATH"]
    binpkg.write_bytes(binpkg.read_bytes()[:-1] + b"x")  # same size, other content
    monkeypatch.setenv("CLIPBUILD_BINPKGS", str(tmp_path / "empty"))
    messages: list[str] = []
    pulled = binhost.pull([pkg], binhost.Remote.parse(str(tmp_path / "bh")), tmp_path / "scratch", messages.append)
    assert pulled.fetched == [] and binpkgs.lookup(pkg) is None
    why = pulled.why_not(pkg.cpv)
    assert why.startswith("binhost copy refused: sys-libs/zlib-1.2.13: ") and f"the index says {entry['SHA256']}" in why
    assert binhost.digest_file(binpkg, ["SHA256"])["SHA256"] in why
    assert messages == [f"refused {why.removeprefix('binhost copy refused: ')}; it is built here instead"]


def test_other_keys_a_gone_binhost_and_a_wrong_pin_mean_building_here(store, tmp_path, monkeypatch):
    pkg = stored_package(tmp_path)
    binhost.export(tmp_path / "bh", [pkg.key])
    monkeypatch.setenv("CLIPBUILD_BINPKGS", str(tmp_path / "empty"))
    other = binpkgs.PackageKey(pkg.cpv, {**pkg.components, "use": ["static"]})
    pulled = binhost.pull([other], binhost.Remote.parse(str(tmp_path / "bh")), tmp_path / "s1", print)
    assert pulled.fetched == [] and pulled.why_not(pkg.cpv) == ("the binhost has it only under 1 other key(s): "
                                                                "a rebuild")
    gone = binhost.pull([pkg], binhost.Remote.parse(str(tmp_path / "nothing")), tmp_path / "s2", print)
    assert gone.fetched == [] and gone.why_not(pkg.cpv).startswith("binhost unreachable (binhost file://")
    pinned = binhost.Remote.parse(f"{tmp_path / 'bh'}#sha256={'0' * 64}")
    wrong = binhost.pull([pkg], pinned, tmp_path / "s3", print)
    assert wrong.fetched == [] and f"the URL pins {'0' * 64}" in wrong.unreachable


def test_an_index_path_outside_the_binhost_is_refused(store, tmp_path, monkeypatch):
    pkg = stored_package(tmp_path)
    binhost.export(tmp_path / "bh", [pkg.key])
    index = tmp_path / "bh" / "Packages"
    index.write_text(index.read_text().replace("PATH: sys-libs/zlib/", "PATH: ../../sys-libs/zlib/"))
    monkeypatch.setenv("CLIPBUILD_BINPKGS", str(tmp_path / "empty"))
    pulled = binhost.pull([pkg], binhost.Remote.parse(str(tmp_path / "bh")), tmp_path / "s", print)
    assert pulled.fetched == [] and "PATH '../../sys-libs/zlib/zlib-1.2.13-1.gpkg.tar'" in pulled.refused[pkg.cpv]


@pytest.mark.parametrize(("spec", "message"), [("ftp://host/x", "only http://"),
                                               ("http://h/#md5=00", "not an index pin")])
def test_binhost_urls(spec, message, tmp_path):
    with pytest.raises(InputError, match=message):
        binhost.Remote.parse(spec)
    assert binhost.Remote.parse(str(tmp_path)).base == tmp_path.as_uri() + "/"
    assert binhost.Remote.parse("http://h/b#sha256=" + "a" * 64) == binhost.Remote("http://h/b/", "a" * 64)


def test_the_build_summary_says_where_packages_came_from():
    def row(cpv: str, status: str) -> dict:
        return {"cpv": cpv, "key": cpv, "status": status, "reason": "not built before", "seconds": 3.0}

    sets = [{"step": "build/clip-core", "status": "ran", "packages": [row("a/b-1", "fetched"), row("a/c-1", "built"),
                                                                      row("a/d-1", "reused")]},
            {"step": "build/rm-core", "status": "cached", "packages": [row("a/b-1", "built")]}]
    origins = build_origins(sets)
    assert origins == {"compiled_here": 1, "local_store": 1, "binhost": 1, "cached_sets": 1, "distcc_compiled": None,
                       "ccache_hits_local": None, "ccache_hits_remote": None}
    text = format_build_summary("client", sets, explain=True)
    assert "build/clip-core: a/b-1: fetched from the binhost" in text
    assert text.splitlines()[-1] == ("client: 1 compiled here, 1 from the local package store, 1 fetched from the "
                                     "binhost, 1 in cached sets")
    json.dumps(origins)  # --json prints it as it is
    # A set built with distcc hosts and a compiler cache: their own counts (compiles.json) join the line.
    sets[0]["compiles"] = {"distcc": {"hosts": {"h1:3632/2": {"compiles": 40}, "h2:3632/2": {"compiles": 2}},
                                      "local": 5},
                           "ccache": {"local_hits": 7, "remote_hits": 11, "misses": 3}}
    origins = build_origins(sets)
    assert (origins["distcc_compiled"], origins["ccache_hits_local"], origins["ccache_hits_remote"]) == (42, 7, 11)
    assert format_build_summary("client", sets, explain=False).endswith(
        "1 in cached sets, 42 compiled on distcc hosts, 7 local ccache hits, 11 remote ccache hits\n")


def test_over_http_on_loopback_and_a_server_gone(store, tmp_path, monkeypatch):
    pkg = stored_package(tmp_path)
    binhost.export(tmp_path / "bh", [pkg.key])
    monkeypatch.setenv("CLIPBUILD_BINPKGS", str(tmp_path / "empty"))
    with binhost.served(tmp_path / "bh") as url:
        assert url.startswith("http://127.0.0.1:")
        assert binhost.pull([pkg], binhost.Remote.parse(url), tmp_path / "s1", print).fetched == [pkg.cpv]
    monkeypatch.setenv("CLIPBUILD_BINPKGS", str(tmp_path / "empty-again"))
    gone = binhost.pull([pkg], binhost.Remote.parse(url), tmp_path / "s2", print)
    assert gone.fetched == [] and "cannot reach it" in gone.unreachable
