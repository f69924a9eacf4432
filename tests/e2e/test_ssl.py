"""End to end: OpenSSL 3 and OpenSSH in the client's core set, as built from source by the session's client build.

The programs and libraries are hardened PIEs and shared objects on the set's musl, every NEEDED library is in
the set's ROOT, the .debs depend on the packages of those libraries, and the programs run from the ROOT (as
their /, under bubblewrap): `openssl` makes a key and a certificate, `sshd -t` accepts CLIP's configuration with
a throwaway host key, `ssh -V` names the OpenSSL it runs with, and ssh and sshd behave as Debian's security fixes
make them (regreSSHion, Terrapin).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clipbuild.core.run import run

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

OPENSSL, OPENSSH = "3.0.20", "9.2p1"
CRYPTO = {"libcrypto.so.3", "libc.so"}
# program -> the NEEDED libraries it must have (exactly)
PROGRAMS = {
    "usr/bin/openssl": {"libssl.so.3", *CRYPTO},
    "sbin/sshd": {"libz.so.1", *CRYPTO},
    "usr/bin/ssh-keygen": {"libz.so.1", *CRYPTO},
    "usr/bin/ssh": {"libz.so.1", *CRYPTO},  # USE=clip-ssh-client: the client profile has it
}


@pytest.fixture(scope="module")
def root(e2e_project, client_build) -> Path:
    return e2e_project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"


def _resolve(root: Path, library: str) -> Path | None:
    for folder in ("usr/lib", "lib"):
        if (root / folder / library).exists():
            return root / folder / library
    return None


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_programs_are_hardened_pies_whose_libraries_are_in_the_root(root, program):
    path = root / program
    header = run(["readelf", "-hW", path]).stdout
    dynamic = run(["readelf", "-dW", path]).stdout
    segments = run(["readelf", "-lW", path]).stdout
    assert "DYN (Position-Independent Executable file)" in header
    assert "BIND_NOW" in dynamic and "PIE" in dynamic
    assert "GNU_RELRO" in segments
    stack = next(line for line in segments.splitlines() if "GNU_STACK" in line)
    assert stack.split()[-2] == "RW", stack  # no executable stack (OpenSSL's assembler: -Wa,--noexecstack)
    assert "[Requesting program interpreter: /lib/ld-musl-x86_64.so.1]" in segments
    needed = {line.split("[", 1)[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line}
    assert needed == PROGRAMS[program]
    assert all(_resolve(root, lib) for lib in needed), needed
    assert "__stack_chk_fail" in run(["readelf", "--dyn-syms", "-W", path]).stdout


@pytest.mark.parametrize("library", ["libcrypto.so.3", "libssl.so.3"])
def test_openssl_libraries_are_relro_bind_now_shared_objects(root, library):
    dynamic = run(["readelf", "-dW", root / "usr" / "lib" / library]).stdout
    assert f"Library soname: [{library}]" in dynamic and "BIND_NOW" in dynamic
    assert "GNU_RELRO" in run(["readelf", "-lW", root / "usr" / "lib" / library]).stdout
    # No engines and no provider modules to load: everything CLIP uses is inside libcrypto (no-dso).
    assert not list((root / "usr" / "lib").glob("engines-3")) and not list((root / "usr" / "lib").glob("ossl-modules"))


def _in_root(root: Path, *command: str) -> str:
    """COMMAND run with the set's ROOT as / (read-only, a private /tmp), stdout and stderr together."""
    ran = run(["bwrap", "--ro-bind", root, "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
               "--unshare-all", "--die-with-parent", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin:/sbin",
               "--setenv", "HOME", "/tmp", *command], check=False)
    assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
    return ran.stdout + ran.stderr


