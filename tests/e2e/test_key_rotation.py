"""The key rotation drill (P11 item 2), on a release image: N -> N+1 -> N+2.

- N: a release image for a fresh PKI's policy; controller-1 countersigns.
- The compromise: controller-1 is revoked (its CA's CRL says so) and controller-2 issued.
- N+1: a signed core update that ships the new trust store (clip-update-keys 4.5.1: the new CRL), countersigned
  by controller-2, its release metadata signed by controller-2: applied.
- N+2: the same release countersigned and its metadata signed by the revoked controller-1 (a stolen key) is
  refused; countersigned and signed by controller-2, it is accepted.

Every project copy shares the session's package store, so each release builds only what changed (the conf
packages, baselayout-clip and clip-update-keys)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from clipbuild.core.digest import sha256_file
from clipbuild.signing import trust, truststore
from clipbuild.update import releasemeta
from tests.e2e.support import Project, bump, dated_copy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SECRET = "e2e rotation drill"
SETS = ("clip-core", "clip-apps", "rm-core", "rm-apps")
HOUR = 3600


def _ok(result) -> str:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def _packaged(proj: Project, policy: Path, out: Path) -> list[Path]:
    """The species packaged for the release policy, developer-signed, one batch folder per set."""
    _ok(proj.clipbuild("package", "client", "--release", "--policy", str(policy)))
    pki = policy.parent
    folders = []
    for name in SETS:
        folder = out / name
        shutil.copytree(proj.workdir / "steps" / "client" / "package" / name / "out" / "debs", folder)
        _ok(proj.clipbuild("sign", "--role", "developer", "--key", str(pki / "developer-1.key"), "--cert",
                           str(pki / "developer-1.pem"), "--policy", str(policy), *map(str, folder.glob("*.deb"))))
        folders.append(folder)
    return folders


def _countersigned(proj: Project, folders: list[Path], controller: str, policy: Path, out: Path) -> list[Path]:
    """Copies of the developer-signed batches countersigned by `controller` (checked against `policy`)."""
    pki = policy.parent
    batches = []
    for folder in folders:
        batch = out / folder.name
        shutil.copytree(folder, batch)
        _ok(proj.clipbuild("countersign", str(batch), "--key", str(pki / f"{controller}.key"), "--cert",
                           str(pki / f"{controller}.pem"), "--policy", str(policy)))
        batches.append(batch)
    return batches


def _repository(proj: Project, batches: list[Path], controller: str, policy: Path, out: Path) -> Path:
    pki = policy.parent
    _ok(proj.clipbuild("repo", "publish", *map(str, batches), "--policy", str(policy), "--out", str(out),
                       "--species", "client"))
    _ok(proj.clipbuild("repo", "sign-metadata", str(out), "--key", str(pki / f"{controller}.key"), "--cert",
                       str(pki / f"{controller}.pem"), "--policy", str(policy)))
    return out


@pytest.fixture(scope="module")
def drill(e2e_project: Project, client_build: dict, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("drill")
    store, now = e2e_project.env["CLIPBUILD_BINPKGS"], int(time.time())
    copies = {}
    for name, version, age in (("n", "4.5.0", 3 * HOUR), ("n1", "4.5.1", 2 * HOUR), ("n2", "4.5.2", HOUR)):
        copies[name] = dated_copy(base / name, store, now - age)
        copies[name].env["CLIPBUILD_PASSPHRASE"] = SECRET
        if version != "4.5.0":
            bump(copies[name], version)
    proj = copies["n"]
    pki = base / "pki"
    _ok(proj.clipbuild("pki", "init", str(pki)))
    policy = pki / "policy.yaml"
    before = base / "pki-before-revocation"  # what the thief's tools still accept
    shutil.copytree(pki, before)
    # N: a release image, controller-1.
    signed = _packaged(proj, policy, base / "n-signed")
    batches = _countersigned(proj, signed, "controller-1", policy, base / "n-batches")
    image = json.loads(_ok(proj.clipbuild("image", "client", "--json", "--release", "--policy", str(policy),
                                          "--out", str(base / "n-image"),
                                          *(arg for b in batches for arg in ("--batch", str(b))))))["image"]
    # The compromise: controller-1 revoked, controller-2 issued.
    _ok(proj.clipbuild("pki", "issue", str(pki), "--role", "controller", "--name", "controller-2"))
    _ok(proj.clipbuild("pki", "revoke", str(pki), str(pki / "controller-1.pem")))
    # N+1: the new trust store, in a core update countersigned by controller-2.
    signed = _packaged(copies["n1"], policy, base / "n1-signed")
    n1 = _repository(copies["n1"], _countersigned(copies["n1"], signed, "controller-2", policy, base / "n1-b"),
                     "controller-2", policy, base / "n1-repo")
    # N+2, twice: by the stolen controller-1 (its tools use the policy from before the revocation), and by
    # controller-2.
    signed = _packaged(copies["n2"], policy, base / "n2-signed")
    stolen = _repository(copies["n2"], _countersigned(copies["n2"], signed, "controller-1", before / "policy.yaml",
                                                      base / "n2-stolen-b"), "controller-1", before / "policy.yaml",
                         base / "n2-stolen-repo")
    good = _repository(copies["n2"], _countersigned(copies["n2"], signed, "controller-2", policy, base / "n2-b"),
                       "controller-2", policy, base / "n2-repo")
    return {"project": proj, "image": Path(image), "n1": n1, "stolen": stolen, "good": good, "policy": policy,
            "base": base}


def _apply(drill: dict, repo: Path):
    return drill["project"].clipbuild("update", "apply", str(drill["image"]), str(repo), "--json")


def test_rotation_n_to_n1_to_n2(drill):
    image = drill["image"]
    # N -> N+1: controller-2's signatures, accepted by N's store (controller-2 is of the same CA, not revoked).
    outcome = json.loads(_ok(_apply(drill, drill["n1"])))
    assert (outcome["updated"], outcome["version"]) == ("core", "4.5.1")
    # The new slot's root carries the new store: the CRL that revokes controller-1.
    from clipbuild.image import inspection
    from clipbuild.update.root import read_root

    found = inspection.read(image)
    scratch = drill["base"] / "root-b"
    scratch.mkdir()
    store = truststore.load(read_root(found, "b", scratch).tree)
    assert truststore.canonical(store) == truststore.canonical(trust.load_policy(drill["policy"]))
    # N+1 -> N+2 by the stolen key: refused, the image unchanged.
    before = sha256_file(image)
    refused = _apply(drill, drill["stolen"])
    assert refused.returncode == 1, refused.stdout[-2000:]
    assert "signature refused" in refused.stderr and "controller-1" in refused.stderr
    assert "is revoked since" in refused.stderr, refused.stderr[-3000:]
    assert sha256_file(image) == before
    # N+1 -> N+2 by controller-2: accepted.
    outcome = json.loads(_ok(_apply(drill, drill["good"])))
    assert (outcome["updated"], outcome["version"]) == ("core", "4.5.2")
    assert outcome["metadata"]["release"] == "4.5.2"


def test_packages_of_the_revoked_key_are_refused_even_under_good_metadata(drill, tmp_path):
    """The stolen controller key countersigned the packages; the metadata is signed by controller-2 (as if
    the metadata key were not the stolen one): the packages' own signatures are refused."""
    repo = tmp_path / "mixed"
    shutil.copytree(drill["stolen"], repo)
    (repo / releasemeta.METADATA).unlink()
    pki = drill["policy"].parent
    proj = drill["project"]
    _ok(proj.clipbuild("repo", "sign-metadata", str(repo), "--species", "client", "--key",
                       str(pki / "controller-2.key"), "--cert", str(pki / "controller-2.pem"), "--policy",
                       str(drill["policy"])))
    image = tmp_path / "n.img"
    from tests.e2e.support import sparse_copy
    sparse_copy(drill["image"], image)
    # Whatever slot the image is at after the first test, the update is refused for controller-1's packages.
    result = proj.clipbuild("update", "apply", str(image), str(repo))
    assert result.returncode == 1
    assert "ctrl_sign: certificate" in result.stderr and "is revoked since" in result.stderr, result.stderr[-3000:]
