"""Countersigned measurements on their own: a small image of the UEFI path made by the real code (signed UKIs
and systemd-boot on a FAT ESP in a GPT disk, PCR predictions in its manifest), its measurements signed by a
scratch development PKI's controller, then each way to get a verifier to accept wrong values tried."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from clipbuild.core.digest import sha256_file
from clipbuild.core.errors import ImageError, InputError, SigningError
from clipbuild.image import bootproof, esp, fsimage, gpt, measurements, uefi, uki, vm
from clipbuild.image.manifest import EMBEDDED_MANIFEST
from clipbuild.signing import devpki, envelope, secureboot

pytestmark = pytest.mark.skipif(not uki.STUB.is_file() or shutil.which("faketime") is None
                                or shutil.which("sbsign") is None or shutil.which("mcopy") is None,
                                reason="systemd-boot-efi, sbsigntool, mtools and faketime are host packages")
DATE = 1_700_000_000
MIB = 1 << 20


def _slices() -> list[gpt.Slice]:
    boot = gpt.Slice(1, "boot", "boot", "", "data", "vfat", "/boot", (), MIB, 8 * MIB, gpt.TYPES["esp"],
                     gpt.stable_guid("tiny", "boot"))
    out = [boot]
    for number, (slot, role) in enumerate([("a", "data"), ("a", "verity"), ("b", "data"), ("b", "verity")], 2):
        label = f"root_{slot}" + ("_verity" if role == "verity" else "")
        out.append(gpt.Slice(number, label, "root", slot, role, "verity" if role == "verity" else "squashfs",
                             "/" if role == "data" else None, (), (9 + number - 2) * MIB, MIB,
                             gpt.stable_guid("tiny", "type", role), gpt.stable_guid("tiny", label)))
    return out


def _manifest(slices: list[gpt.Slice]) -> dict[str, Any]:
    slots = {name: {"version": "4.5.0", "fs": "squashfs", "root_partition": f"root_{name}",
                    "verity_partition": f"root_{name}_verity", "root_hash": (c * 64), "salt": "ab" * 32,
                    "data_blocks": 16} for name, c in (("a", "1"), ("b", "2"))}
    return {"format": 1, "species": "client", "version": "4.5.0", "release": "CLIP-RM 4.5.0", "description": "tiny",
            "signing": "development", "source_date_epoch": DATE, "active_slot": "a",
            "partitions": [s.to_dict() | {"options": list(s.options)} for s in slices], "slots": slots,
            "packages": [], "signers": []}


def make_image(folder: Path, keys: secureboot.SecureBootKeys) -> tuple[Path, Path]:
    """A 16 MiB disk of the UEFI path, made as the image stage makes one (uefi.esp_files), and the manifest
    published beside it."""
    root, work = folder / "root", folder / "work"
    (root / "etc").mkdir(parents=True)
    (root / "boot").mkdir()
    work.mkdir()
    (root / "etc/os-release").write_text('ID=clip\nPRETTY_NAME="CLIP"\nIMAGE_VERSION=4.5.0\n')
    (root / "boot/vmlinuz-clip").write_bytes(bytes(range(256)) * 400)  # not a kernel: nothing boots it here
    slices = _slices()
    manifest = _manifest(slices)
    settings = uefi.EspSettings({s.label: s.guid for s in slices}, ("console=ttyS0",), keys.directory,
                                keys.digest(), DATE, work)
    files = uefi.esp_files(lambda _: None, settings, root, manifest["slots"], manifest, "CLIP-RM 4.5.0", folder)
    (folder / "embedded.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    files[EMBEDDED_MANIFEST] = folder / "embedded.json"
    fsimage.vfat(folder / "esp.img", 8 * MIB, "12345678", "CLIPBOOT", files, DATE, fat=12)
    image = folder / "client-4.5.0-dev.img"
    gpt.write_table(image, 16 * MIB, slices, "tiny", "boot")
    gpt.copy_into(image, slices[0], folder / "esp.img")
    manifest["image"] = {"file": image.name, "size": image.stat().st_size, "sha256": sha256_file(image)}
    published = folder / "client-4.5.0-dev.manifest.json"
    published.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return image, published


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, secureboot.SecureBootKeys]:
    folder = tmp_path_factory.mktemp("uefi")
    keys = secureboot.init(folder / "sb", "test organisation")
    image, manifest = make_image(folder, keys)
    return image, manifest, keys


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> devpki.DevPki:
    return devpki.ensure(tmp_path_factory.mktemp("pki") / "dev-pki")


@pytest.fixture(scope="module")
def document(built, pki) -> bytes:
    """The image's measurements, countersigned by the scratch PKI's controller (once: each test copies it)."""
    image, _, keys = built
    out = image.with_name(measurements.FILE)
    measurements.countersign(_statement(image), image, keys, pki.controller, out)
    return out.read_bytes()


@pytest.fixture
def image(built, tmp_path: Path) -> Path:
    """A private copy of the image and its manifest (tests edit them)."""
    for path in built[:2]:
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / built[0].name


@pytest.fixture
def keys(built) -> secureboot.SecureBootKeys:
    return built[2]


def _statement(image: Path) -> measurements.Statement:
    path = image.with_name("client-4.5.0-dev.manifest.json")
    return measurements.of_manifest(json.loads(path.read_text()), str(path))


@pytest.fixture
def signed(image, document) -> Path:
    """The measurements beside the test's copy of the image."""
    out = image.with_name(measurements.FILE)
    out.write_bytes(document)
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_signed_measurements_state_the_manifest_predictions_and_verify(image, keys, pki, signed):
    out = signed
    found = measurements.verified(out, pki.policy(), _now())
    manifest = json.loads(image.with_name("client-4.5.0-dev.manifest.json").read_text())
    assert found.statement.pcrs() == {name: info["pcrs"] for name, info in manifest["slots"].items()}
    assert set(found.statement.pcrs()["a"]) == {"4", "7", "11"}
    assert found.statement.pcrs()["a"] != found.statement.pcrs()["b"]  # each slot's own UKI
    assert found.statement.image_sha256 == sha256_file(image)
    assert found.statement.secure_boot["db"]["sha256"] == keys.fingerprint("db")
    assert measurements.for_image(out, image, pki.policy(), _now()) == found.statement
    report = measurements.check_image(found.statement, image, keys)
    assert report.ok and len(report.checks) == 5 + 2 * 4, report.checks