def test_openssl_runs_from_the_root_and_makes_a_certificate(root):
    version = _in_root(root, "/usr/bin/openssl", "version", "-a")
    assert version.startswith(f"OpenSSL {OPENSSL} ") and 'OPENSSLDIR: "/etc/ssl"' in version
    providers = _in_root(root, "/usr/bin/openssl", "list", "-providers")
    assert "default" in providers and "fips" not in providers and "legacy" not in providers
    made = _in_root(root, "/bin/sh", "-c",
                    "cd /tmp && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -days 1 "
                    "-subj /CN=clip-e2e -keyout k.pem -out c.pem 2>&1 && openssl x509 -in c.pem -noout -subject "
                    "&& openssl verify -CAfile c.pem c.pem")
    assert "subject=CN = clip-e2e" in made and "c.pem: OK" in made
    refused = run(["bwrap", "--ro-bind", root, "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
                   "/usr/bin/openssl", "enc", "-rc4", "-k", "x", "-in", "/etc/passwd", "-out", "/dev/null"],
                  check=False)
    assert refused.returncode != 0  # RC4 lives in the legacy provider, which is not built


def test_ssh_programs_run_from_the_root(root):
    assert _in_root(root, "/usr/bin/ssh", "-V").startswith(f"OpenSSH_{OPENSSH}, OpenSSL {OPENSSL} ")
    # sshd checks CLIP's configuration (and its privilege separation user sshd, /var/empty) with a host key
    # made on the spot: no host key is in the package.
    checked = _in_root(root, "/bin/sh", "-c",
                       "ssh-keygen -q -t ed25519 -N '' -f /tmp/host && /sbin/sshd -t -h /tmp/host "
                       "&& /sbin/sshd -T -h /tmp/host")
    settings = dict(line.split(" ", 1) for line in checked.splitlines() if " " in line)
    assert settings["permitrootlogin"] == "no" and settings["passwordauthentication"] == "no"
    assert settings["authenticationmethods"] == "publickey" and settings["disableforwarding"] == "yes"
    assert settings["ciphers"] == "aes256-gcm@openssh.com,aes128-gcm@openssh.com"
    assert not list((root / "etc" / "ssh").glob("ssh_host_*"))


def test_sshd_carries_the_regresshion_fix(root):
    """CVE-2024-6387 (regreSSHion): Debian's fix (files/Disable-async-signal-unsafe-code-from-the-sshsigdie-.patch)
    makes sshd's LoginGraceTime SIGALRM handler exit without logging (syslog is not async-signal-safe). sshd in
    inetd mode (-i) on a pipe that stays open and silent: after LoginGraceTime (1 s) it exits 1; it logged the
    connection, but not "Timeout before authentication", which the unpatched sshd logs there (checked on the
    build before the patch: "Timeout before authentication for UNKNOWN port 65535"), nor an end of input."""
    out = _in_root(root, "/bin/sh", "-c",
                   "ssh-keygen -q -t ed25519 -N '' -f /tmp/host && "
                   "{ sleep 3 | /sbin/sshd -i -h /tmp/host -o LoginGraceTime=1 -E /tmp/log; echo sshd-exit=$?; } "
                   "&& cat /tmp/log")
    assert out.startswith(f"SSH-2.0-OpenSSH_{OPENSSH.split('p')[0]}") and "sshd-exit=1" in out, out
    assert "Connection from UNKNOWN port 65535" in out, out  # it logs (LogLevel VERBOSE), to /tmp/log
    assert "Timeout before authentication" not in out and "Connection closed" not in out, out


LOGIN = """set -e
ssh-keygen -q -t ed25519 -N '' -f /tmp/host
ssh-keygen -q -t ed25519 -N '' -f /tmp/user
mkdir -p /etc/admin/ssh
cp /tmp/user.pub /etc/admin/ssh/authorized_keys
chmod 755 /etc/admin /etc/admin/ssh
/sbin/sshd -h /tmp/host -p 2222 -o ListenAddress=127.0.0.1 -o PidFile=/tmp/sshd.pid -E /tmp/sshd.log
sleep 1
ssh="ssh -i /tmp/user -p 2222 -o UserKnownHostsFile=/tmp/known -o BatchMode=yes"
$ssh -o StrictHostKeyChecking=accept-new admin@127.0.0.1 'echo LOGIN uid=$(id -u)'
$ssh -vvv admin@127.0.0.1 true 2>&1 | grep -o 'will use strict KEX ordering' || echo NO-STRICT-KEX
$ssh -W 127.0.0.1:2222 admin@127.0.0.1 </dev/null || echo FORWARDING-REFUSED
$ssh -o Ciphers=chacha20-poly1305@openssh.com admin@127.0.0.1 true || echo CHACHA-REFUSED
$ssh -o PubkeyAuthentication=no root@127.0.0.1 true || echo ROOT-REFUSED
kill $(cat /tmp/sshd.pid)
cat /tmp/sshd.log
"""


