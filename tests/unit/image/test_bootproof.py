"""The boot path's proof, host side: the CLIP_UEFI line and the blessing lines, read strictly."""

from __future__ import annotations

import pytest

from clipbuild.image import bootproof
from clipbuild.image.bootproof import Blessing, UefiReport

PCR4, PCR7, PCR11 = "4" * 64, "0123456789abcdef" * 4, "f" * 64
SECURE = (f"CLIP_UEFI firmware=uefi secureboot=1 setupmode=0 lockdown=integrity entry=clip-b+2-1.efi "
          f"pcr4={PCR4} pcr7={PCR7} pcr11={PCR11}")
BIOS = "CLIP_UEFI firmware=bios secureboot=- setupmode=- lockdown=none entry=- pcr4=- pcr7=- pcr11=-"


def test_a_secure_boot_report_is_read_value_by_value():
    report = bootproof.parse_uefi(SECURE)
    assert report == UefiReport("uefi", True, False, "integrity", "clip-b+2-1.efi", PCR4, PCR7, PCR11)
    assert [report.pcr(i) for i in (4, 7, 11)] == [PCR4, PCR7, PCR11]
    with pytest.raises(KeyError, match="PCR 0"):
        report.pcr(0)


def test_a_bios_report_has_nothing_of_uefi():
    assert bootproof.parse_uefi(BIOS) == UefiReport("bios", None, None, "none", None, None, None, None)
    # a TPM on a BIOS machine: its PCRs are reported
    with_tpm = BIOS.replace("pcr4=-", f"pcr4={PCR4}")
    assert bootproof.parse_uefi(with_tpm).pcr4 == PCR4


def test_the_line_may_follow_other_console_output_and_end_with_a_carriage_return():
    assert bootproof.parse_uefi("[    3.141] random: crng init done" + SECURE + "\r") == bootproof.parse_uefi(SECURE)


@pytest.mark.parametrize("line", [
    "clip-sysinfo: release=x",  # not the line
    SECURE.replace("firmware=uefi", "firmware=-"),  # the firmware is always known
    SECURE.replace("firmware=uefi", "firmware=UEFI"),
    SECURE.replace("secureboot=1", "secureboot=2"),
    SECURE.replace("setupmode=0", "setupmode=yes"),
    SECURE.replace("lockdown=integrity", "lockdown=[integrity]"),
    SECURE.replace("entry=clip-b+2-1.efi", "entry=clip/../b"),  # outside [A-Za-z0-9+._-]
    SECURE.replace("entry=clip-b+2-1.efi", "entry="),
    SECURE.replace("entry=clip-b+2-1.efi", "entry=" + "a" * 256),
    SECURE.replace(PCR7, PCR7.upper()),  # the guest lower-cases
    SECURE.replace(PCR7, PCR7[:-1]),  # 63 digits
    SECURE.replace(PCR11, PCR11 + "0"),
    SECURE.replace(" pcr11=" + PCR11, ""),  # a key missing
    SECURE + " pcr0=" + PCR4,  # an unknown key
    SECURE.replace("secureboot=1 setupmode=0", "setupmode=0 secureboot=1"),  # out of order
    SECURE.replace("lockdown=integrity", "lockdown=integrity lockdown=none").replace(" pcr11=" + PCR11, ""),
    SECURE.replace(" setupmode", "  setupmode"),  # two spaces
    SECURE + " ",
    SECURE.replace("entry=", "entry"),
    BIOS.replace("secureboot=-", "secureboot=1"),  # UEFI variables on a BIOS boot
    BIOS.replace("entry=-", "entry=clip-a.efi"),
])
def test_malformed_reports_are_refused(line):
    assert bootproof.parse_uefi(line) is None


def test_blessing_lines():
    assert bootproof.parse_blessing("CLIP_BLESSED clip-b+2-1.efi -> clip-b.efi") == Blessing(
        "blessed", "clip-b+2-1.efi", "clip-b.efi")
    assert bootproof.parse_blessing("CLIP_BLESSED clip-a+0.efi -> clip-a.efi").ok
    assert bootproof.parse_blessing("CLIP_BLESSED none (no boot counter)") == Blessing("none")
    failed = bootproof.parse_blessing("CLIP_BLESS_FAILED mounting the ESP /dev/disk/by-partlabel/boot: No such device")
    assert failed == Blessing("failed", reason="mounting the ESP /dev/disk/by-partlabel/boot: No such device")
    assert not failed.ok
    assert failed.to_dict()["ok"] is False


@pytest.mark.parametrize("line", [
    "CLIP_BLESSED clip-b+2-1.efi -> clip-a.efi",  # not the same entry
    "CLIP_BLESSED clip-b+2-1.efi -> clip-b+2.efi",  # the counter not stripped
    "CLIP_BLESSED clip-b.efi -> clip-b.efi",  # no counter to strip
    "CLIP_BLESSED Clip-B+2-1.efi -> Clip-B.efi",  # NAME is [a-z0-9-]
    "CLIP_BLESSED ../clip-b+2-1.efi -> ../clip-b.efi",
    "CLIP_BLESSED clip-b+2-1.EFI -> clip-b.EFI",
    "CLIP_BLESSED clip-b+12345-1.efi -> clip-b.efi",  # counters of 4 digits at most, as the guest accepts
    "CLIP_BLESSED clip-b+2-1.efi->clip-b.efi",
    "CLIP_BLESSED none",
    "CLIP_BLESS_FAILED ",
    "CLIP_BLESSED",
])
def test_malformed_blessings_are_refused(line):
    assert bootproof.parse_blessing(line) is None


def test_collect_keeps_one_line_of_each_kind_and_lists_the_rest():
    lines = ["clip-sysinfo: release=\"CLIP-RM 4.5.0\" slot=b", SECURE, "CLIP_BLESSED clip-b+2-1.efi -> clip-b.efi",
             "CLIP_BOOT_OK slot=b"]
    proof = bootproof.collect(lines)
    assert proof.uefi == bootproof.parse_uefi(SECURE)
    assert proof.blessing == Blessing("blessed", "clip-b+2-1.efi", "clip-b.efi")
    assert proof.malformed == ()
    assert proof.to_dict()["uefi"]["entry"] == "clip-b+2-1.efi"

    forged = bootproof.collect([SECURE, BIOS, "CLIP_UEFI firmware=uefi", "CLIP_BLESS_FAILED x",
                                "CLIP_BLESSED none (no boot counter)"])
    assert forged.uefi.firmware == "uefi"  # the first well-formed one; the others are listed
    assert forged.blessing == Blessing("failed", reason="x")
    assert forged.malformed == (BIOS, "CLIP_UEFI firmware=uefi", "CLIP_BLESSED none (no boot counter)")

    assert bootproof.collect(["CLIP_BOOT_OK slot=a"]) == bootproof.BootProof(None, None, ())
