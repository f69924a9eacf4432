"""Signed release metadata on its own (P11 item 1): a repository published from real signed packages, its
metadata signed by a scratch development PKI's controller, then each attack of The Update Framework's list
tried against the checks, each refused with its reason."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import os
from pathlib import Path

import pytest

from clipbuild.core.errors import RepositoryError, SigningError
from clipbuild.signing import devpki, envelope, pki
from clipbuild.update import intake, releasemeta, repository

from .test_update import _deb


def _expires(now: dt.datetime) -> str:
    return (now + dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def keys(tmp_path):
    return devpki.ensure(tmp_path / "dev-pki")


@pytest.fixture
def now(keys) -> dt.datetime:
    """The test's clock: taken once the scratch PKI exists (its certificates are valid from about now)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def repo(tmp_path, keys, now) -> Path:
    debs = [_deb(tmp_path, keys, "clip-core-conf", "4.5.1", Depends="busybox (= 1.35.0)"),
            _deb(tmp_path, keys, "busybox", "1.35.0")]
    out = tmp_path / "repo"
    repository.publish(debs, keys.policy(), out)
    releasemeta.write_draft(out, "client")
    releasemeta.sign_repository(out, keys.controller, keys.policy(), now=now)
    return out


def _check(repo: Path, keys, now: dt.datetime, *, policy=None, seen=None, species="client") -> list[str]:
    found = releasemeta.read(repo / releasemeta.METADATA)
    policy = releasemeta.fresh_policy(policy or keys.policy(), found.statement)
    return releasemeta.check(found, policy, species=species, seen=seen, now=now)


def _rewrite(repo: Path, change) -> None:
    path = repo / releasemeta.METADATA
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_signed_metadata_describes_the_release_and_is_accepted(repo, keys, now):
    found = releasemeta.read(repo / releasemeta.METADATA)
    statement = found.statement
    assert (statement.species, statement.release) == ("client", "4.5.1")
    assert statement.version == int(now.timestamp()) and statement.expires == _expires(now)
    entries = statement.repositories["clip/clip-core-conf"].packages
    assert [(e.package, e.version) for e in entries] == [("busybox", "1.35.0"), ("clip-core-conf", "4.5.1")]
    assert _check(repo, keys, now) == []


def test_expired_metadata_is_refused_saying_since_when(repo, keys, now):
    reasons = _check(repo, keys, now + dt.timedelta(days=9))
    assert len(reasons) == 1 and f"expired on {_expires(now)} (2 days ago)" in reasons[0], reasons


def test_metadata_older_than_what_the_image_accepted_is_refused(repo, keys, now):
    version = releasemeta.read(repo / releasemeta.METADATA).statement.version
    seen = releasemeta.Seen(version + 1, "x" * 64, "mounts_a")
    reasons = _check(repo, keys, now, seen=seen)
    assert len(reasons) == 1 and f"version {version} is older than version {version + 1}" in reasons[0]
    assert "(rollback)" in reasons[0]
    same = releasemeta.Seen(version, "x" * 64, "mounts_a")
    assert "with another content" in _check(repo, keys, now, seen=same)[0]
    genuine = releasemeta.Seen(version, releasemeta.read(repo / releasemeta.METADATA).envelope.sha256, "root")
    assert _check(repo, keys, now, seen=genuine) == []


def test_a_version_from_the_future_is_refused(repo, keys, now):
    releasemeta.sign_repository(repo, keys.controller, keys.policy(), version=2**40, now=now)
    reasons = _check(repo, keys, now)
    assert len(reasons) == 1 and "(fast-forward)" in reasons[0], reasons


def test_another_species_release_is_refused(repo, keys, now):
    assert "a release of client, this image is gateway" in _check(repo, keys, now, species="gateway")[0]


def test_metadata_signed_by_a_developer_is_refused(repo, keys, now):
    releasemeta.sign_repository(repo, keys.developer, keys.policy(), now=now)
    reasons = _check(repo, keys, now)
    assert reasons and "signature refused" in reasons[0] and "is not issued by the controller CA" in reasons[0]


def test_an_edited_statement_is_refused(repo, keys, now):
    _rewrite(repo, lambda d: d["signed"].update(expires="2099-01-01T00:00:00Z"))
    reasons = _check(repo, keys, now)
    assert len(reasons) == 1 and "the signature does not match the document" in reasons[0], reasons