def test_the_same_statement_signed_again_is_the_same_bytes(image, keys, pki, signed, document):
    measurements.countersign(_statement(image), image, keys, pki.controller, signed)  # over itself: the same
    assert signed.read_bytes() == document


def test_a_release_draft_is_unsigned_and_signing_over_it_keeps_its_statement(image, keys, pki):
    statement = _statement(image)
    out = measurements.write_draft(statement, image.with_name(measurements.FILE))
    with pytest.raises(envelope.EnvelopeError, match="exactly one signature is expected"):
        measurements.read(out)
    measurements.countersign(statement, image, keys, pki.controller, out)
    assert measurements.read(out).statement == statement


def test_an_edited_statement_is_refused(image, keys, pki, signed):
    out = signed
    data = json.loads(out.read_text())
    data["signed"]["slots"]["a"]["pcrs"]["7"] = "0" * 64
    out.write_text(json.dumps(data))
    found = measurements.read(out)
    problems = measurements.check_signature(found, pki.policy(), _now())
    assert len(problems) == 1 and "the signature does not match the document" in problems[0], problems
    with pytest.raises(SigningError, match="signature refused"):
        measurements.for_image(out, image, pki.policy(), _now())


def test_measurements_signed_by_a_developer_are_refused(image, keys, pki):
    out = image.with_name(measurements.FILE)
    measurements.countersign(_statement(image), image, keys, pki.developer, out)
    problems = measurements.check_signature(measurements.read(out), pki.policy(), _now())
    assert problems and "is not issued by the controller CA" in problems[0], problems


def test_measurements_are_refused_once_the_controller_certificate_has_expired(image, keys, pki, signed):
    out = signed
    after = pki.controller.cert.not_valid_after_utc + dt.timedelta(days=1)
    problems = measurements.check_signature(measurements.read(out), pki.policy(), after)
    assert any("expired on" in p for p in problems), problems


def test_a_bios_manifest_is_refused(image):
    path = image.with_name("client-4.5.0-dev.manifest.json")
    manifest = json.loads(path.read_text())
    manifest["boot"] = {"loader": "syslinux"}
    with pytest.raises(InputError, match=r"BIOS path \(boot loader syslinux\): it measures nothing"):
        measurements.of_manifest(manifest, str(path))
    del manifest["boot"]
    with pytest.raises(InputError, match="BIOS path"):
        measurements.of_manifest(manifest, str(path))


