"""Update checks on their own, with real packages (dpkg-deb) signed by a scratch development PKI: each of
CLIP's download rules refuses with a reason naming the package and the rule."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
from pathlib import Path

import pytest

from clipbuild.core.errors import RepositoryError
from clipbuild.core.run import run
from clipbuild.signing import devpki
from clipbuild.signing.signer import sign_bytes
from clipbuild.signing.trust import load_policy
from clipbuild.update import apply, intake, releasemeta, repository
from clipbuild.update.rules import PARTS, Rules

NOW = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return devpki.ensure(tmp_path_factory.mktemp("pki") / "dev-pki")


def _deb(tmp_path: Path, pki, name: str, version: str = "1.0", *, signed: bool = True, **fields: str) -> Path:
    root = tmp_path / f"{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    control = {"Package": name, "Version": version, "Architecture": "amd64", "Maintainer": "CLIP",
               "Priority": "Required", "Impact": "0", "Distribution": "clip", "Description": "test",
               "Release-Date": "Wed, 25 Nov 2026 10:00:00 +0000", **fields}
    (root / "DEBIAN" / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items() if v))
    (root / "usr").mkdir()
    (root / "usr" / name).write_text(name)
    out = tmp_path / f"{name}_{version}_amd64.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", root, out])
    if signed:
        out.write_bytes(sign_bytes(sign_bytes(out.read_bytes(), "developer", pki.developer, 0), "controller",
                                   pki.controller, 0))
    return out


def _part(tmp_path: Path, pki, **fields: str) -> apply.RepoPart:
    conf = repository.read_package(_deb(tmp_path, pki, "clip-core-conf", "4.5.1", **fields))
    member = repository.read_package(_deb(tmp_path, pki, "busybox", "1.35.0"))
    return apply.RepoPart("clip", "core", conf, (conf, member))


RULES = Rules(now=NOW)


def as_signed(repo: Path) -> releasemeta.Statement:
    """The statement a controller would have signed over REPO's files as they are now, hostile or not (no
    checks here: the tests exercise what intake checks once metadata is accepted)."""
    repositories = {}
    for index in sorted(repo.glob("*/*/dists/*/main/binary-*/Packages.gz")):
        base = index.parents[4]
        raw = index.read_bytes() if index.is_file() else b""
        try:
            stanzas = repository.parse_packages(gzip.decompress(raw).decode(), "test")
        except Exception:  # a damaged index: the statement lists no package, intake refuses the index
            stanzas = []
        entries = tuple(releasemeta.Entry(s.get("Filename", ""), s.get("Package", ""), s.get("Version", ""),
                                          int(s.get("Size", "0")), s.get("SHA256", "")) for s in stanzas)
        name = f"{base.parent.name}/{base.name}"
        repositories[name] = releasemeta.Repository(name, str(index.relative_to(base)), len(raw),
                                                    hashlib.sha256(raw).hexdigest(), entries)
    return releasemeta.Statement("client", "4.5.1", repositories)


def read_repository(repo: Path, scratch: Path) -> dict[str, apply.RepoPart]:
    """The repository read as update apply reads it, under metadata that signed exactly these files."""
    found = intake.read_repository(repo, as_signed(repo), scratch)
    return {name: apply.RepoPart(*value) for name, value in found.items()}


def _reasons(tmp_path, pki, installed=None, rules=RULES, **fields):
    return apply.check_part(_part(tmp_path, pki, **fields), load_policy(pki.policy_path), installed or {}, rules)


def test_a_good_part_passes(tmp_path, pki):
    assert _reasons(tmp_path, pki) == []


@pytest.mark.parametrize(("fields", "expected"), [
    ({"Priority": "Important"}, "clip-core: clip-core-conf_4.5.1_amd64.deb: Priority Important, the core part "
                                "takes Required"),
    ({"Distribution": "rm"}, "Distribution rm, not clip"),
    ({"Impact": "2"}, "Impact 2 (high) and high-impact packages are not allowed here"),
    ({"Release-Date": "Mon, 01 Jan 2024 10:00:00 +0000"}, "released 1060 days ago, more than the maximum age of 90"),
    ({"Release-Date": "Mon, 01 Jan 2035 10:00:00 +0000"}, "is in the future"),
    ({"Release-Date": ""}, "no Release-Date"),
])
def test_each_field_rule_names_package_and_rule(tmp_path, pki, fields, expected):
    reasons = _reasons(tmp_path, pki, **fields)
    assert len(reasons) == 1 and expected in reasons[0], reasons


def test_rules_can_be_relaxed_as_clip_s_configuration_allowed(tmp_path, pki):
    relaxed = Rules(maximum_age_days=0, high_impact=frozenset(PARTS), now=NOW)
    assert _reasons(tmp_path, pki, rules=relaxed, Impact="3", **{"Release-Date": "Mon, 01 Jan 2024 10:00:00 +0000"}) \
        == []


def test_downgrades_are_refused_per_package(tmp_path, pki):
    reasons = _reasons(tmp_path, pki, {"busybox": "1.36.0", "clip-core-conf": "4.5.0"})
    assert reasons == ["clip-core: busybox_1.35.0_amd64.deb: downgrade refused: busybox 1.36.0 is installed, the "
                       "repository has 1.35.0"]
    assert apply.compare_versions("4.5.0", "4.5.0-r1") == -1 and apply.compare_versions("1.10", "1.9") == 1


def test_an_unsigned_package_is_refused(tmp_path, pki):
    conf = repository.read_package(_deb(tmp_path, pki, "clip-core-conf", "4.5.1", signed=False))
    reasons = apply.check_part(apply.RepoPart("clip", "core", conf, (conf,)), load_policy(pki.policy_path), {},
                                Rules(now=NOW))
    assert reasons == ["clip-core: clip-core-conf_4.5.1_amd64.deb: no dev_sign: the package is not signed"]


def test_a_pool_that_disagrees_with_its_index_is_refused(tmp_path, pki):
    conf_dir = tmp_path / "repo" / "clip" / "clip-core-conf"
    (conf_dir / "pool").mkdir(parents=True)
    deb = _deb(tmp_path, pki, "clip-core-conf", "4.5.1")
    (conf_dir / "pool" / deb.name).write_bytes(deb.read_bytes())
    index = conf_dir / "dists" / "clip" / "main" / "binary-amd64"
    index.mkdir(parents=True)
    stanza = repository.stanza(repository.read_package(conf_dir / "pool" / deb.name), f"pool/{deb.name}")
    (index / "Packages.gz").write_bytes(gzip.compress(stanza.encode()))
    signed = as_signed(tmp_path / "repo")
    assert set(intake.read_repository(tmp_path / "repo", signed, tmp_path / "s1")) == {"clip-core"}
    (conf_dir / "pool" / deb.name).write_bytes(deb.read_bytes() + b"\n")
    with pytest.raises(RepositoryError, match=r"larger than the .* bytes the signed release metadata gives it"):
        intake.read_repository(tmp_path / "repo", signed, tmp_path / "s2")
    changed = bytearray(deb.read_bytes())
    changed[-1] ^= 1
    (conf_dir / "pool" / deb.name).write_bytes(bytes(changed))
    with pytest.raises(RepositoryError, match="not the file that was signed"):
        intake.read_repository(tmp_path / "repo", signed, tmp_path / "s4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepositoryError, match="clip/clip-core-conf is in the signed release metadata but not in"):
        intake.read_repository(tmp_path / "empty", signed, tmp_path / "s3")
