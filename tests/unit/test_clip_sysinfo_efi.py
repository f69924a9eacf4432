"""clip-sysinfo's UEFI side in C (overlays/clip/app-clip/clip-sysinfo/files/clip-efi.c, clip-bless.c), compiled with
the build machine's cc against scratch copies of the system files it reads (efivarfs, securityfs, the TPM's PCRs:
-DEFI_DIR=..., as clip-jail's tests do), and what it prints read back with the host's parser
(clipbuild.image.bootproof): a BIOS boot, a Secure Boot one, and every refusal. Mounting the ESP is left to the
boot tests: here the device is never a block device, so nothing is ever mounted."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from clipbuild.image import bootproof
from clipbuild.image.bootproof import Blessing, UefiReport
from tests.conftest import ROOT

FILES = ROOT / "overlays" / "clip" / "app-clip" / "clip-sysinfo" / "files"
CC = shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no cc on the build machine to compile clip-sysinfo with")
WARN = ["-Wall", "-Wextra", "-Werror", "-O2", "-fstack-protector-strong"]
GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
LOADER = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
ATTRIBUTES = b"\x06\x00\x00\x00"  # boot service and runtime access, as efivarfs shows them first
MAIN = '#include <stdio.h>\n#include "clip-efi.h"\nint main(void) { efi_report(); fflush(stdout); ' \
       'return bless_boot() == 0 ? 0 : 3; }\n'


@dataclass
class Machine:
    """The scratch system files one compiled clip-sysinfo reads."""

    root: Path
    program: Path

    @property
    def efivars(self) -> Path:
        return self.root / "efi" / "efivars"

    def variable(self, name: str, guid: str, value: bytes) -> None:
        self.efivars.mkdir(parents=True, exist_ok=True)
        (self.efivars / f"{name}-{guid}").write_bytes(ATTRIBUTES + value)

    def string(self, name: str, text: str) -> None:
        self.variable(name, LOADER, (text + "\0").encode("utf-16-le"))

    def pcr(self, index: int, text: str) -> None:
        (self.root / "pcr").mkdir(exist_ok=True)
        (self.root / "pcr" / str(index)).write_text(text)

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.program)], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Machine:
    """One build for the module, reading its system files under `root`, which each test fills afresh."""
    out = tmp_path_factory.mktemp("clip-efi")
    root = out / "sys"
    (out / "main.c").write_text(MAIN)
    paths = {"EFI_DIR": root / "efi", "LOCKDOWN": root / "lockdown", "PCRS": root / "pcr",
             "ESP_DEVICE": root / "esp", "RUN_DIR": root / "run"}
    program = out / "clip-efi-test"
    # efivarfs is recognised by its filesystem magic: here, the scratch folder's filesystem's
    magic = subprocess.run(["stat", "-f", "-c", "%t", str(out)], capture_output=True, text=True, check=True)
    subprocess.run([CC, *WARN, f"-I{FILES}", *(f'-D{k}="{v}"' for k, v in paths.items()),
                    f"-DEFIVARS_MAGIC=0x{magic.stdout.strip()}", "-o", str(program),
                    str(out / "main.c"), str(FILES / "clip-efi.c"), str(FILES / "clip-bless.c")], check=True)
    return Machine(root, program)


@pytest.fixture
def machine(compiled: Machine) -> Machine:
    root = compiled.root
    shutil.rmtree(root, ignore_errors=True)
    (root / "run").mkdir(parents=True)
    (root / "esp").write_bytes(b"\0" * 4096)  # not a block device: clip-bless refuses it before any mount
    (root / "lockdown").write_text("[none] integrity confidentiality\n")
    return compiled


def lines(result: subprocess.CompletedProcess[str]) -> tuple[UefiReport | None, Blessing | None]:
    proof = bootproof.collect(result.stdout.splitlines())
    assert proof.malformed == ()
    assert len(result.stdout.splitlines()) == 2, result.stdout
    return proof.uefi, proof.blessing


def secure_boot(machine: Machine) -> None:
    (machine.root / "lockdown").write_text("none [integrity] confidentiality\n")
    machine.variable("SecureBoot", GLOBAL, b"\x01")
    machine.variable("SetupMode", GLOBAL, b"\x00")
    machine.string("LoaderEntrySelected", "clip-b+2-1.efi")
    for index, digit in ((4, "A"), (7, "7"), (11, "C")):
        machine.pcr(index, digit * 64 + "\n")


def test_a_bios_boot(machine):
    result = machine.run()
    assert lines(result) == (UefiReport("bios", None, None, "none", None, None, None, None), Blessing("none"))
    assert result.returncode == 0 and result.stderr == ""


def test_a_secure_boot_with_a_tpm_and_no_boot_counter(machine):
    secure_boot(machine)
    result = machine.run()
    assert lines(result) == (UefiReport("uefi", True, False, "integrity", "clip-b+2-1.efi", "a" * 64, "7" * 64,
                                        "c" * 64), Blessing("none"))
    assert result.stderr == ""


def test_a_counted_entry_is_blessed_on_the_esp_only(machine):
    """The path is accepted, then the ESP is refused (not a block device) before any mount; the folder made for
    the mount is gone again, and the failure is shown, exit status 3 from the harness."""
    secure_boot(machine)
    machine.string("LoaderBootCountPath", "\\EFI\\Linux\\clip-b+2-1.efi")
    result = machine.run()
    _, blessing = lines(result)
    assert not blessing.ok and result.returncode == 3
    # as root: the device is refused; without CAP_SYS_ADMIN: the mount namespace already
    assert blessing.reason.endswith("esp is not a block device") or blessing.reason.startswith(
        "a private mount namespace")
    assert list((machine.root / "run").iterdir()) == []


@pytest.mark.parametrize("path", [
    "\\EFI\\Linux\\clip-b.efi",  # no counter
    "\\EFI\\Linux\\clip-b+.efi",
    "\\EFI\\Linux\\clip-b+2-.efi",
    "\\EFI\\Linux\\clip-b+2-1.efi.efi",
    "\\EFI\\Linux\\Clip-B+2-1.efi",  # NAME is [a-z0-9-]
    "\\EFI\\Linux\\clip.b+2-1.efi",
    "\\EFI\\Linux\\..\\clip-b+2-1.efi",
    "\\EFI\\BOOT\\clip-b+2-1.efi",  # outside EFI/Linux
    "\\efi\\linux\\clip-b+2-1.efi",
    "EFI\\Linux\\clip-b+2-1.efi",
    "\\EFI\\Linux\\clip-b+12345-1.efi",
    "\\EFI\\Linux\\" + "a" * 65 + "+3.efi",
])
def test_a_boot_count_path_of_another_form_is_refused_before_any_mount(machine, path):
    machine.string("LoaderBootCountPath", path)
    _, blessing = lines(machine.run())
    assert blessing.outcome == "failed" and "refused, not \\EFI\\Linux\\NAME+LEFT[-DONE].efi" in blessing.reason


@pytest.mark.parametrize("value", [
    "\\EFI\\Linux\\clip/b+2-1.efi".encode("utf-16-le") + b"\0\0",  # a character outside the set
    "\\EFI\\Linux\\clip-é+2.efi".encode("utf-16-le") + b"\0\0",
    "\\EFI\\Linux\\clip-b+2.efi".encode("utf-16-le") + b"\0\0x\0",  # after the NUL
    "\\EFI\\Linux\\clip-b+2.efi".encode("utf-16-le") + b"\0",  # odd length
    b"",
])
def test_a_boot_count_path_that_is_not_a_clean_string_is_refused(machine, value):
    machine.variable("LoaderBootCountPath", LOADER, value)
    _, blessing = lines(machine.run())
    assert blessing.outcome == "failed" and "LoaderBootCountPath: refused" in blessing.reason


def test_malformed_values_are_reported_unavailable_and_named(machine):
    secure_boot(machine)
    machine.variable("SecureBoot", GLOBAL, b"\x01\x00")  # two bytes
    machine.variable("SetupMode", GLOBAL, b"\x02")
    machine.variable("LoaderEntrySelected", LOADER, "clip b".encode("utf-16-le") + b"\0\0")
    machine.pcr(4, "A" * 63 + "\n")
    machine.pcr(7, "G" * 64 + "\n")
    machine.pcr(11, "C" * 64)  # no new line
    (machine.root / "lockdown").write_text("none [everything]\n")
    result = machine.run()
    assert lines(result)[0] == UefiReport("uefi", None, None, None, None, None, None, None)
    for named in ("SecureBoot", "SetupMode", "LoaderEntrySelected: refused", "lockdown: unknown mode", "pcr/4",
                  "pcr/7", "pcr/11"):
        assert named in result.stderr
    assert not any(line.startswith("clip-sysinfo: ") for line in result.stderr.splitlines())  # the host's report


def test_a_variable_too_large_is_refused(machine):
    machine.variable("LoaderEntrySelected", LOADER, ("a" * 600 + "\0").encode("utf-16-le"))
    result = machine.run()
    assert lines(result)[0].entry is None and "File too large" in result.stderr


def test_a_uefi_boot_without_efivarfs_says_so_and_does_not_claim_nothing_to_bless(machine):
    (machine.root / "efi").mkdir()  # the kernel shows /sys/firmware/efi, efivarfs is not mounted in it
    result = machine.run()
    uefi, blessing = lines(result)
    assert uefi == UefiReport("uefi", None, None, "none", None, None, None, None)
    assert "efivarfs is not mounted there" in result.stderr
    assert blessing.outcome == "failed" and blessing.reason.startswith("efivarfs is not mounted on ")