def test_a_key_login_over_loopback_and_what_sshd_refuses(root, tmp_path):
    """A real session from the set's ssh to the set's sshd (privilege separation: the child chrooted in /var/empty
    as user sshd, under the seccomp sandbox): a key login works; TCP forwarding, ChaCha20 (Terrapin) and root
    are refused. sshd must switch users, so this runs as real root in bubblewrap's own network namespace. The
    user and the keys' place are the image's (baselayout's admin, sshd_config's /etc/%u/ssh/authorized_keys, root's
    and read-only to the user, as clip-jails installs them in the ADMIN jail)."""
    if os.geteuid() != 0:
        pytest.skip("sshd's privilege separation needs real root")
    assert "admin:x:1000:1000:" in (root / "etc" / "passwd").read_text()
    (tmp_path / "etc.admin").mkdir()
    (tmp_path / "run.sh").write_text(LOGIN)
    ran = run(["bwrap", "--ro-bind", root, "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
               "--bind", tmp_path / "etc.admin", "/etc/admin",
               "--ro-bind", tmp_path / "run.sh", "/tmp/run.sh", "--unshare-net", "--unshare-pid", "--unshare-ipc",
               "--die-with-parent", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin:/sbin", "--setenv", "HOME",
               "/tmp", "/bin/sh", "/tmp/run.sh"], check=False, timeout=120)
    out = ran.stdout + ran.stderr
    assert ran.returncode == 0, out
    assert "LOGIN uid=1000" in out and "Accepted publickey for admin from 127.0.0.1" in out
    # Terrapin (CVE-2023-48795): both ends carry Debian's strict key exchange patch, so they agree on it.
    assert "will use strict KEX ordering" in out and "NO-STRICT-KEX" not in out
    assert "administratively prohibited" in out and "FORWARDING-REFUSED" in out
    assert "no matching cipher found" in out and "CHACHA-REFUSED" in out
    assert "root@127.0.0.1: Permission denied (publickey)" in out and "ROOT-REFUSED" in out


def test_the_debs_depend_on_the_libraries_packages(e2e_project, client_build):
    packaged = e2e_project.clipbuild("package", "client", "--json")
    assert packaged.returncode == 0, packaged.stderr[-3000:]
    debs = e2e_project.workdir / "steps" / "client" / "package" / "clip-core" / "out" / "debs"
    assert "package/clip-core" in json.loads(packaged.stdout)

    def field(name: str, key: str) -> str:
        return run(["dpkg-deb", "-f", debs / name, key]).stdout.strip()

    assert field(f"openssl_{OPENSSL}_amd64.deb", "Depends") == "musl (>= 1.2.3)"
    assert field(f"openssh_{OPENSSH}_amd64.deb", "Depends") == \
        f"openssl (>= {OPENSSL}), zlib (>= 1.2.13), musl (>= 1.2.3)"
    listing = run(["dpkg-deb", "--contents", debs / f"openssl_{OPENSSL}_amd64.deb"]).stdout
    assert "./usr/lib/libcrypto.so.3" in listing and "./usr/bin/openssl" in listing
    assert "include/" not in listing and ".a\n" not in listing and "libcrypto.so\n" not in listing
    listing = run(["dpkg-deb", "--contents", debs / f"openssh_{OPENSSH}_amd64.deb"]).stdout
    assert "./sbin/sshd" in listing and "./etc/ssh/sshd_config" in listing and "ssh_host_" not in listing
