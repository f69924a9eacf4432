"""Hostile repositories (P10 items 6, 8, 9): a mirror's Packages.gz and pool are attacker-controlled. Each case
is built here from a repository `repo publish` wrote (real packages, a scratch development PKI), then damaged;
each asserts the refusal and its reason, and that nothing outside the repository was read or changed."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from clipbuild.core.errors import ClipbuildError, NotAFile, RepositoryError
from clipbuild.signing import devpki
from clipbuild.signing.trust import load_policy
from clipbuild.update import repository

from .test_update import _deb, _reasons, read_repository


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return devpki.ensure(tmp_path_factory.mktemp("pki") / "dev-pki")


@pytest.fixture(scope="module")
def built(tmp_path_factory, pki) -> tuple[Path, list[Path]]:
    """Signed packages: a conf pinning busybox 1.35.0, busybox 1.35.0, and an unpinned extra package."""
    where = tmp_path_factory.mktemp("debs")
    debs = [_deb(where, pki, "clip-core-conf", "4.5.1", Depends="busybox (= 1.35.0)"),
            _deb(where, pki, "busybox", "1.35.0"), _deb(where, pki, "extra", "1.0")]
    return where, debs


@pytest.fixture
def repo(tmp_path, pki, built) -> Path:
    out = tmp_path / "repo"
    repository.publish(built[1][:2], load_policy(pki.policy_path), out)
    return out


def _base(repo: Path) -> Path:
    return repo / "clip" / "clip-core-conf"


def _index(repo: Path) -> Path:
    return _base(repo) / "dists" / "clip" / "main" / "binary-amd64" / "Packages.gz"


def _stanzas(repo: Path) -> list[str]:
    return gzip.decompress(_index(repo).read_bytes()).decode().split("\n\n")


def _write_stanzas(repo: Path, stanzas: list[str]) -> None:
    _index(repo).write_bytes(gzip.compress("\n\n".join(stanzas).encode()))


def _refused(repo: Path, words: str, kind: type[ClipbuildError] = ClipbuildError) -> None:
    with pytest.raises(kind) as exc:
        read_repository(repo, repo.parent / "scratch")
    assert words in str(exc.value), str(exc.value)


def test_the_published_repository_reads_back(repo):
    part = read_repository(repo, repo.parent / "scratch")["clip-core"]
    assert [p.name for p in part.members] == ["clip-core-conf", "busybox"]


@pytest.mark.parametrize("filename", ["/etc/passwd", "pool/../../../../etc/passwd", "../pool/x.deb",
                                      "pool/sub/x.deb", "dists/x.deb", "pool/.deb"])
def test_a_filename_outside_the_pool_is_refused(repo, filename):
    stanzas = _stanzas(repo)
    stanzas[0] = "\n".join(f"Filename: {filename}" if line.startswith("Filename:") else line
                           for line in stanzas[0].splitlines())
    _write_stanzas(repo, stanzas)
    _refused(repo, f"Filename {filename!r} is not pool/NAME.deb", RepositoryError)


def test_a_stanza_without_filename_is_refused(repo):
    stanzas = _stanzas(repo)
    stanzas[0] = "\n".join(line for line in stanzas[0].splitlines() if not line.startswith("Filename:"))
    _write_stanzas(repo, stanzas)
    _refused(repo, "has no Filename", RepositoryError)


def test_a_pool_file_that_is_a_symlink_out_is_refused(repo, tmp_path):
    outside = tmp_path / "outside.deb"
    pool = _base(repo) / "pool"
    victim = next(pool.glob("busybox_*"))
    os.replace(victim, outside)
    victim.symlink_to(outside)
    _refused(repo, "it is a symbolic link", NotAFile)


def test_a_pool_that_is_a_symlink_is_refused(repo, tmp_path):
    pool = _base(repo) / "pool"
    os.replace(pool, tmp_path / "elsewhere")
    pool.symlink_to(tmp_path / "elsewhere")
    _refused(repo, "the pool is a symbolic link", RepositoryError)


def test_a_repository_folder_that_is_a_symlink_is_refused(repo, tmp_path):
    dists = _base(repo) / "dists"
    os.replace(dists, tmp_path / "elsewhere")
    dists.symlink_to(tmp_path / "elsewhere")
    _refused(repo, "dists: a symbolic link inside the repository", RepositoryError)


def test_a_package_the_conf_does_not_pin_is_refused(repo, built):
    extra = built[1][2]
    (_base(repo) / "pool" / extra.name).write_bytes(extra.read_bytes())
    stanza = repository.stanza(repository.read_package(extra), f"pool/{extra.name}")
    _write_stanzas(repo, [*_stanzas(repo), stanza])
    _refused(repo, "extra 1.0: not pinned by clip-core-conf 4.5.1", RepositoryError)


def test_the_same_stanza_repeated_is_refused(repo):
    stanzas = _stanzas(repo)
    _write_stanzas(repo, [*stanzas, stanzas[1]])
    _refused(repo, "is listed more than once", RepositoryError)


def test_a_stanza_that_lies_about_its_package_is_refused(repo):
    stanzas = _stanzas(repo)
    stanzas[0] = stanzas[0].replace("Version: 1.35.0", "Version: 9.9")
    _write_stanzas(repo, stanzas)
    _refused(repo, "the package is busybox 1.35.0, the signed release metadata says busybox 9.9", RepositoryError)


@pytest.mark.parametrize(("content", "words"), [
    (b"Package: x\n", "not gzip data"),
    (gzip.compress(b"Package: clip-core-conf\n" * 100)[:-12], "truncated gzip data"),
    (gzip.compress(b"Package: \xff\xfe\n"), "not UTF-8 text (byte 9)"),
    (gzip.compress(b"\0" * (repository.MAX_INDEX_BYTES + 1)), "decompresses to more than"),
    (gzip.compress(b"Package: x\n") + b"junk", "bytes after the gzip data"),
    (gzip.compress(b"Package: x\nPackage: y\n"), "Packages.gz:2: the field is given twice"),
    (gzip.compress(b"Package: x\nnot a field\n"), "Packages.gz:2: not a `Field: value` line"),
])
def test_a_damaged_index_is_refused(repo, content, words):
    _index(repo).write_bytes(content)
    _refused(repo, words, RepositoryError)


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink"])
def test_an_index_that_is_not_a_file_is_refused_without_hanging(repo, tmp_path, kind):
    index = _index(repo)
    os.replace(index, tmp_path / "elsewhere.gz")
    if kind == "directory":
        index.mkdir()
    elif kind == "fifo":
        os.mkfifo(index)
    else:
        index.symlink_to(tmp_path / "elsewhere.gz")
    words = {"directory": "it is a directory", "fifo": "it is a FIFO", "symlink": "symbolic link"}[kind]
    _refused(repo, words, NotAFile)


def test_a_release_date_without_time_zone_is_refused(tmp_path, pki):
    reasons = _reasons(tmp_path, pki, **{"Release-Date": "Wed, 25 Nov 2026 10:00:00 -0000"})
    assert len(reasons) == 1 and "has no time zone" in reasons[0], reasons


@pytest.mark.parametrize("impact", ["\u00b2", "\u0661", "1e3", "-1"])
def test_a_non_ascii_or_odd_impact_is_refused(tmp_path, pki, impact):
    reasons = _reasons(tmp_path, pki, Impact=impact)
    assert len(reasons) == 1 and f"Impact '{impact}' is not a number" in reasons[0], reasons


def test_publish_refuses_two_sources_with_one_file_name(tmp_path, pki, built, clipbuild):
    second = tmp_path / "second"
    second.mkdir()
    twin = _deb(second, pki, "busybox", "1.35.0", Description="another build")
    assert twin.name == built[1][1].name and twin.read_bytes() != built[1][1].read_bytes()
    out = tmp_path / "out"
    result = clipbuild("repo", "publish", "--policy", str(pki.policy_path), "--out", str(out),
                       str(built[1][0]), str(built[1][1]), str(second))
    assert result.code == 1 and result.err.startswith("error: ")
    assert str(built[1][1]) in result.err and str(twin) in result.err and "one would be left out" in result.err
    assert not out.exists()


def test_publish_refuses_two_packages_of_one_repository_with_one_file_name(tmp_path, pki, built):
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    conf = _deb(renamed, pki, "clip-core-conf", "4.5.1", Depends="busybox (= 1.35.0)")
    os.replace(conf, renamed / built[1][1].name)  # the conf package under busybox's file name
    with pytest.raises(RepositoryError, match="have the same file name"):
        repository.publish([renamed / built[1][1].name, built[1][1]], load_policy(pki.policy_path),
                           tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_package_whose_control_fields_are_not_utf8_is_refused(tmp_path, pki):
    from clipbuild.core.run import run
    from clipbuild.signing.signer import sign_bytes

    root = tmp_path / "latin"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_bytes(b"Package: latin\nVersion: 1.0\nArchitecture: amd64\n"
                                              b"Maintainer: CLIP\nDescription: caf\xe9\n")
    deb = tmp_path / "latin_1.0_amd64.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", root, deb])
    deb.write_bytes(sign_bytes(sign_bytes(deb.read_bytes(), "developer", pki.developer, 0), "controller",
                               pki.controller, 0))
    with pytest.raises(RepositoryError, match="its control fields are not UTF-8 text"):
        repository.publish([deb], load_policy(pki.policy_path), tmp_path / "out")
