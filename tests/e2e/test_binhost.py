"""End to end: a team binhost. One work tree builds both species on the machine's package store and exports
them (`clipbuild binhost export`); an HTTP server on 127.0.0.1 serves that folder; a second work tree with an
EMPTY package store builds both species from it, compiling nothing; a tampered binpkg on a binhost is refused,
naming its digest, and that one package is compiled.

The exporting work tree reuses the store the machine already has (CLIPBUILD_E2E_STORE, else
~/.cache/clipbuild/binpkgs), so it compiles nothing when that store is up to date with the overlay; the build
root and distfiles are the machine's, as in every e2e test. About 4 minutes on the shared 2-core machine.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipbuild.core.paths import cache_dir
from clipbuild.gentoo import binhost
from tests.e2e.support import Project

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SPECIES = ("client", "gateway")
SMALL = "sys-libs/zlib-1.2.13"  # quick to compile: the package the tampered binhost serves


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Iterator[dict]:
    """The builder's reports of both species, its binhost folder and the URL it is served at."""
    base = tmp_path_factory.mktemp("binhost")
    builder = Project(base / "builder")
    builder.env["CLIPBUILD_BINPKGS"] = os.environ.get("CLIPBUILD_E2E_STORE") or str(cache_dir() / "binpkgs")
    reports = {name: builder.build(name) for name in SPECIES}
    folder = base / "served"
    done = builder.clipbuild("binhost", "export", str(folder), *(f"--species={s}" for s in SPECIES), "--json")
    assert done.returncode == 0, done.stderr
    with binhost.served(folder) as url:  # 127.0.0.1, a free port, stopped when the module is done
        yield {"reports": reports, "folder": folder, "url": url, "export": json.loads(done.stdout), "base": base,
               "builder": builder}


def consumer(base: Path, name: str) -> Project:
    """A second work tree: another project copy, its own work directory, an empty package store."""
    proj = Project(base / name)
    proj.env["CLIPBUILD_BINPKGS"] = str(base / name / "binpkgs")  # even with CLIPBUILD_E2E_STORE set
    return proj


def keys(report: dict) -> dict[str, str]:
    return {f"{s['step']} {row['cpv']}": row["key"] for s in report["sets"] for row in s["packages"]}


def test_export_lists_every_package_and_is_idempotent(exported):
    wanted = {key for report in exported["reports"].values() for key in keys(report).values()}
    index = (exported["folder"] / "Packages").read_text()
    assert {line.split(": ")[1] for line in index.splitlines() if line.startswith("CLIPBUILD_KEY: ")} == wanted
    again = exported["builder"].clipbuild("binhost", "export", str(exported["folder"]),
                                          *(f"--species={s}" for s in SPECIES), "--json")
    assert again.returncode == 0, again.stderr
    repeat = json.loads(again.stdout)
    assert repeat["written"] == [] and not repeat["index_changed"]
    assert repeat["index_sha256"] == exported["export"]["index_sha256"]


def test_an_empty_store_builds_both_species_from_the_binhost_compiling_nothing(exported):
    proj = consumer(exported["base"], "consumer")
    for name in SPECIES:
        result = proj.clipbuild("build", name, "--binhost", exported["url"], "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout)
        assert report["origins"]["compiled_here"] == 0, report["origins"]
        assert report["origins"]["binhost"] > 0 and report["origins"]["cached_sets"] == 0
        assert keys(report) == keys(exported["reports"][name])  # the very packages the builder used
        assert {row["status"] for s in report["sets"] for row in s["packages"]} <= {"fetched", "reused"}
    human = proj.clipbuild("build", "client", "--binhost", exported["url"])
    assert "client: 0 compiled here, 0 from the local package store, 0 fetched from the binhost" in human.stdout


def test_a_tampered_binpkg_is_refused_with_its_digest_and_rebuilt(exported, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(exported["folder"], folder)
    index = (folder / "Packages").read_text()
    stanza = next(s for s in index.split("\n\n") if f"CPV: {SMALL}\n" in s)
    fields = dict(line.split(": ", 1) for line in stanza.splitlines())
    binpkg = folder / fields["PATH"]
    data = bytearray(binpkg.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped: the size still matches the index
    binpkg.write_bytes(bytes(data))
    with binhost.served(folder) as url:
        result = consumer(tmp_path, "consumer").clipbuild("build", "client", "--binhost", url, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"refused {SMALL}: {url}{fields['PATH']}: SHA256 " in result.stderr
    assert f"the index says {fields['SHA256']}" in result.stderr
    rows = {row["cpv"]: row for s in json.loads(result.stdout)["sets"] for row in s["packages"]}
    assert rows[SMALL]["status"] == "built" and "binhost copy refused" in rows[SMALL]["reason"]
    assert [cpv for cpv, row in rows.items() if row["status"] == "built"] == [SMALL]