def test_a_revoked_controller_is_refused_with_the_crl_the_metadata_carries(repo, keys, tmp_path, now):
    before = keys.policy()  # what the device has: a CRL that does not list controller-1 yet
    pki.revoke(keys.directory, keys.directory / "controller-1.pem", devpki.SECRET)
    releasemeta.sign_repository(repo, keys.controller, keys.policy(), now=now)  # carries the new CRL
    reasons = _check(repo, keys, dt.datetime.now(dt.UTC), policy=before)
    assert reasons and "is revoked since" in reasons[0], reasons


def test_a_crl_its_ca_did_not_sign_is_ignored(repo, keys, tmp_path):
    other = devpki.ensure(tmp_path / "other-pki")
    statement = releasemeta.read(repo / releasemeta.METADATA).statement
    foreign = (other.directory / "controller-ca.crl.pem").read_text()
    forged = dataclasses.replace(statement, crls={"controller": (foreign,)})
    policy = releasemeta.fresh_policy(keys.policy(), forged)
    assert policy.controller.crls == keys.policy().controller.crls


def test_a_stale_crl_is_refused_with_its_date(repo, keys, now):
    crl = keys.policy().controller.crls[0]
    later = crl.next_update_utc + dt.timedelta(days=1)
    releasemeta.sign_repository(repo, keys.controller, keys.policy(), expires_days=365, now=later
                                - dt.timedelta(days=2))
    reasons = _check(repo, keys, later)
    assert any(f"is stale (next update was {crl.next_update_utc:%Y-%m-%d})" in r for r in reasons), reasons


@pytest.mark.parametrize(("raw", "words"), [
    (b'{"signed": {"a": 1, "a": 2}, "signatures": []}', "the key 'a' is given twice"),
    (b'{"signed": {"a": 1.5}, "signatures": []}', "numbers in a signed document are integers"),
    (b'{"signed": {"a": NaN}, "signatures": []}', "numbers in a signed document are integers"),
    (b'{"signed": {}, "signatures": []}', "exactly one signature is expected, found 0"),
    (b'[1, 2]', "a signed document is"),
    (b'\xff', "not UTF-8 text"),
    (b'{"signed": ' * 5000, "not a JSON document"),
])
def test_malformed_documents_are_refused_with_their_reason(raw, words):
    with pytest.raises(envelope.EnvelopeError, match=words):
        envelope.read(raw, "release.json")


def test_an_unsigned_draft_is_refused_with_the_command_to_sign_it(tmp_path, keys):
    debs = [_deb(tmp_path, keys, "clip-core-conf", "4.5.1")]
    repository.publish(debs, keys.policy(), tmp_path / "draft")
    releasemeta.write_draft(tmp_path / "draft", "client")
    with pytest.raises(envelope.EnvelopeError) as exc:
        releasemeta.read(tmp_path / "draft" / releasemeta.METADATA)
    assert "clipbuild repo sign-metadata" in exc.value.hint


def test_signing_refuses_a_repository_changed_since_its_draft(repo, keys, now):
    index = next(repo.glob("clip/clip-core-conf/dists/*/main/*/Packages.gz"))
    index.write_bytes(index.read_bytes() + b"")
    pool = repo / "clip" / "clip-core-conf" / "pool" / "busybox_1.35.0_amd64.deb"
    pool.write_bytes(pool.read_bytes() + b"x")
    with pytest.raises(RepositoryError, match="size or SHA-256 is not the one"):
        releasemeta.sign_repository(repo, keys.controller, keys.policy(), now=now)


def test_versions_only_grow(repo, keys, now):
    first = releasemeta.read(repo / releasemeta.METADATA).statement.version
    again = releasemeta.sign_repository(repo, keys.controller, keys.policy(), now=now)
    assert again.version == first + 1
    with pytest.raises(SigningError, match="versions only grow"):
        releasemeta.sign_repository(repo, keys.controller, keys.policy(), version=5, now=now)


def test_records_are_genuine_or_refused(repo, keys):
    raw = (repo / releasemeta.METADATA).read_bytes()
    seen = releasemeta.read_record(raw, "mounts_a", keys.policy())
    assert seen.version == releasemeta.read(repo / releasemeta.METADATA).statement.version
    data = json.loads(raw)
    data["signed"]["version"] += 1000
    edited = json.dumps(data).encode()
    with pytest.raises(RepositoryError, match=r"does not verify .* the image was edited"):
        releasemeta.read_record(edited, "mounts_a", keys.policy())