def test_the_embedded_manifest_is_refused_it_does_not_name_its_image(image):
    path = image.with_name("client-4.5.0-dev.manifest.json")
    manifest = json.loads(path.read_text())
    del manifest["image"]
    with pytest.raises(InputError, match="image: missing"):
        measurements.of_manifest(manifest, str(path))


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.update(extra=1), "signed: unknown key 'extra'"),
    (lambda s: s["slots"]["a"].update(uki=1), "signed.slots.a: unknown key 'uki'"),
    (lambda s: s["slots"]["a"]["pcrs"].pop("11"), "signed.slots.a.pcrs: missing 11"),
    (lambda s: s["slots"]["b"]["pcrs"].update({"4": "AB" * 32}), "signed.slots.b.pcrs.4: 'ABAB"),
    (lambda s: s["image"].update(sha256="12"), "signed.image.sha256: '12' is not a valid value"),
    (lambda s: s["image"].update(file="../x.img"), "signed.image.file"),
    (lambda s: s.update(type="clipbuild-release"), "not clipbuild measurements of format 1"),
    (lambda s: s.update(format=True), "signed.format: an integer is expected"),
    (lambda s: s["slots"].update({"A/": s["slots"]["a"]}), "signed.slots: 'A/' is not a valid name"),
    (lambda s: s["slots"].clear(), "signed.slots: no slot"),
    (lambda s: s["secure_boot"]["db"].update(sha256=7), "signed.secure_boot.db.sha256: '7'"),
])
def test_a_malformed_statement_is_refused_naming_the_file_and_key(image, keys, pki, change, message, signed):
    out = signed
    data = json.loads(out.read_text())
    change(data["signed"])
    out.write_text(json.dumps(data))
    with pytest.raises(envelope.EnvelopeError) as caught:
        measurements.read(out)
    assert str(caught.value).startswith(f"{out}: ") and message in str(caught.value), str(caught.value)


def test_another_image_is_not_the_measured_one(image, keys, pki, tmp_path, signed):
    out = signed
    other = tmp_path / "other.img"
    shutil.copy(image, other)
    with other.open("r+b") as stream:  # one byte in a root partition: nothing on the ESP changes
        stream.seek(10 * MIB)
        stream.write(b"\1")
    with pytest.raises(InputError, match=r"measures client-4.5.0-dev.img .* not .*other.img"):
        measurements.for_image(out, other, pki.policy(), _now())
    report = measurements.check_image(_statement(image), other, keys)
    assert [what for what, ok, _ in report.checks if not ok] == ["image other.img: SHA-256 is the measured "
                                                                  "image's (client-4.5.0-dev.img)"]
    qcow2 = other.with_suffix(".qcow2")
    other.rename(qcow2)
    with pytest.raises(InputError, match="not a qcow2 copy"):
        measurements.for_image(out, qcow2, pki.policy(), _now())


def test_a_uki_swapped_on_the_esp_is_caught_and_nothing_is_signed(image, keys, pki, tmp_path):
    """Slot B's UKI replaced by slot A's (signed, genuine, but with A's root hash): the image's digest, B's
    UKI digest, its root hash and its PCRs 4 and 11 computed again all say so; nothing is signed."""
    statement = _statement(image)
    mtools = f"{image}@@{MIB}"
    swapped = tmp_path / "a.efi"
    fsimage.vfat_read(mtools, "EFI/Linux/clip-a.efi", swapped)
    name = next(n for n in fsimage.vfat_list(mtools, esp.LINUX_DIR) if n.startswith("clip-b"))
    fsimage.vfat_replace(mtools, f"{esp.LINUX_DIR}/{name}", swapped, DATE)
    report = measurements.check_image(statement, image, keys)
    failed = {what: detail for what, ok, detail in report.checks if not ok}
    assert list(failed) == [
        "image client-4.5.0-dev.img: SHA-256 is the measured image's (client-4.5.0-dev.img)",
        f"slot b: {esp.LINUX_DIR}/{name}: SHA-256 is the measured UKI's",
        "slot b: root hash in the UKI's signed command line is the measured one",
        "slot b: PCRs 4, 7, 11 computed again from the ESP's files"], failed
    assert "PCR 4 computes to" in failed["slot b: PCRs 4, 7, 11 computed again from the ESP's files"]
    assert "PCR 7" not in failed["slot b: PCRs 4, 7, 11 computed again from the ESP's files"]
    out = tmp_path / "m.json"
    with pytest.raises(SigningError, match="does not bear out the measurements"):
        measurements.countersign(statement, image, keys, pki.controller, out)
    assert not out.exists()


def test_predictions_edited_in_the_published_manifest_are_not_signed(image, keys, pki):
    """The manifest beside the image says other PCRs (and its digest is made to fit the image): the PCRs
    computed again from the image's ESP and the manifest on the ESP disagree."""
    statement = _statement(image)
    edited = dataclasses.replace(statement, slots={**statement.slots, "a": dataclasses.replace(
        statement.slots["a"], pcrs={**statement.slots["a"].pcrs, "11": "5" * 64})})
    report = measurements.check_image(edited, image, keys)
    failed = [what for what, ok, _ in report.checks if not ok]
    assert failed == ["slot a: manifest on the ESP: root hash, UKI digest, PCR predictions",
                      "slot a: PCRs 4, 7, 11 computed again from the ESP's files"], failed
    with pytest.raises(SigningError, match="nothing signed"):
        measurements.countersign(edited, image, keys, pki.controller, image.with_name("m.json"))


