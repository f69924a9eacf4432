"""End to end, the UEFI boot path (docs/boot.md): the client built with systemd-boot boots on OVMF with the
development Secure Boot keys enrolled and a TPM, Secure Boot enforcing as the booted system reports it, its PCRs
equal to the manifest's predictions; images the firmware must refuse (a flipped byte, unsigned, signed with a key
not enrolled) stop at "Access Denied"; a root modified together with everything on the ESP no longer boots (the
hole of the BIOS path, closed); an update N -> N+1 boots the new slot and blesses it, a new slot that never boots
falls back to the previous one by itself, rollback; the gateway boots the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clipbuild.core.run import run
from clipbuild.formats import pe
from clipbuild.image import esp, fsimage, gpt, inspection, uki
from clipbuild.signing import secureboot
from tests.e2e.support import sparse_copy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
UEFI = ("--bootloader", "systemd-boot")


@pytest.fixture(scope="module")
def uefi_image(e2e_project, client_build, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uefi-client")
    return Path(e2e_project.image("client", *UEFI, "--out", str(out))["image"])


@pytest.fixture
def image(uefi_image, tmp_path) -> Path:
    return sparse_copy(uefi_image, tmp_path / "client.img")


def _check(project, image: Path, *args: str) -> dict:
    result = project.clipbuild("vm", str(image), "--check", "--json", "--timeout", "240", *args)
    data = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {"ok": False,
                                                                                     "reason": result.stderr}
    assert (result.returncode == 0) == data["ok"], result.stderr[-2000:]
    return data


def _slot_uki(image: Path, slot: str, tmp_path: Path) -> tuple[str, Path]:
    """Where slot's UKI is on the ESP, and a copy of it."""
    found = inspection.read(image)
    assert found.esp is not None
    entry = found.esp.entries[slot]
    copy = tmp_path / f"{slot}.efi"
    fsimage.vfat_read(found.mtools(), entry.path, copy)
    return entry.path, copy


def _put(image: Path, path: str, source: Path) -> None:
    fsimage.vfat_replace(inspection.read(image).mtools(), path, source, 1_700_000_000)


def test_boots_with_secure_boot_enforcing_and_the_predicted_pcrs(e2e_project, uefi_image):
    manifest = json.loads(uefi_image.with_name(uefi_image.name.replace(".img", ".manifest.json")).read_text())
    assert manifest["boot"]["loader"] == "systemd-boot"
    booted = _check(e2e_project, uefi_image)
    assert booted["ok"], booted["reason"]
    report = booted["uefi"]
    assert (report["firmware"], report["secureboot"], report["setupmode"], report["lockdown"]) == \
        ("uefi", True, False, "integrity")
    assert report["entry"] == "clip-a.efi" and booted["slot"] == "a"
    assert {"4": report["pcr4"], "7": report["pcr7"], "11": report["pcr11"]} == manifest["slots"]["a"]["pcrs"]
    verified = e2e_project.clipbuild("inspect", str(uefi_image), "--verify", "--json")
    assert verified.returncode == 0, verified.stdout[-3000:]
    checks = {c["check"]: c["ok"] for c in json.loads(verified.stdout)["verify"]["checks"]}
    assert any(name.startswith("slot a: UKI signed with db") and ok for name, ok in checks.items())


def _flip_cmdline(data: bytearray) -> None:
    at = data.index(b"clip.slot=a")
    data[at + len("clip.slot=")] = ord("b")


@pytest.mark.parametrize("how", ["flipped byte", "unsigned", "foreign key"])
def test_the_firmware_refuses_a_kernel_image_that_is_not_ours(e2e_project, image, tmp_path, how):
    path, signed = _slot_uki(image, "a", tmp_path)
    bad = tmp_path / "bad.efi"
    if how == "flipped byte":
        data = bytearray(signed.read_bytes())
        _flip_cmdline(data)
        bad.write_bytes(bytes(data))
    elif how == "unsigned":
        bad.write_bytes(signed.read_bytes())
        run(["sbattach", "--remove", bad])
    else:
        secureboot.sign(_unsigned_copy(signed, tmp_path), bad, secureboot.init(tmp_path / "keys", "intruder"),
                        1_700_000_000)
    _put(image, path, bad)
    booted = _check(e2e_project, image)
    assert not booted["ok"] and "refused" in booted["reason"] and "Access Denied" in booted["reason"]
    assert booted["seconds"] < 120


def _unsigned_copy(signed: Path, tmp_path: Path) -> Path:
    out = tmp_path / "unsigned.efi"
    shutil.copy(signed, out)
    run(["sbattach", "--remove", out])
    return out