def test_endless_data_stops_at_the_signed_size(repo, tmp_path):
    statement = releasemeta.read(repo / releasemeta.METADATA).statement
    entry = statement.repositories["clip/clip-core-conf"].entry("pool/busybox_1.35.0_amd64.deb")
    pool = repo / "clip" / "clip-core-conf" / "pool" / "busybox_1.35.0_amd64.deb"
    with pool.open("ab") as stream:
        stream.write(b"\0" * (8 << 20))
    with pytest.raises(RepositoryError, match=f"larger than the {entry.size} bytes .* \\(endless data\\)"):
        intake.read_repository(repo, statement, tmp_path / "scratch")


def test_a_package_the_metadata_does_not_list_is_refused(repo, keys, tmp_path):
    statement = releasemeta.read(repo / releasemeta.METADATA).statement
    (tmp_path / "x").mkdir()
    other = _deb(tmp_path / "x", keys, "busybox", "1.36.0")
    pool = repo / "clip" / "clip-core-conf" / "pool"
    (pool / other.name).write_bytes(other.read_bytes())
    stanzas = [repository.stanza(repository.read_package(deb), f"pool/{deb.name}")
               for deb in sorted(pool.glob("*.deb")) if deb.name != "busybox_1.35.0_amd64.deb"]
    index = next(repo.glob("clip/clip-core-conf/dists/*/main/*/Packages.gz"))
    forged = gzip.compress("\n".join(stanzas).encode(), mtime=0)
    index.write_bytes(forged)
    # The forged index's size depends on the packages' digests: longer than the signed one, it is refused
    # unread; otherwise by its digest.
    longer = len(forged) > statement.repositories["clip/clip-core-conf"].index_size
    words = (r"Packages.gz: larger than .* \(endless data\)" if longer
             else r"Packages.gz: .* not the file that was signed")
    with pytest.raises(RepositoryError, match=words):
        intake.read_repository(repo, statement, tmp_path / "scratch")


def test_a_repository_of_another_release_is_refused(repo, keys, tmp_path):
    statement = releasemeta.read(repo / releasemeta.METADATA).statement
    (tmp_path / "apps").mkdir()
    extra = _deb(tmp_path / "apps", keys, "clip-apps-conf", "4.5.1", Priority="Important")
    repository.publish([extra], keys.policy(), tmp_path / "other")
    (tmp_path / "other" / "clip" / "clip-apps-conf").rename(repo / "clip" / "clip-apps-conf")
    with pytest.raises(RepositoryError, match=r"not in the signed release metadata .* \(mix-and-match\)"):
        intake.read_repository(repo, statement, tmp_path / "scratch")


def test_a_dependency_outside_the_release_is_refused(tmp_path, keys):
    statement = releasemeta.Statement("client", "4.5.1", {"clip/clip-core-conf": releasemeta.Repository(
        "clip/clip-core-conf", "dists/clip/main/binary-amd64/Packages.gz", 0, "0" * 64,
        (releasemeta.Entry("pool/a.deb", "busybox", "1.35.0", 1, "0" * 64),))})
    package = repository.read_package(_deb(tmp_path, keys, "busybox", "1.35.0", Depends="libc6 | musl, evil (>= 1)"))
    reasons = intake.undeclared_dependencies([package], statement)
    why = "no package of the signed release metadata or installed provides it (extraneous dependency)"
    assert [r.split(": ", 1)[1] for r in reasons] == [f"Depends libc6 | musl: {why}", f"Depends evil (>= 1): {why}"]
    assert intake.undeclared_dependencies([package], statement, {"musl", "evil"}) == []


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink", "huge"])
def test_metadata_that_is_not_a_small_regular_file_is_refused_without_hanging(repo, kind, tmp_path):
    path = repo / releasemeta.METADATA
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        (tmp_path / "elsewhere.json").write_text("{}")
        path.symlink_to(tmp_path / "elsewhere.json")
    else:
        with path.open("wb") as stream:
            stream.truncate(envelope.MAX_BYTES + 1)
    with pytest.raises(RepositoryError) as exc:
        releasemeta.read(path)
    words = {"fifo": "FIFO", "directory": "directory", "symlink": "symbolic link", "huge": "bytes allowed here"}
    assert words[kind] in str(exc.value), str(exc.value)
