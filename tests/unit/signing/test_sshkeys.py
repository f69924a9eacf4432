"""SSH identities on provisioning disks: the SSH jails' host keys (kept with the machine in its PKI folder) and
the operators' keys, checked before they reach a disk (the booted side: tests/e2e/test_lab.py)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from clipbuild.core.errors import InputError
from clipbuild.core.run import run
from clipbuild.signing import ipsecpki, sshkeys

SECRET = "ipsec test passphrase"
MTOOLS = {"MTOOLS_SKIP_CHECK": "1"}
needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in ("mkfs.vfat", "mtype", "ssh-keygen")),
                                 reason="dosfstools, mtools and ssh-keygen are needed")


@pytest.fixture
def ipsec(clipbuild, monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("CLIPBUILD_PASSPHRASE", SECRET)
    directory = tmp_path / "ipsec"
    assert clipbuild("pki", "ipsec", "init", str(directory)).code == 0
    assert clipbuild("pki", "ipsec", "issue", str(directory), "gw1", "--species", "gateway").code == 0
    return directory


def _openssh_public(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@needs_tools
def test_a_jail_s_host_key_is_made_once_and_kept_with_the_machine(tmp_path):
    first = sshkeys.host_key(tmp_path / "gw1", "gw1", "admin")
    assert first.private == tmp_path / "gw1" / "ssh" / "admin_ssh_host_ed25519_key"
    assert stat.S_IMODE(first.private.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.private.parent.stat().st_mode) == 0o700
    assert sshkeys.host_key(tmp_path / "gw1", "gw1", "admin") == first  # kept: operators pin it
    assert sshkeys.host_key(tmp_path / "gw1", "gw1", "audit").public != first.public
    # OpenSSH reads the key and agrees on its public half and fingerprint
    derived = run(["ssh-keygen", "-y", "-f", first.private]).stdout.split()
    assert derived == first.public.split()[:2]
    listed = run(["ssh-keygen", "-l", "-f", f"{first.private}.pub"]).stdout.split()
    assert listed[1] == sshkeys.fingerprint(first.public)
    with pytest.raises(InputError, match="'root': not a jail serving SSH"):
        sshkeys.host_key(tmp_path / "gw1", "gw1", "root")


@needs_tools
def test_known_hosts_lines_are_what_ssh_looks_up(tmp_path):
    key = sshkeys.host_key(tmp_path, "gw1", "audit")
    known = tmp_path / "known_hosts"
    known.write_text(sshkeys.known_hosts_line("127.0.0.1", 40022, key.public) +
                     sshkeys.known_hosts_line("gw1.example", 22, key.public))
    assert "[127.0.0.1]:40022" in run(["ssh-keygen", "-F", "[127.0.0.1]:40022", "-f", known]).stdout
    assert run(["ssh-keygen", "-F", "gw1.example", "-f", known]).stdout.count("ssh-ed25519") == 1
    assert run(["ssh-keygen", "-F", "[127.0.0.1]:40023", "-f", known], check=False).returncode != 0


def test_operators_keys_are_plain_keys_of_accepted_types(tmp_path):
    good = tmp_path / "keys"
    ed = _openssh_public(ed25519.Ed25519PrivateKey.generate())
    big = _openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=3072))
    good.write_text(f"# the operators\n\n{ed} alice@example\n  {big}\n")
    assert sshkeys.check_authorized_keys(good) == f"{ed} alice@example\n{big}\n"


@pytest.mark.parametrize(("line", "message"), [
    ('command="/bin/sh" {ed}', "not a public key type sshd accepts here (no options"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "'ssh-dss': not a public key type"),
    ("ssh-ed25519", "ssh-ed25519 without its key"),
    ("ssh-ed25519 AAAA!!!notbase64", "not a valid ssh-ed25519 key"),
    ("{small}", "an RSA key of 2048 bits: sshd refuses under 3072"),
])
def test_bad_operator_keys_are_refused_naming_the_line(tmp_path, line, message):
    ed = _openssh_public(ed25519.Ed25519PrivateKey.generate())
    small = _openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    path = tmp_path / "keys"
    path.write_text(f"{ed}\n" + line.format(ed=ed, small=small) + "\n")
    with pytest.raises(InputError, match=f"{path}:2: .*{message}".replace("(", r"\(")):
        sshkeys.check_authorized_keys(path)
    path.write_text("# nothing\n")
    with pytest.raises(InputError, match="no public key in it"):
        sshkeys.check_authorized_keys(path)


@needs_tools
def test_the_disk_carries_host_keys_and_the_operators_a_jail_lets_in(clipbuild, ipsec, tmp_path):
    operators = tmp_path / "ops.pub"
    operators.write_text(_openssh_public(ed25519.Ed25519PrivateKey.generate()) + " ops\n")
    out = tmp_path / "gw1.img"
    result = clipbuild("provision", "gw1", "--species", "gateway", "--pki", str(ipsec), "--out", str(out),
                       "--ssh-key", f"admin={operators}", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    machine_dir = ipsecpki.machine_paths(ipsec, "gw1")[0].parent
    for jail in ("admin", "audit"):
        key = sshkeys.host_key(machine_dir, "gw1", jail)
        assert summary["ssh"][jail] == {"host_key": key.public, "fingerprint": sshkeys.fingerprint(key.public),
                                        "operators": jail == "admin"}
        on_disk = run(["mtype", "-i", out, f"::/ssh/{jail}/ssh_host_ed25519_key"], env=MTOOLS).stdout
        assert on_disk == key.private.read_text()
    assert run(["mtype", "-i", out, "::/ssh/admin/authorized_keys"], env=MTOOLS).stdout == operators.read_text()
    assert "ssh/audit/authorized_keys" not in summary["files"]  # nobody may log in to AUDIT
    text = clipbuild("provision", "gw1", "--species", "gateway", "--pki", str(ipsec), "--out", str(out)).out
    assert f"ssh admin: host key {summary['ssh']['admin']['fingerprint']} (nobody may log in)" in text


@needs_tools
@pytest.mark.parametrize(("pair", "message"), [
    ("root=KEYS", "'root': not a jail serving SSH"), ("admin", "JAIL=FILE, once per jail"),
    ("admin=BAD", "BAD:1: 'garbage': not a public key type")])
def test_bad_ssh_key_options_are_refused_and_no_disk_is_left(clipbuild, ipsec, tmp_path, pair, message):
    (tmp_path / "KEYS").write_text(_openssh_public(ed25519.Ed25519PrivateKey.generate()) + "\n")
    (tmp_path / "BAD").write_text("garbage\n")
    out = tmp_path / "gw1.img"
    result = clipbuild("provision", "gw1", "--species", "gateway", "--pki", str(ipsec), "--out", str(out),
                       "--ssh-key", pair.replace("KEYS", str(tmp_path / "KEYS")).replace("BAD", str(tmp_path / "BAD")))
    assert result.code == 2 and message in result.err, result.err
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".gw1")] == []