def test_a_modified_root_with_a_matching_esp_no_longer_boots(e2e_project, image, tmp_path):
    """The attack the BIOS path cannot stop: change the root, make its verity tree and root hash anew, and put
    the new hash where the boot reads it. On the UEFI path that place is the signed UKI: the attacker's UKI,
    made the way clipbuild makes them but without the db key, is refused by the firmware."""
    found = inspection.read(image)
    info = found.manifest["slots"]["a"]
    data, tree = inspection.copy_root(found, "a", info, tmp_path)
    block = bytearray(data.read_bytes()[:4096])
    block[100] ^= 0xFF
    with data.open("r+b") as stream:
        stream.write(block)
    verity = fsimage.verity_format(data, tree, info["salt"], gpt.stable_guid("attacker", "verity"))
    assert verity.root_hash != info["root_hash"]
    root = found.entry(info["root_partition"])
    hashes = found.entry(info["verity_partition"])
    run(["dd", f"if={data}", f"of={image}", "bs=4096", f"seek={root.start // 4096}", "conv=notrunc,sparse"])
    run(["dd", f"if={tree}", f"of={image}", "bs=4096", f"seek={hashes.start // 4096}", "conv=notrunc,sparse"])
    path, signed = _slot_uki(image, "a", tmp_path)
    sections = tmp_path / "sections"
    sections.mkdir()
    kernel = sections / "linux"
    kernel.write_bytes(pe.section_data(signed.read_bytes(), ".linux") or b"")
    command = (pe.section_data(signed.read_bytes(), ".cmdline") or b"").decode().replace(info["root_hash"],
                                                                                         verity.root_hash)
    osrel = (pe.section_data(signed.read_bytes(), ".osrel") or b"").decode()
    forged = tmp_path / "forged.efi"
    uki.build(uki.UkiParts(kernel, command, osrel), forged, sections, 1_700_000_000)
    _put(image, path, forged)
    booted = _check(e2e_project, image)
    assert not booted["ok"] and "Access Denied" in booted["reason"]


def _n1_repo(releases) -> Path:
    return Path(releases["n1"]["repositories"][0]).parent.parent


def _esp_names(image: Path) -> list[str]:
    return fsimage.vfat_list(inspection.read(image).mtools(), esp.LINUX_DIR)


def test_n_to_n_plus_1_boots_the_new_slot_blesses_it_and_rolls_back(e2e_project, releases, image):
    applied = e2e_project.clipbuild("update", "apply", str(image), str(_n1_repo(releases)), "--json")
    assert applied.returncode == 0, applied.stderr[-3000:]
    assert json.loads(applied.stdout)["active_slot"] == "b"
    assert _esp_names(image) == ["clip-a.efi", "clip-b+3-0.efi"]  # slot B's old UKI is gone
    booted = _check(e2e_project, image)
    assert booted["ok"], booted["reason"]
    assert booted["slot"] == "b" and 'release="CLIP-RM 4.5.1"' in booted["marker"]
    console = Path(booted["log"]).read_text()
    assert "CLIP_BLESSED clip-b+2-1.efi -> clip-b.efi" in console
    verified = e2e_project.clipbuild("inspect", str(image), "--verify", "--json")
    assert verified.returncode == 0, verified.stdout[-3000:]
    assert e2e_project.clipbuild("update", "rollback", str(image)).returncode == 0
    assert _esp_names(image) == ["clip-a.efi", "clip-b+0-0.efi"]
    again = _check(e2e_project, image)
    assert again["ok"] and again["slot"] == "a" and 'release="CLIP-RM 4.5.0"' in again["marker"]


def test_a_new_slot_that_never_boots_falls_back_to_the_previous_one(e2e_project, releases, image, tmp_path):
    applied = e2e_project.clipbuild("update", "apply", str(image), str(_n1_repo(releases)))
    assert applied.returncode == 0, applied.stderr[-3000:]
    found = inspection.read(image)
    root = found.entry(found.manifest["slots"]["b"]["root_partition"])
    with image.open("r+b") as stream:  # slot B's root damaged: its verity check panics, the machine reboots
        for offset in range(0, 64 << 20, 1 << 20):
            stream.seek(root.start + offset)
            stream.write(b"\xff" * 4096)
    booted = _check(e2e_project, image, "--reboots", str(esp.TRIES))
    assert booted["ok"], booted["reason"]
    assert booted["slot"] == "a" and len(booted["failed_boots"]) == esp.TRIES
    assert all("Kernel panic" in failed for failed in booted["failed_boots"])


def test_the_gateway_boots_through_secure_boot(e2e_project, tmp_path):
    built = e2e_project.build("gateway")
    assert built
    out = tmp_path / "gateway"
    image = Path(e2e_project.image("gateway", *UEFI, "--out", str(out))["image"])
    booted = _check(e2e_project, image)
    assert booted["ok"], booted["reason"]
    assert booted["uefi"]["secureboot"] is True and booted["uefi"]["entry"] == "clip-a.efi"


def test_uefi_images_are_reproducible(e2e_project, uefi_image, tmp_path):
    """Another work directory, the same packages and date: the same image, UKIs and signatures included."""
    again = Path(e2e_project.image("client", *UEFI, "--out", str(tmp_path / "out"), workdir=tmp_path / "w")["image"])
    assert again.read_bytes() == uefi_image.read_bytes()
