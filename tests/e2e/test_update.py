"""End to end: version N's client image updated to N+1 offline, booted in QEMU on the other slot, rolled back;
repositories with a tampered, unsigned, developer-only or downgraded package refused; an update killed
half-way leaves N booting; apps updated in place, rolled back when dpkg fails, recovered when killed; the age
rule read from the image and overridden on a development image; a rolled-back release not applied again.

N and N+1 are the session's `releases` (tests/e2e/conftest.py): the e2e project's own release and a copy with
baselayout-clip 4.5.1 (core) and clip-apps-conf 4.5.1 (apps), sharing the package store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clipbuild.core.digest import sha256_file
from clipbuild.formats.clipsig import read_layout
from clipbuild.signing import devpki
from clipbuild.signing.signer import sign_bytes
from tests.e2e.support import rebuilt, reindex, resign, sparse_copy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
def image(releases, tmp_path) -> Path:
    return sparse_copy(releases["n"]["image"], tmp_path / "client.img")


def _run(releases, *args: str):
    return releases["project"].clipbuild(*args)


def _repo(releases, which: str) -> Path:
    return Path(releases[which]["repositories"][0]).parent.parent


def _check(releases, image: Path) -> dict:
    result = _run(releases, "vm", str(image), "--check", "--json", "--timeout", "240")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_n_to_n_plus_1_boots_the_other_slot_and_rolls_back(releases, image):
    applied = _run(releases, "update", "apply", str(image), str(_repo(releases, "n1")), "--json")
    assert applied.returncode == 0, applied.stderr[-3000:]
    outcome = json.loads(applied.stdout)
    assert (outcome["updated"], outcome["active_slot"], outcome["version"]) == ("core", "b", "4.5.1")
    booted = _check(releases, image)
    assert booted["slot"] == "b" and 'release="CLIP-RM 4.5.1"' in booted["marker"]
    verified = _run(releases, "inspect", str(image), "--verify", "--json")
    assert verified.returncode == 0, verified.stdout[-3000:]
    slots = json.loads(verified.stdout)["slots"]
    assert (slots["a"]["version"], slots["b"]["version"]) == ("4.5.0", "4.5.1")
    assert _run(releases, "update", "rollback", str(image)).returncode == 0
    again = _check(releases, image)
    assert again["slot"] == "a" and 'release="CLIP-RM 4.5.0"' in again["marker"]


AGE_RULE = "maximum_age: /etc/admin/clip_download/clip_download_clip.conf:5"


def test_the_image_s_rules_apply_and_a_development_image_s_can_be_overridden(releases, image):
    """N's repository is years old (SOURCE_DATE_EPOCH of the e2e project): the image's maximum_age=90 refuses
    it; --max-age 0 lifts the limit on this development image, and the outcome says where each rule came from."""
    before = sha256_file(image)
    refused = _run(releases, "update", "apply", str(image), str(_repo(releases, "n")))
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert f"more than the maximum age of 90 days ({AGE_RULE})" in refused.stderr, refused.stderr[-2000:]
    lifted = _run(releases, "update", "apply", str(image), str(_repo(releases, "n")), "--max-age", "0", "--json")
    assert lifted.returncode == 0, lifted.stderr[-2000:]
    outcome = json.loads(lifted.stdout)
    assert outcome["updated"] == "nothing"
    assert outcome["rules"]["maximum_age_days"] == {"value": 0, "from": "--max-age on a development image"}
    assert outcome["rules"]["install_high_impact_packages"]["clip-core"] == {
        "allowed": False, "from": "/etc/admin/clip_install/clip_install_clip_core.conf:4"}
    assert sha256_file(image) == before


def test_a_rolled_back_release_is_not_applied_again(releases, image):
    assert _run(releases, "update", "apply", str(image), str(_repo(releases, "n1"))).returncode == 0
    back = _run(releases, "update", "rollback", str(image))
    assert back.returncode == 0 and "release 4.5.1 is marked rolled back" in back.stdout, back.stdout + back.stderr
    before = sha256_file(image)
    again = _run(releases, "update", "apply", str(image), str(_repo(releases, "n1")), "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    outcome = json.loads(again.stdout)
    assert (outcome["updated"], outcome["active_slot"], outcome["version"]) == ("nothing", "a", "4.5.0")
    assert any("release 4.5.1 was rolled back on this image; waiting for a newer release" in note
               for note in outcome["notes"]), outcome["notes"]
    assert sha256_file(image) == before


def _bad_repo(releases, tmp_path: Path, how: str) -> Path:
    repo = tmp_path / f"repo-{how}"
    shutil.copytree(_repo(releases, "n1"), repo)
    conf = repo / "clip" / "clip-core-conf"
    victim = conf / "pool" / "baselayout-clip_4.5.1_amd64.deb"
    data = victim.read_bytes()
    unsigned = data[:read_layout(data).deb_end]
    if how == "tampered":
        changed = bytearray(data)
        changed[read_layout(data).deb_end - 100] ^= 0xFF  # in data.tar: the control fields still read
        victim.write_bytes(bytes(changed))
    elif how == "unsigned":
        victim.write_bytes(unsigned)
    elif how == "developer-only":
        victim.write_bytes(sign_bytes(unsigned, "developer", devpki.ensure().developer, 0))
    reindex(conf)
    resign(repo)  # as if the controller's metadata key were stolen: the packages' own signatures still stop it
    return repo


@pytest.mark.parametrize(("how", "reason"), [
    ("tampered", "baselayout-clip_4.5.1_amd64.deb: dev_sign: the signature does not match"),
    ("unsigned", "baselayout-clip_4.5.1_amd64.deb: no dev_sign: the package is not signed"),
    ("developer-only", "baselayout-clip_4.5.1_amd64.deb: no ctrl_sign: a developer signed it, no controller"),
])
def test_bad_repositories_are_refused_with_their_reason(releases, image, tmp_path, how, reason):
    before = image.read_bytes()
    result = _run(releases, "update", "apply", str(image), str(_bad_repo(releases, tmp_path, how)))
    assert result.returncode == 1
    assert "update refused; nothing was written" in result.stderr and reason in result.stderr, result.stderr
    assert image.read_bytes() == before


def test_a_downgrade_is_refused(releases, image, tmp_path):
    assert _run(releases, "update", "apply", str(image), str(_repo(releases, "n1"))).returncode == 0
    # N's metadata is older than N+1's, which the image accepted: refused first for that (rollback).
    result = _run(releases, "update", "apply", str(image), str(_repo(releases, "n")))
    assert result.returncode == 1 and "which this image has already accepted" in result.stderr, result.stderr
    # N's packages under fresh metadata (a controller re-signing an old release): the downgrade check stops it.
    old = tmp_path / "n-resigned"
    shutil.copytree(_repo(releases, "n"), old)
    resign(old)
    result = _run(releases, "update", "apply", str(image), str(old))
    assert result.returncode == 1
    assert "downgrade refused: clip-core-conf 4.5.1 is installed, the repository has 4.5.0" in result.stderr
    # The manifest on the boot partition edited to say 4.4.0 is installed: it decides nothing.
    _edit_manifest(image, tmp_path, lambda m: json.loads(json.dumps(m).replace('"4.5.1"', '"4.4.0"')))
    before = sha256_file(image)
    result = _run(releases, "update", "apply", str(image), str(old))
    assert result.returncode == 1
    assert "downgrade refused: clip-core-conf 4.5.1 is installed, the repository has 4.5.0" in result.stderr
    assert sha256_file(image) == before


def _edit_manifest(image: Path, scratch: Path, change) -> None:
    from clipbuild.image import inspection
    from clipbuild.update import imageedit
    found = inspection.read(image)
    imageedit.write_manifest(found, change(found.manifest), scratch)


def _point_root_b_at_root_a(manifest: dict) -> dict:
    parts = {p["label"]: p for p in manifest["partitions"]}
    parts["root_b"].update(start=parts["root_a"]["start"], size=parts["root_a"]["size"])
    return manifest


def _hostile(how: str, image: Path, tmp_path: Path) -> Path | None:
    """The image (or what lies beside it) damaged as an attacker would; returns a file that must survive."""
    from clipbuild.image import bootloader, inspection
    from clipbuild.update import imageedit
    if how == "manifest moves root_b onto root_a":
        _edit_manifest(image, tmp_path, _point_root_b_at_root_a)
    elif how == "switch names slot c":
        found = inspection.read(image)
        imageedit.write_boot_file(found.mtools(), bootloader.SWITCH, "include extlinux_c.conf\n", tmp_path,
                                  found.manifest["source_date_epoch"])
    elif how == "truncated":
        with image.open("r+b") as stream:
            stream.truncate(image.stat().st_size - (64 << 20))
    elif how == "planted journal":
        victim = tmp_path / "victim"
        victim.write_bytes(b"precious")
        Path(str(image) + ".clipbuild-update.json").write_text(json.dumps(
            {"target": "a", "version": "4.5.0", "state": "apps: writing", "backup": str(victim)}))
        return victim
    return None


@pytest.mark.parametrize(("how", "reason"), [
    ("manifest moves root_b onto root_a", "root_b: the manifest on the boot partition disagrees with the GPT"),
    ("switch names slot c", "extlinux.conf selects slot 'c', which the image does not have"),
    ("truncated", "truncated image?"),
    ("planted journal", "update journal refused: not in the shape clipbuild writes; nothing was done"),
])
def test_a_damaged_image_is_refused_before_any_write(releases, image, tmp_path, how, reason):
    survivor = _hostile(how, image, tmp_path)
    before = sha256_file(image)
    for command in (["apply", str(image), str(_repo(releases, "n1"))], ["rollback", str(image)]):
        result = _run(releases, "update", *command)
        assert result.returncode == 1 and reason in result.stderr, result.stderr[-2000:]
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
        assert sha256_file(image) == before
    assert survivor is None or survivor.read_bytes() == b"precious"


@pytest.mark.parametrize("state", ["writing the partitions of the inactive slot", "switching to the new slot"])
def test_an_update_killed_half_way_leaves_n_booting(releases, image, state):
    releases["project"].env["CLIPBUILD_UPDATE_FAULT"] = state
    try:
        killed = _run(releases, "update", "apply", str(image), str(_repo(releases, "n1")))
    finally:
        del releases["project"].env["CLIPBUILD_UPDATE_FAULT"]
    assert killed.returncode == 9
    assert _check(releases, image)["slot"] == "a"
    resumed = _run(releases, "update", "apply", str(image), str(_repo(releases, "n1")))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"was interrupted at '{state}'" in resumed.stdout
    assert not Path(str(image) + ".clipbuild-update.json").exists()


@pytest.fixture(scope="module")
def apps_repo(releases, tmp_path_factory) -> Path:
    """N+1's repositories without the core one, signed as such: an apps-only release (clip-apps-conf 4.5.1)."""
    repo = tmp_path_factory.mktemp("apps") / "repo"
    shutil.copytree(_repo(releases, "n1"), repo)
    shutil.rmtree(repo / "clip" / "clip-core-conf")
    resign(repo)
    return repo


