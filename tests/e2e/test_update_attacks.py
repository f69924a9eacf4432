"""End to end: The Update Framework's attacks on update systems, each tried against a real image (version N) and
a real signed update repository (N+1, tests/e2e/conftest.py `releases`), each refused with its reason and the
image's bytes unchanged (SHA-256 before and after). docs/security.md's table names each test.

Key compromise (a controller revoked and replaced through a signed core update) is the rotation drill in
test_key_rotation.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest

from clipbuild.core.digest import sha256_file
from clipbuild.core.run import run
from clipbuild.image import gpt
from clipbuild.signing import devpki
from clipbuild.update import releasemeta
from tests.e2e.support import rebuilt, reindex, resign, sparse_copy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
BASELAYOUT = "clip/clip-core-conf/pool/baselayout-clip_4.5.1_amd64.deb"


@pytest.fixture
def image(releases, tmp_path) -> Path:
    return sparse_copy(releases["n"]["image"], tmp_path / "client.img")


def _repo(releases, which: str) -> Path:
    return Path(releases[which]["repositories"][0]).parent.parent


def _copy(releases, tmp_path: Path, which: str = "n1") -> Path:
    repo = tmp_path / f"repo-{which}"
    shutil.copytree(_repo(releases, which), repo)
    return repo


def _apply(releases, image: Path, repo: Path, *args: str):
    return releases["project"].clipbuild("update", "apply", str(image), str(repo), *args)


def _refused(releases, image: Path, repo: Path, words: str, *args: str) -> str:
    before = sha256_file(image)
    result = _apply(releases, image, repo, *args)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert words in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.startswith("error: ")
    assert sha256_file(image) == before
    return result.stderr


def test_arbitrary_package_another_signed_package_in_its_place(releases, image, tmp_path):
    """A genuine, doubly signed package (N's baselayout-clip) served under N+1's name."""
    repo = _copy(releases, tmp_path)
    genuine_other = next((_repo(releases, "n") / "clip" / "clip-core-conf" / "pool").glob("baselayout-clip_*"))
    (repo / BASELAYOUT).write_bytes(genuine_other.read_bytes())
    _refused(releases, image, repo, "baselayout-clip_4.5.1_amd64.deb: ")
    _refused(releases, image, repo, "not the file that was signed")


def test_mix_and_match_repositories_of_two_releases(releases, image, tmp_path):
    """N+1's core with N's apps repository: each genuine, not together."""
    repo = _copy(releases, tmp_path)
    shutil.rmtree(repo / "clip" / "clip-apps-conf")
    shutil.copytree(_repo(releases, "n") / "clip" / "clip-apps-conf", repo / "clip" / "clip-apps-conf")
    _refused(releases, image, repo, "clip-apps-conf/dists/clip/main/binary-amd64/Packages.gz: ")


def test_rollback_metadata_older_than_accepted(releases, image, tmp_path):
    assert _apply(releases, image, _repo(releases, "n1")).returncode == 0
    older = releasemeta.read(_repo(releases, "n") / releasemeta.METADATA).statement.version
    _refused(releases, image, _repo(releases, "n"), f"version {older} is older than version")


def test_indefinite_freeze_expired_metadata(releases, image):
    statement = releasemeta.read(_repo(releases, "n1") / releasemeta.METADATA).statement
    later = statement.expires_at.replace(tzinfo=None) + dt.timedelta(days=3)
    stderr = _refused(releases, image, _repo(releases, "n1"), f"expired on {statement.expires} (3 days ago)",
                      "--at", later.strftime("%Y-%m-%dT%H:%M:%S"))
    assert "(freeze)" in stderr


def test_fast_forward_a_version_from_the_future(releases, image, tmp_path):
    repo = _copy(releases, tmp_path)
    resign(repo, "--version", str(2**40))
    _refused(releases, image, repo, "(fast-forward)")


def test_endless_data_a_pool_file_longer_than_signed(releases, image, tmp_path):
    repo = _copy(releases, tmp_path)
    with (repo / BASELAYOUT).open("r+b") as stream:  # 1 TiB, sparse: refused before a byte is read
        stream.truncate(1 << 40)
    _refused(releases, image, repo, "(endless data)")


def test_extraneous_dependency_not_in_the_release(releases, image, tmp_path):
    """baselayout-clip rebuilt to depend on a package nobody released, signed by both roles, and the release
    metadata signed over it: the release itself does not provide it."""
    repo = _copy(releases, tmp_path)
    rebuilt(repo / BASELAYOUT, repo / BASELAYOUT, tmp_path,
            lambda text: text.rstrip("\n") + "\nDepends: clip-backdoor\n")
    reindex(repo / "clip" / "clip-core-conf")
    resign(repo)
    _refused(releases, image, repo, "Depends clip-backdoor: no package of the signed release metadata or installed "
                                    "provides it (extraneous dependency)")


def test_metadata_signed_by_another_role_is_refused(releases, image, tmp_path):
    repo = _copy(releases, tmp_path)
    releasemeta.sign_repository(repo, devpki.ensure().developer, devpki.ensure().policy())
    _refused(releases, image, repo, "signature refused")
    _refused(releases, image, repo, "is not issued by the controller CA")


def test_edited_or_missing_metadata_is_refused(releases, image, tmp_path):
    repo = _copy(releases, tmp_path)
    path = repo / releasemeta.METADATA
    data = json.loads(path.read_text())
    data["signed"]["expires"] = "2099-01-01T00:00:00Z"
    path.write_text(json.dumps(data))
    _refused(releases, image, repo, "the signature does not match the document")
    path.unlink()
    _refused(releases, image, repo, "no signed release metadata")


def test_another_species_release_is_refused(releases, image, tmp_path):
    repo = _copy(releases, tmp_path)
    resign(repo, "--species", "gateway")
    _refused(releases, image, repo, "a release of gateway, this image is client")


def _mounts_record(image: Path, label: str, scratch: Path, replacement: bytes | None = None) -> bytes:
    """The release metadata record on a mounts partition (debugfs, no mount); with `replacement`, written over."""
    _, entries = gpt.read_table(image)
    entry = next(e for e in entries if e.label == label)
    part = scratch / f"{label}.img"
    part.unlink(missing_ok=True)
    gpt.copy_out(image, entry.start, entry.size, part)
    record = f"/{releasemeta.RECORD_MOUNTS}"
    if replacement is not None:
        (scratch / "record").write_bytes(replacement)
        run(["debugfs", "-w", "-R", f"rm {record}", part])
        run(["debugfs", "-w", "-R", f"write {scratch / 'record'} {record}", part])
        with image.open("r+b") as stream:
            stream.seek(entry.start)
            stream.write(part.read_bytes())
    return run(["debugfs", "-R", f"cat {record}", part]).stdout.encode()


def test_the_accepted_version_is_kept_and_cannot_be_lowered_unseen(releases, image, tmp_path):
    """After N+1 the new slot keeps N+1's metadata in its root and its mounts partition; the mounts record
    replaced with N's genuine, older metadata is found out (below the verity-protected root's)."""
    assert _apply(releases, image, _repo(releases, "n1")).returncode == 0
    accepted = (_repo(releases, "n1") / releasemeta.METADATA).read_bytes()
    assert _mounts_record(image, "mounts_b", tmp_path) == accepted
    older = (_repo(releases, "n") / releasemeta.METADATA).read_bytes()
    _mounts_record(image, "mounts_b", tmp_path, older)
    os.sync()
    _refused(releases, image, _repo(releases, "n1"), "below the running root's")


def test_a_stale_crl_is_refused_with_its_date(releases, image, tmp_path):
    """The clock moved past the controller CRL's nextUpdate (metadata still valid): revocation cannot be
    checked, so nothing is accepted."""
    repo = _copy(releases, tmp_path)
    resign(repo, "--expires", "90")
    crl = devpki.ensure().policy().controller.crls[0]
    later = crl.next_update_utc.replace(tzinfo=None) + dt.timedelta(days=1)
    _refused(releases, image, repo, f"is stale (next update was {crl.next_update_utc:%Y-%m-%d})",
             "--at", later.strftime("%Y-%m-%dT%H:%M:%S"))
