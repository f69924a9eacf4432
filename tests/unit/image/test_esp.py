"""The ESP of the UEFI path: entry names with boot counters, the order systemd-boot 252 boots them in, and the
boot check's reading of a UEFI boot (Secure Boot, lockdown, PCRs; boots that panic and come back)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from clipbuild.image import bootproof, esp, firmware, vm

PCR = {"4": "4" * 64, "7": "7" * 64, "11": "b" * 64}
UEFI_LINE = ("CLIP_UEFI firmware=uefi secureboot=1 setupmode=0 lockdown=integrity entry=clip-a.efi "
             f"pcr4={PCR['4']} pcr7={PCR['7']} pcr11={PCR['11']}")


@pytest.mark.parametrize(("name", "entry"), [
    ("clip-a.efi", esp.Entry("a")), ("clip-b+3-0.efi", esp.Entry("b", 3, 0)), ("clip-b+2-1.efi", esp.Entry("b", 2, 1)),
    ("clip-a+0.efi", esp.Entry("a", 0, 0)), ("clip-b+0-3.efi", esp.Entry("b", 0, 3)),
])
def test_entry_names_round_trip(name, entry):
    assert esp.Entry.parse(name) == entry
    assert entry.name == (name if name != "clip-a+0.efi" else "clip-a+0-0.efi")


@pytest.mark.parametrize("name", ["clip-A.efi", "clip-a.EFI", "../clip-a.efi", "clip-a+x.efi", "clip-a+1-2-3.efi",
                                  "other.efi", "clip-a.efi.bak", "clip-abcdefghi.efi"])
def test_other_names_are_not_slot_entries(name):
    assert esp.Entry.parse(name) is None


def test_systemd_boot_order_tries_left_first_then_newest_then_name():
    versions = {"a": "4.5.0", "b": "4.5.1"}
    assert esp.first_choice([esp.Entry("a"), esp.trying("b")], versions).slot == "b"  # the update
    assert esp.first_choice([esp.Entry("a"), esp.Entry("b", 0, 3)], versions).slot == "a"  # tries used up: fallback
    assert esp.first_choice([esp.Entry("a"), esp.standby("b")], {"a": "4.5.0", "b": "4.5.0"}).slot == "a"
    assert esp.first_choice([esp.Entry("a"), esp.Entry("b")], {"a": "4.5.0", "b": "4.5.0"}).slot == "b"  # by name
    assert esp.first_choice([esp.Entry("a"), esp.Entry("b")], {"a": "4.10.0", "b": "4.9.0"}).slot == "a"
    assert esp.first_choice([], versions) is None


def test_loader_conf_pins_no_default_and_forbids_editing():
    words = [line.split()[0] for line in esp.loader_conf().splitlines() if line and not line.startswith("#")]
    assert "default" not in words
    assert "editor no" in esp.loader_conf() and "auto-firmware no" in esp.loader_conf()


def test_a_uefi_boot_is_judged_on_secure_boot_lockdown_and_every_pcr():
    good = bootproof.parse_uefi(UEFI_LINE)
    assert vm.uefi_problems(good, PCR) == []
    off = bootproof.parse_uefi(UEFI_LINE.replace("secureboot=1", "secureboot=0").replace("lockdown=integrity",
                                                                                         "lockdown=none"))
    assert [p.split(" (")[0] for p in vm.uefi_problems(off, PCR)] == ["Secure Boot is not enforcing",
                                                                      "the kernel is not locked down under Secure Boot"]
    wrong = vm.uefi_problems(good, {**PCR, "7": "0" * 64})
    assert wrong == [f"PCR 7 is {'7' * 64}, the manifest predicts {'0' * 64}"]
    assert vm.uefi_problems(None, PCR) == ["the system did not report how it booted (no well-formed CLIP_UEFI line)"]


def test_the_console_watcher_lets_a_rebooting_machine_come_back_only_as_often_as_allowed():
    console = vm._Console(io.StringIO(), reboots=2)
    assert console("Kernel panic - not syncing: dm-verity device corrupted") is False
    assert console("Kernel panic - not syncing: again") is False
    assert console.failed_boots == ["Kernel panic - not syncing: dm-verity device corrupted",
                                    "Kernel panic - not syncing: again"]
    assert console("Kernel panic - not syncing: a third time") is True
    console = vm._Console(io.StringIO(), reboots=0)
    assert console("Error loading \\EFI\\Linux\\clip-a.efi: Access Denied") is True
    assert console.seen[firmware.ACCESS_DENIED] == "Error loading \\EFI\\Linux\\clip-a.efi: Access Denied"


def test_the_uefi_machine_has_secure_boot_smm_a_private_variable_store_and_the_disk_first(tmp_path):
    machine = firmware.Machine(tmp_path / "vars.fd", tmp_path / "tpm" / "sock")
    command = vm.qemu_command(Path("/x/client.img"), uefi=machine)
    joined = " ".join(command)
    assert "q35,smm=on" in joined and "property=secure,value=on" in joined
    assert "OVMF_CODE_4M.secboot.fd,readonly=on" in joined and f"file={tmp_path / 'vars.fd'}" in joined
    assert "tpm-tis" in joined and "bootindex=0" in joined and "snapshot=on" in joined
    assert "-no-reboot" in command and "-no-reboot" not in vm.qemu_command(Path("/x.img"), uefi=machine, reboot=True)
