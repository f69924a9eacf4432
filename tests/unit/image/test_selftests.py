"""Package self-tests at boot, host side: which a slot ships, the console lines, and the verdict."""

from __future__ import annotations

from clipbuild.image import selftests
from clipbuild.image.selftests import Outcome


def test_the_self_tests_a_root_ships_are_its_regular_files(tmp_path):
    folder = tmp_path / selftests.SELFTEST_DIR
    folder.mkdir(parents=True)
    (folder / "openssh").write_text("#!/bin/sh\n")
    (folder / "nftables").write_text("#!/bin/sh\n")
    (folder / "link").symlink_to("openssh")
    (folder / "sub").mkdir()
    assert selftests.shipped(tmp_path) == ["nftables", "openssh"]
    assert selftests.shipped(tmp_path / "elsewhere") == []


def test_console_lines_are_read_with_their_output():
    line = "\x1b[0mCLIP_SELFTEST openssh ok 2s: OpenSSH_9.2p1, OpenSSL 3.0.20 1 Jul 2026"
    assert selftests.parse(line) == Outcome("openssh", True, 2, "OpenSSH_9.2p1, OpenSSL 3.0.20 1 Jul 2026")
    assert selftests.parse("CLIP_SELFTEST nftables FAILED 0s: ") == Outcome("nftables", False, 0, "")
    assert selftests.parse("clip-selftest: nothing") is None
    assert selftests.parse("CLIP_SELFTEST ../x ok 1s: y") is None  # not a package name


def test_every_shipped_self_test_must_report_ok():
    outcomes = [Outcome("openssh", True, 1, "OpenSSH"), Outcome("nftables", False, 0, "no table")]
    assert selftests.missing(["openssh"], outcomes) == []
    assert selftests.missing(["openssh", "nftables", "iproute2"], outcomes) == [
        "self-test nftables failed: no table", "self-test iproute2 did not report"]
    assert selftests.missing([], []) == []


def test_a_qcow2_copy_without_its_manifest_is_refused(tmp_path):
    """The host must know which self-tests to require: a qcow2 copy has no GPT to read them from, so the manifest
    published beside it is needed, and its absence stops the check instead of expecting nothing."""
    import pytest

    from clipbuild.cli.image import image_manifest
    from clipbuild.core.errors import InputError

    copy = tmp_path / "client-4.5.0-dev.qcow2"
    copy.write_bytes(b"QFI\xfb")
    with pytest.raises(InputError, match=r"client-4\.5\.0-dev\.manifest\.json: missing"):
        image_manifest(copy)
