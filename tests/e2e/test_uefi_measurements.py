"""End to end, countersigned measurements (docs/boot.md, "Measured boot and countersigned measurements"): a
development release on the UEFI path comes with OUT/measurements.json, signed at once by the development
controller; it verifies, and the release's image is the one it measures (PCRs computed again from the image's
ESP); the boot check compares what the guest reads from its TPM with the countersigned values; an image that is
not the measured one is refused before anything boots.

The release's image is the session's UEFI client image: its step is the one tests/e2e/test_uefi.py builds
(`image client --bootloader systemd-boot`), so whichever module runs second takes it from the step cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipbuild.image import inspection
from clipbuild.signing import devpki
from tests.e2e.support import release, sparse_copy

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def uefi_release(e2e_project, client_build, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uefi-release")
    return release(e2e_project, "--bootloader", "systemd-boot", "--out", str(out))


def _policy() -> str:
    return str(devpki.location() / "policy.yaml")


def test_a_development_release_countersigns_what_its_image_measures(e2e_project, uefi_release):
    assert uefi_release["measurements_signed"] is True
    measured = Path(uefi_release["measurements"])
    assert measured == Path(uefi_release["image"]).parent / "measurements.json"
    manifest = json.loads(Path(uefi_release["manifest"]).read_text())
    result = e2e_project.clipbuild("measurements", "verify", str(measured), "--policy", _policy(),
                                   "--image", uefi_release["image"], "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert data["signature"] == [] and data["signer"].startswith("CN=controller-1,")
    statement = data["statement"]
    assert statement["image"] == {"file": manifest["image"]["file"], "sha256": manifest["image"]["sha256"]}
    assert {n: s["pcrs"] for n, s in statement["slots"].items()} == \
        {n: info["pcrs"] for n, info in manifest["slots"].items()}
    checks = {c["check"]: c["ok"] for c in data["image"]["checks"]}
    assert all(checks.values()) and checks["slot a: PCRs 4, 7, 11 computed again from the ESP's files"]


def test_the_boot_check_compares_the_guest_pcrs_with_the_countersigned_ones(e2e_project, uefi_release):
    result = e2e_project.clipbuild("vm", uefi_release["image"], "--check", "--json", "--timeout", "240",
                                   "--measurements", uefi_release["measurements"])
    assert result.returncode == 0, result.stderr[-2000:]
    booted = json.loads(result.stdout)
    assert booted["ok"] and booted["slot"] == "a", booted["reason"]
    signed = json.loads(Path(uefi_release["measurements"]).read_text())["signed"]
    report = booted["uefi"]
    assert {"4": report["pcr4"], "7": report["pcr7"], "11": report["pcr11"]} == signed["slots"]["a"]["pcrs"]


def test_an_image_that_is_not_the_measured_one_is_refused_before_it_boots(e2e_project, uefi_release, tmp_path):
    image = sparse_copy(uefi_release["image"], tmp_path / "other.img")
    home = inspection.read(image).entry("home")
    with image.open("r+b") as stream:  # one byte of the shared home partition: nothing the boot measures
        stream.seek(home.start + home.size // 2)
        stream.write(b"\1")
    booted = e2e_project.clipbuild("vm", str(image), "--check", "--measurements", uefi_release["measurements"])
    assert booted.returncode == 2 and "not " + str(image) in booted.stderr, booted.stderr[-2000:]
    assert "QEMU" not in booted.stderr and not (e2e_project.workdir / "vm" / f"{image.name}.console.log").exists()
    verified = e2e_project.clipbuild("measurements", "verify", uefi_release["measurements"], "--policy", _policy(),
                                     "--image", str(image))
    assert verified.returncode == 1 and f"FAILED image {image.name}: SHA-256" in verified.stdout, verified.stdout
