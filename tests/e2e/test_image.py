"""End to end: `clipbuild image` on the e2e project (tests/e2e/support.py), booted in QEMU, inspected, rebuilt.

Reuses the session's client build (tests/e2e/conftest.py) and its package store: what is measured here is
packaging, signing, image assembly and boot, all with the real tools (dpkg, mksquashfs, mkfs.ext4, veritysetup,
syslinux, sgdisk, QEMU).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clipbuild.core.digest import sha256_file
from clipbuild.core.run import run
from clipbuild.image import inspection
from clipbuild.signing import devpki, trust, truststore
from tests.e2e.support import Project, kernel_version, sparse_copy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
KERNEL = kernel_version()


@pytest.fixture(scope="module")
def project(e2e_project: Project, client_build: dict) -> Project:
    return e2e_project


@pytest.fixture(scope="module")
def client(client_image: dict) -> dict:
    return client_image


def manifest(built: dict) -> dict:
    return json.loads(Path(built["manifest"]).read_text())


def test_the_client_image_boots_to_its_marker(project, client):
    result = project.clipbuild("vm", client["image"], "--check", "--json", "--timeout", "240")
    assert result.returncode == 0, result.stderr + result.stdout
    check = json.loads(result.stdout)
    assert check["ok"] and check["slot"] == "a"
    assert 'release="CLIP-RM 4.5.0"' in check["marker"]
    assert f"roothash={manifest(client)['slots']['a']['root_hash']}" in check["marker"]
    console = Path(check["log"]).read_text()
    assert f"CLIP: species client, build {KERNEL}" in console  # the species kernel
    assert "target=verity state=V" in console and "jails=8" in console
    assert " zlib=1.2.13 " in check["marker"]  # clip-sysinfo ran on musl with libz.so.1 from the image
    assert "EXT4-fs (vda" in console  # fstab mounted the mounts, home, log and RM partitions
    assert_selftests_passed(check, manifest(client))
    assert_jails_proven(check, manifest(client), ["update", "admin", "audit", "user", "ike", "rm_h", "rm_b"])
    homes = {j["name"]: {r["rule"]: r for r in j["rules"]} for j in check["jails"]}
    for level in ("rm_h", "rm_b"):  # each level's home mark is absent from everything the other can reach
        assert homes[level]["homes"]["result"] == "ok", homes[level]["homes"]


def assert_selftests_passed(check: dict, built: dict) -> None:
    """Every self-test the booted slot ships ran inside the system and passed, as the host expected."""
    shipped = built["slots"][check["slot"]]["selftests"]
    assert sorted(t["name"] for t in check["selftests"] if t["ok"]) == shipped
    assert f" selftests={len(shipped)}" in check["marker"]


RULES = ("namespaces", "processes", "root-readonly", "noexec", "capabilities", "no-new-privs", "mounts", "hostname",
         "network")


def assert_jails_proven(check: dict, built: dict, started: list[str]) -> None:
    """Every jail the slot starts is running and passed every rule from inside; x11 is rendered but idle."""
    expected = built["slots"][check["slot"]]["jails"]
    assert [j["name"] for j in expected if j["start"]] == started
    reports = {j["name"]: j for j in check["jails"]}
    assert reports["x11"]["state"] == "idle" and "no graphics stack" in reports["x11"]["detail"]
    for name in started:
        assert reports[name]["state"] == "ok", reports[name]
        results = {r["rule"]: r["result"] for r in reports[name]["rules"]}
        assert all(results.get(rule) in ("ok", "skipped") for rule in RULES), (name, results)
        assert results["root-readonly"] == results["noexec"] == results["capabilities"] == "ok", (name, results)
    assert f" jails={len(started)}/{len(expected)}" in check["marker"]


def test_the_manifest_and_the_layout_are_clip_s(client):
    m = manifest(client)
    assert m["signing"] == "development" and m["species"] == "client" and m["active_slot"] == "a"
    labels = [p["label"] for p in m["partitions"]]
    assert labels == ["boot", "home", "log", "root_a", "root_a_verity", "mounts_a", "swap", "rm_h", "rm_b",
                      "root_b", "root_b_verity", "mounts_b"]
    assert m["slots"]["a"]["root_hash"] != m["slots"]["b"]["root_hash"]  # own salt per slot
    packages = {(p["set"], p["package"]) for p in m["packages"]}
    assert ("clip-core", "clip-kernel") in packages and ("rm-core", "busybox") in packages
    assert {s["role"] for s in m["signers"]} == {"developer", "controller"}
    assert all("DEVELOPMENT" in s["subject"] for s in m["signers"])


def test_inspect_verifies_the_image_from_itself(project, client):
    result = project.clipbuild("inspect", client["image"], "--verify", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    found = json.loads(result.stdout)
    assert found["active_slot"] == "a" and found["signing"] == "development"
    failed = [c for c in found["verify"]["checks"] if not c["ok"]]
    assert failed == []
    checked = {c["check"] for c in found["verify"]["checks"]}
    assert "slot b: root verifies against its root hash (dm-verity)" in checked
    assert "mounts_a: clip/busybox_1.35.0_amd64.deb (developer and controller signatures)" in checked
    # the installed trees read back: every package with its size, the ELF files checked, none failing
    trees = {t["tree"]: t for t in found["installed"]}
    assert set(trees) == {"slot a (root and /usr/local)", "rm_h (/vservers/rm_h)", "rm_b (/vservers/rm_b)"}
    packages = {p["package"]: p for p in trees["slot a (root and /usr/local)"]["packages"]}
    assert packages["busybox"]["elf_files"] == 1 and packages["busybox"]["installed_size"] > 1 << 20
    assert packages["clip-sysinfo"]["elf_files"] == 1 and packages["clip-apps-conf"]["elf_files"] == 0
    assert all(t["ok"] and t["failures"] == [] for t in trees.values())


def test_a_warm_rebuild_is_a_no_op_and_the_same_inputs_give_the_same_image(project, client, tmp_path):
    again = project.image("client")
    assert again["sha256"] == client["sha256"]
    elsewhere = project.image("client", workdir=tmp_path / "second")  # a new work directory: all re-done
    assert elsewhere["sha256"] == client["sha256"]
    assert Path(elsewhere["image"]).read_bytes() == Path(client["image"]).read_bytes()


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_damaged_cached_image_is_detected_and_rebuilt_to_the_same_bytes(project, client, damage):
    obj = (project.workdir / "steps" / "client" / "image").resolve()
    cached = next((obj / "out").glob("*.img"))
    if damage == "deleted":
        cached.rename(project.workdir / "moved-away.img")  # as a user moving the image out of the cache
    else:
        with cached.open("r+b") as stream:
            stream.truncate(cached.stat().st_size // 2)
    explained = project.clipbuild("plan", "client", "--explain")
    assert "its cached output is damaged (out/" in explained.stdout, explained.stdout
    result = project.clipbuild("image", "client", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout)["sha256"] == client["sha256"]
    assert project.clipbuild("cache", "check").returncode == 0


def test_development_and_release_images_have_distinct_names(client):
    assert Path(client["image"]).name == "client-4.5.0-dev.img"


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as stream:
        stream.seek(offset)
        byte = stream.read(1)
        stream.seek(offset)
        stream.write(bytes([byte[0] ^ 0xFF]))


def test_a_flipped_root_byte_fails_closed(project, client, tmp_path):
    broken = tmp_path / "broken.img"
    sparse_copy(client["image"], broken)
    root = next(p for p in manifest(client)["partitions"] if p["label"] == "root_a")
    _flip(broken, root["start"] + 100)  # the squashfs superblock: read when the kernel mounts the root
    result = project.clipbuild("vm", str(broken), "--check", "--json", "--timeout", "240")
    assert result.returncode == 1
    check = json.loads(result.stdout)
    assert not check["ok"] and "Kernel panic" in check["reason"] and "corrupted" in check["reason"], check
    assert "error: boot check of broken.img failed" in result.stderr
    verify = project.clipbuild("inspect", str(broken), "--verify")
    assert verify.returncode == 1
    assert "FAILED slot a: root verifies against its root hash (dm-verity)" in verify.stdout


def test_a_tampered_package_in_the_signed_pool_is_healed_by_the_cache_check(project, client):
    """Someone changes a signed package in the work directory: the executor sees the object changed, signs
    again, and the image is the one the untouched pool gave."""
    obj = (project.workdir / "steps" / "client" / "sign" / "clip-core").resolve()
    _flip(obj / "out" / "debs" / "clip-sysinfo_1.1.0_amd64.deb", 300)
    result = project.clipbuild("image", "client")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sign/clip-core: running (its cached output is damaged (out/debs/clip-sysinfo_1.1.0_amd64.deb was " \
           "modified since it was committed))" in result.stderr
    assert project.image("client")["sha256"] == client["sha256"]


def test_a_tampered_package_in_the_signed_pool_stops_the_build(project, client):
    """... and one who also rewrites the object's recorded digest still meets the image step's signature
    check: nothing is installed."""
    workdir = project.workdir
    obj = (workdir / "steps" / "client" / "sign" / "clip-core").resolve()
    victim = obj / "out" / "debs" / "clip-sysinfo_1.1.0_amd64.deb"
    original, recorded = victim.read_bytes(), (obj / "manifest.json").read_text()
    shutil.rmtree((workdir / "steps" / "client" / "image").resolve())  # the image must be assembled again
    try:
        _flip(victim, 300)
        forged = json.loads(recorded)
        forged["outputs"]["debs/clip-sysinfo_1.1.0_amd64.deb"] = "sha256:" + sha256_file(victim)
        (obj / "manifest.json").write_text(json.dumps(forged))
        result = project.clipbuild("image", "client")
    finally:
        victim.write_bytes(original)
        (obj / "manifest.json").write_text(recorded)
    assert result.returncode == 1
    assert "package(s) fail the trust policy" in result.stderr and "nothing was installed" in result.stderr
    line = next(line for line in result.stderr.splitlines() if "clip-sysinfo_1.1.0_amd64.deb" in line)
    assert "clip-core/clip-sysinfo_1.1.0_amd64.deb: dev_sign: the signature does not match" in line, line
    assert project.image("client")["sha256"] == client["sha256"]  # and back to the good image


def _countersigned(project: Project, pki: Path, source: Path, batch: Path) -> list[str]:
    """A controller batch of the .debs in `source`, signed and countersigned with the PKI in `pki`."""
    policy = str(pki / "policy.yaml")
    shutil.copytree(source, batch)
    debs = sorted(str(p) for p in batch.glob("*.deb"))
    assert project.clipbuild("sign", "--role", "developer", "--key", str(pki / "developer-1.key"),
                             "--cert", str(pki / "developer-1.pem"), "--policy", policy, *debs).returncode == 0
    assert project.clipbuild("countersign", str(batch), "--key", str(pki / "controller-1.key"),
                             "--cert", str(pki / "controller-1.pem"), "--policy", policy).returncode == 0
    return ["--batch", str(batch)]


def test_a_release_takes_countersigned_batches_only(project, client, tmp_path):
    project.env["CLIPBUILD_PASSPHRASE"] = "e2e only"
    pki = tmp_path / "pki"
    assert project.clipbuild("pki", "init", str(pki)).returncode == 0
    policy = str(pki / "policy.yaml")
    debs = project.workdir / "steps" / "client" / "package"
    # The development build's clip-core packages: their trust store is the development PKI's.
    dev_core = _countersigned(project, pki, debs / "clip-core" / "out" / "debs", tmp_path / "dev-batches" / "core")
    # A release is built for its policy: only the trust store package (clip-update-keys) differs.
    packaged = project.clipbuild("package", "client", "--release", "--policy", policy, "--json")
    assert packaged.returncode == 0, packaged.stderr[-3000:]
    batches = []
    for name in ("clip-core", "clip-apps", "rm-core", "rm-apps"):
        batches += _countersigned(project, pki, debs / name / "out" / "debs", tmp_path / "batches" / name)
    out = tmp_path / "release"
    released = project.image("client", "--release", "--policy", policy, "--out", str(out), *batches)
    m = manifest(released)
    assert Path(released["image"]).name == "client-4.5.0.img"
    assert m["signing"] == "release" and all("clipbuild test PKI" in s["subject"] for s in m["signers"])
    verified = project.clipbuild("inspect", released["image"], "--verify", "--policy", policy)
    assert verified.returncode == 0, verified.stdout[-2000:]
    assert _trust_store(Path(released["image"]), tmp_path / "root") == truststore.canonical(
        trust.load_policy(Path(policy)))
    # Packages built for another trust store (the development one) are refused for this release.
    refused = project.clipbuild("image", "client", "--release", "--policy", policy, "--out", str(out),
                                *dev_core, *batches[2:])
    assert refused.returncode == 1
    line = next(line for line in refused.stderr.splitlines() if "clip-update-keys_4.5.0_amd64.deb: " in line)
    assert "not the package this build made" in line and "built for another trust policy" in line
    assert "clipbuild package SPECIES --release --policy FILE" in refused.stderr
    # A package changed after the controller countersigned it is refused, by name and rule.
    _flip(tmp_path / "batches" / "clip-core" / "busybox_1.35.0_amd64.deb", 2000)
    refused = project.clipbuild("image", "client", "--release", "--policy", policy, "--out", str(out), *batches)
    assert refused.returncode == 1
    assert "busybox_1.35.0_amd64.deb: changed after the controller countersigned it" in refused.stderr
    # Without batches there is no release.
    assert project.clipbuild("image", "client", "--release").returncode == 2


def _trust_store(image: Path, scratch: Path) -> dict:
    """The canonical form of the trust store in slot A's root, read back from the image's squashfs."""
    found = inspection.read(image)
    scratch.mkdir()
    copied = inspection.copy_root(found, "a", found.manifest["slots"]["a"], scratch)
    assert copied is not None
    run(["unsquashfs", "-no-xattrs", "-d", str(scratch / "root"), str(copied[0]), truststore.KEYS_DIR])
    return truststore.canonical(truststore.load(scratch / "root"))


def test_the_image_carries_the_development_trust_store(client, tmp_path):
    assert _trust_store(Path(client["image"]), tmp_path / "root") == truststore.canonical(devpki.ensure().policy())


def test_the_gateway_image_boots_too(project):
    gateway = project.image("gateway", "--qcow2")
    assert gateway["copies"] and gateway["copies"][0].endswith(".qcow2")
    result = project.clipbuild("vm", gateway["copies"][0], "--check", "--json", "--timeout", "240")
    assert result.returncode == 0, result.stdout + result.stderr
    check = json.loads(result.stdout)
    assert 'release="CLIP-GTW 4.5.0"' in check["marker"]
    assert "CLIP: species gateway" in Path(check["log"]).read_text()
    assert_selftests_passed(check, json.loads(Path(gateway["manifest"]).read_text()))
    assert_jails_proven(check, json.loads(Path(gateway["manifest"]).read_text()),
                        ["update", "admin", "audit", "user", "ike"])


PLANTED_HEADER = ('EAPI=8\nDESCRIPTION="planted by a test"\nHOMEPAGE="https://example.invalid"\nS="${WORKDIR}"\n'
                  'LICENSE="MIT"\nSLOT="0"\nKEYWORDS="amd64"\n')
PLANTED = {
    # static, not position-independent: an ET_EXEC file (the profile's -fPIE and -pie undone by what follows)
    "planted-nopie": 'src_compile() {\n\tprintf "int main(void) { return 0; }\\n" > nopie.c || die\n'
                     '\t${CC:-gcc} ${CFLAGS} ${LDFLAGS} -fno-pie -no-pie -static -o planted-nopie nopie.c || die\n}\n'
                     'src_install() {\n\texeinto "${CPREFIX:-/usr}/bin"\n\tdoexe planted-nopie\n}\n',
    # linked against a library built beside it and never installed
    "planted-unresolved": 'src_compile() {\n\tprintf "int planted(void) { return 42; }\\n" > lib.c || die\n'
                          '\tprintf "int planted(void);\\nint main(void) { return planted(); }\\n" > main.c || die\n'
                          '\t${CC:-gcc} ${CFLAGS} -fPIC -shared -Wl,-soname,libplanted.so.1 ${LDFLAGS//-pie/} '
                          '-o libplanted.so.1 lib.c || die\n\tln -s libplanted.so.1 libplanted.so || die\n'
                          '\t${CC:-gcc} ${CFLAGS} ${LDFLAGS} -o planted-unresolved main.c -L. -lplanted || die\n}\n'
                          'src_install() {\n\texeinto "${CPREFIX:-/usr}/bin"\n\tdoexe planted-unresolved\n}\n',
}


def test_planted_unhardened_and_unresolved_programs_fail_the_image_with_their_names(project, client):
    """A species derived from client whose apps add a non-PIE program and one needing a library no package
    ships: the image step stops after dpkg, naming each file, its package and the rule (the missing name)."""
    for name, body in PLANTED.items():
        folder = project.root / "overlays" / "clip" / "app-clip" / name
        folder.mkdir()
        (folder / f"{name}-1.0.ebuild").write_text(PLANTED_HEADER + body)
    (project.root / "profiles" / "planted.yaml").write_text(
        "inherits: client\ndescription: the client with planted programs the image checks refuse\n"
        "packages: {clip: {apps: [app-clip/planted-nopie, app-clip/planted-unresolved]}}\n")
    result = project.clipbuild("image", "planted")
    assert result.returncode == 1, result.stderr[-3000:]
    err = result.stderr
    assert "error: step image failed" in err or "problem(s) in the clip (root and /usr/local) tree" in err, err
    assert "/usr/local/bin/planted-nopie (planted-nopie): PIE: an ET_EXEC executable" in err, err
    assert ("/usr/local/bin/planted-unresolved (planted-unresolved): DT_NEEDED: libplanted.so.1 is in none of "
            "/lib, /usr/lib, /lib64, /usr/lib64, /usr/local/lib, /usr/local/lib64") in err, err
    assert not list((project.workdir / "images").glob("planted-*.img"))