def _apps_release_file(image: Path, scratch: Path) -> str:
    from clipbuild.core.run import run
    from clipbuild.image import gpt

    _, entries = gpt.read_table(image)
    mounts = next(e for e in entries if e.label == "mounts_a")
    gpt.copy_out(image, mounts.start, mounts.size, scratch / "mounts.img")
    return run(["debugfs", "-R", "cat /usr/share/clip/clip-apps-release", scratch / "mounts.img"]).stdout.strip()


def test_apps_are_updated_in_place_on_the_running_slot(releases, apps_repo, image, tmp_path):
    applied = _run(releases, "update", "apply", str(image), str(apps_repo), "--json")
    assert applied.returncode == 0, applied.stderr[-3000:]
    outcome = json.loads(applied.stdout)
    assert (outcome["updated"], outcome["active_slot"]) == ("apps", "a")
    assert _apps_release_file(image, tmp_path) == "4.5.1"
    found = json.loads(_run(releases, "inspect", str(image), "--verify", "--json").stdout)
    assert found["verify"]["ok"], [c for c in found["verify"]["checks"] if not c["ok"]]
    assert {p["package"]: p["version"] for p in found["packages"]}["clip-apps-conf"] == "4.5.1"
    assert _check(releases, image)["slot"] == "a"


