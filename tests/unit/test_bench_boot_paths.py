"""bench/boot_paths.py's report, on medians shaped as its boot checks return them (the bench itself builds and
boots two images several times: minutes, not a unit test)."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def test_the_report_gives_both_paths_and_their_ratio():
    spec = importlib.util.spec_from_file_location("boot_paths_bench", ROOT / "bench" / "boot_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.report("client", {"bios": 20.0, "uefi": 25.0}, 3)
    assert "median of 3" in text
    assert "BIOS: SeaBIOS, SYSLINUX (baseline)                   20.0 s" in text
    assert "UEFI: OVMF Secure Boot, systemd-boot, UKI, swtpm     25.0 s" in text
    assert "UEFI / BIOS                                          1.25 x   (target <= 2 x)" in text
