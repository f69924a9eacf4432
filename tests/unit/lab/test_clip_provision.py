"""clip-provision, the image's reader of a machine's provisioning disk, run on this machine with busybox's tools.

The disk comes from outside the signed image, so the script treats it as hostile input: machine.conf read line by
line (known keys, values of [A-Za-z0-9./:_-] only, never sourced), credentials taken only from where they belong
and only as regular files. The test runs a copy of the script whose PATH and RUN name a temporary folder: shims
stand for findfs and mount (the "disk" is a folder the mount shim copies), every other tool is busybox's. The
shell is this machine's POSIX sh, not busybox's: busybox sh would run its own findfs and mount applets before
any shim in PATH."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clipbuild.core.run import Result, run
from tests.conftest import ROOT

SCRIPT = ROOT / "overlays" / "clip" / "app-clip" / "clip-net" / "files" / "clip-provision"
BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not on this machine")

GATEWAY = {"NAME": "gw", "SPECIES": "gateway", "ROLE": "gateway", "OUTSIDE_ADDR": "192.0.2.1/24",
           "PRIVATE_NET": "10.99.0.0/24", "CLIENT_NETS": "172.31.101.0/30", "ADMIN_MAC": "52:54:00:c1:ad:36",
           "ADMIN_ADDR": "198.51.100.54/24"}


def _tree(tmp: Path) -> tuple[Path, Path, Path]:
    """(the script's copy, the disk folder, the run folder)."""
    shims, disk, runs = tmp / "shims", tmp / "disk", tmp / "run"
    shims.mkdir()
    for applet in ("sed", "grep", "cp", "mkdir", "cat", "mv", "rm", "printf", "echo", "test", "["):
        (shims / applet).symlink_to(BUSYBOX)
    (shims / "findfs").write_text("#!/bin/sh\n[ -f \"$DISK_MARK\" ] && echo /dev/fakeprov\n")
    # mount -t vfat -o OPTS DEV DIR: DIR holds the disk folder's files, as of now (symlinks stay symlinks)
    (shims / "mount").write_text('#!/bin/sh\nfor last; do :; done\nrm -rf "$last" && mkdir "$last" && '
                                 'cp -a "$DISK_DIR"/. "$last"/\n')
    (shims / "umount").write_text("#!/bin/sh\nexit 0\n")
    for shim in ("findfs", "mount", "umount"):
        (shims / shim).chmod(0o755)
    text = SCRIPT.read_text()
    assert "PATH=/sbin:/bin:/usr/sbin:/usr/bin\n" in text and "RUN=/run/clip\n" in text
    copy = tmp / "clip-provision"
    copy.write_text(text.replace("PATH=/sbin:/bin:/usr/sbin:/usr/bin\n", f"PATH={shims}\n")
                    .replace("RUN=/run/clip\n", f"RUN={runs}\n"))
    disk.mkdir()
    return copy, disk, runs


def _disk(disk: Path, conf: str, name: str = "gw") -> None:
    (disk / "machine.conf").write_text(conf)
    for path in (f"ipsec/x509/{name}.pem", f"ipsec/private/{name}.key", "ipsec/x509ca/ca.pem", "ipsec/x509crl/ca.crl",
                 "ssh/admin/ssh_host_ed25519_key", "ssh/admin/ssh_host_ed25519_key.pub", "ssh/admin/authorized_keys"):
        (disk / path).parent.mkdir(parents=True, exist_ok=True)
        (disk / path).write_text(f"{path}\n")


def _run(tmp: Path, copy: Path, disk: Path | None) -> Result:
    mark = tmp / "disk-attached"
    if disk is not None:
        mark.write_text("")
    return run(["/bin/sh", copy], env={"DISK_DIR": str(tmp / "disk"), "DISK_MARK": str(mark)}, check=False)


def _conf(**pairs: str) -> str:
    return "".join(f"{k}={v}\n" for k, v in pairs.items())


def test_a_good_disk_gives_the_machine_its_settings_credentials_and_ssh_keys(tmp_path):
    copy, disk, runs = _tree(tmp_path)
    _disk(disk, "# gateway gw\n\n" + _conf(**GATEWAY).replace("\n", "\r\n", 1))  # a CRLF line is read too
    result = _run(tmp_path, copy, disk)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CLIP_NET provision gw (gateway) from /dev/fakeprov" in result.stdout
    assert (runs / "machine.conf").read_text() == _conf(**GATEWAY)
    swanctl = (runs / "ike" / "swanctl" / "swanctl.conf").read_text()
    assert "remote_ts = 172.31.101.0/30" in swanctl and "revocation = strict" in swanctl
    assert (runs / "ike" / "swanctl" / "private" / "gw.key").read_text() == "ipsec/private/gw.key\n"
    assert sorted(p.name for p in (runs / "ssh" / "admin").iterdir()) == [
        "authorized_keys", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert not (runs / "ssh" / "audit").exists()  # the disk has nothing for AUDIT


def test_no_disk_means_no_network_identity_and_the_boot_goes_on(tmp_path):
    copy, _, runs = _tree(tmp_path)
    result = _run(tmp_path, copy, None)
    assert result.returncode == 0 and "no provisioning disk (LABEL=CLIPPROV)" in result.stdout
    assert not (runs / "machine.conf").exists()


@pytest.mark.parametrize(("line", "message"), [
    ("NAME=$(touch {tmp}/pwned)", "machine.conf:2: NAME: a value of [A-Za-z0-9./:_-] only"),
    ("NAME=`touch {tmp}/pwned`", "machine.conf:2: NAME: a value of [A-Za-z0-9./:_-] only"),
    ("ROLE=gateway; touch {tmp}/pwned", "machine.conf:2: ROLE: a value of"),
    ("OUTSIDE_ADDR=192.0.2.1 24", "machine.conf:2: OUTSIDE_ADDR: a value of"),
    ("PATH=/tmp", "machine.conf:2: unknown key PATH"),
    ("IFS=x", "machine.conf:2: unknown key IFS"),
    ("just words", "machine.conf:2: not KEY=VALUE"),
    ("ROLE=client", "machine.conf:2: ROLE given twice"),
])
def test_a_hostile_machine_conf_is_refused_naming_its_line_and_runs_nothing(tmp_path, line, message):
    copy, disk, runs = _tree(tmp_path)
    _disk(disk, "ROLE=gateway\n" + line.format(tmp=tmp_path) + "\n" + _conf(NAME="gw"))
    result = _run(tmp_path, copy, disk)
    assert result.returncode == 1 and f"CLIP_NET provision FAILED: {message}" in result.stdout, result.stdout
    assert not (tmp_path / "pwned").exists()
    assert not (runs / "machine.conf").exists()  # nothing half-read is left for clip-net


def test_credentials_must_be_complete_and_ssh_files_regular(tmp_path):
    copy, disk, _ = _tree(tmp_path)
    _disk(disk, _conf(**GATEWAY))
    (disk / "ipsec" / "x509crl" / "ca.crl").unlink()
    result = _run(tmp_path, copy, disk)
    assert result.returncode == 1 and "the IPsec credentials of gw are incomplete on the disk" in result.stdout
    (tmp_path / "two").mkdir()
    copy, disk, _ = _tree(tmp_path / "two")
    _disk(disk, _conf(**GATEWAY))
    keys = disk / "ssh" / "admin" / "authorized_keys"
    keys.unlink()
    keys.symlink_to("/etc/shadow")
    result = _run(tmp_path / "two", copy, disk)
    assert result.returncode == 1 and "ssh/admin/authorized_keys is not a file" in result.stdout, result.stdout
    (disk / "ssh" / "admin" / "authorized_keys").unlink()
    (disk / "ssh" / "admin" / "ssh_host_ed25519_key").unlink()
    result = _run(tmp_path / "two", copy, disk)
    assert result.returncode == 1 and "ssh/admin: no ssh_host_ed25519_key" in result.stdout, result.stdout