def _unmet_apps_repo(apps_repo: Path, tmp_path: Path) -> Path:
    """clip-apps-conf 4.5.2, signed and countersigned, in conflict with a package of the core: dpkg fails."""
    repo = tmp_path / "repo-unmet"
    shutil.copytree(apps_repo, repo)
    pool = repo / "clip" / "clip-apps-conf" / "pool"
    deb = next(pool.glob("clip-apps-conf_*.deb"))
    rebuilt(deb, pool / "clip-apps-conf_4.5.2_amd64.deb", tmp_path,  # dpkg refuses it: busybox is installed
            lambda text: text.replace("Version: 4.5.1", "Version: 4.5.2").rstrip("\n") + "\nConflicts: busybox\n")
    deb.unlink()
    reindex(repo / "clip" / "clip-apps-conf")
    resign(repo)
    return repo


def test_a_failing_apps_update_rolls_back_and_writes_nothing(releases, apps_repo, image, tmp_path):
    before = image.read_bytes()
    result = _run(releases, "update", "apply", str(image), str(_unmet_apps_repo(apps_repo, tmp_path)))
    assert result.returncode == 1
    assert "the apps update failed and was rolled back; client.img was not written" in result.stderr
    assert image.read_bytes() == before


def test_an_apps_update_killed_while_writing_is_rolled_back_then_redone(releases, apps_repo, image, tmp_path):
    repo = apps_repo
    releases["project"].env["CLIPBUILD_UPDATE_FAULT"] = "apps: old mounts partition content dropped"
    try:
        killed = _run(releases, "update", "apply", str(image), str(repo))
    finally:
        del releases["project"].env["CLIPBUILD_UPDATE_FAULT"]
    assert killed.returncode == 9
    resumed = _run(releases, "update", "apply", str(image), str(repo))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "the partition was rolled back from its backup" in resumed.stdout
    assert _apps_release_file(image, tmp_path) == "4.5.1"
    assert not list(image.parent.glob("*.backup"))


def test_a_core_update_after_an_apps_update_keeps_the_installed_apps(releases, apps_repo, image, tmp_path):
    """The mirror keeps the old apps package for rollback; the new slot gets the installed one only."""
    core_only = tmp_path / "core-only"
    shutil.copytree(_repo(releases, "n1"), core_only)
    shutil.rmtree(core_only / "clip" / "clip-apps-conf")
    resign(core_only)
    assert _run(releases, "update", "apply", str(image), str(apps_repo)).returncode == 0
    applied = _run(releases, "update", "apply", str(image), str(core_only), "--json")
    assert applied.returncode == 0, applied.stderr[-3000:]
    assert json.loads(applied.stdout)["updated"] == "core"
    found = json.loads(_run(releases, "inspect", str(image), "--verify", "--json").stdout)
    assert found["verify"]["ok"], [c for c in found["verify"]["checks"] if not c["ok"]]
    versions = [p["version"] for p in found["packages"] if p["package"] == "clip-apps-conf"]
    assert versions == ["4.5.1"]