def test_other_secure_boot_certificates_do_not_give_the_same_pcr7(image, keys, tmp_path):
    other = secureboot.init(tmp_path / "other-sb", "another organisation")
    report = measurements.check_image(_statement(image), image, other)
    failed = {what: detail for what, ok, detail in report.checks if not ok}
    assert f"Secure Boot certificates {other.directory}: the measured ones" in failed
    assert all("PCR 7 computes to" in failed[f"slot {s}: PCRs 4, 7, 11 computed again from the ESP's files"]
               for s in "ab"), failed


def test_a_document_of_another_image_is_not_signed_over(image, keys, pki, signed):
    out = signed
    statement = _statement(image)
    other = dataclasses.replace(statement, image_sha256="f" * 64)
    with pytest.raises(SigningError, match="already states the measurements of another image"):
        measurements._check_previous(out, other)
    out.write_text("{")
    with pytest.raises(SigningError, match="cannot read the document already there"):
        measurements.countersign(statement, image, keys, pki.controller, out)


def test_the_boot_check_names_the_countersigned_source():
    line = ("CLIP_UEFI firmware=uefi secureboot=1 setupmode=0 lockdown=integrity entry=clip-a.efi pcr4=" + "1" * 64
            + " pcr7=" + "2" * 64 + " pcr11=" + "3" * 64)
    problems = vm.uefi_problems(bootproof.parse_uefi(line), {"4": "1" * 64, "7": "9" * 64}, "the countersigned m.json")
    assert problems == [f"PCR 7 is {'2' * 64}, the countersigned m.json predicts {'9' * 64}"], problems


def test_an_image_file_that_is_no_image_is_an_error(tmp_path, image, keys):
    junk = tmp_path / "junk.img"
    junk.write_bytes(bytes(4096))
    with pytest.raises(ImageError):
        measurements.check_image(_statement(image), junk, keys)


# -- the commands ------------------------------------------------------------------------------------------


def _sign_args(image: Path, pki, role: str, keys) -> list[str]:
    secret = image.with_name("passphrase")
    secret.write_bytes(devpki.SECRET)
    return ["measurements", "sign", str(image.with_name("client-4.5.0-dev.manifest.json")),
            "--key", str(pki.directory / f"{role}-1.key"), "--cert", str(pki.directory / f"{role}-1.pem"),
            "--policy", str(pki.policy_path), "--passphrase-file", str(secret),
            "--secureboot-keys", str(keys.directory)]


def test_the_commands_sign_then_verify_the_image_and_catch_a_changed_one(clipbuild, image, keys, pki, document):
    signed = clipbuild(*_sign_args(image, pki, "controller", keys))
    out = image.with_name("client-4.5.0-dev.measurements.json")
    assert signed.code == 0 and signed.out.startswith(f"signed {out}: client CLIP-RM 4.5.0"), signed
    assert out.read_bytes() == document
    verify = ["measurements", "verify", str(out), "--policy", str(pki.policy_path), "--image", str(image),
              "--secureboot-keys", str(keys.directory)]
    result = clipbuild(*verify, "--json")
    data = json.loads(result.out)
    assert (result.code, data["ok"], data["signature"], data["image"]["ok"]) == (0, True, [], True), result
    with image.open("r+b") as stream:  # one byte of a root partition
        stream.seek(12 * MIB)
        stream.write(b"\1")
    result = clipbuild(*verify)
    assert result.code == 1 and "FAILED image client-4.5.0-dev.img: SHA-256" in result.out, result
    assert result.out.rstrip().endswith("the image is NOT the one measured")


def test_the_sign_command_refuses_a_developer_and_a_bios_manifest(clipbuild, image, keys, pki):
    result = clipbuild(*_sign_args(image, pki, "developer", keys))
    assert result.code == 1 and "cannot sign as controller with CN=developer-1" in result.err, result
    manifest = image.with_name("client-4.5.0-dev.manifest.json")
    data = json.loads(manifest.read_text())
    data["boot"] = {"loader": "syslinux"}
    manifest.write_text(json.dumps(data))
    result = clipbuild(*_sign_args(image, pki, "controller", keys))
    assert result.code == 2 and "an image of the BIOS path" in result.err, result


def test_the_verify_command_refuses_another_controller(clipbuild, signed, tmp_path):
    other = devpki.ensure(tmp_path / "other-pki")
    result = clipbuild("measurements", "verify", str(signed), "--policy", str(other.policy_path))
    assert result.code == 1 and result.out.startswith("REFUSED") and "is not issued by the controller CA" in result.out
    assert "slot a" not in result.out  # nothing of an unauthenticated document is shown as fact
