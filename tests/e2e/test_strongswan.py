"""End to end: strongSwan (net-vpn/strongswan) as the client's package set built it, on the pipeline's musl.

The ELF files pass the image's own checks (clipbuild.image.elfcheck) in the set's ROOT; charon and swanctl are
hardened PIEs with raised thread stacks; and charon really runs: started under bubblewrap in a throwaway network
namespace, on the ROOT's files, it loads its plugins (OpenSSL's among them) and answers swanctl over vici.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from clipbuild.core.run import run
from clipbuild.image import elfcheck

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CHARON = "usr/libexec/ipsec/charon"
SWANCTL = "usr/sbin/swanctl"
PLUGINS = "usr/lib/ipsec/plugins"
# What the client's charon loads (the ebuild's configure list; resolve is the client's, USE=core-rm).
CLIENT_PLUGINS = {"random", "nonce", "x509", "revocation", "constraints", "pubkey", "pkcs1", "pkcs8", "pem",
                  "openssl", "kernel-netlink", "resolve", "socket-default", "vici"}
THREAD_STACK = 1 << 20  # -z stack-size: musl's default thread stack for the process (ebuild, src_configure)


@pytest.fixture(scope="module")
def root(e2e_project, client_build) -> Path:
    return e2e_project.workdir / "steps" / "client" / "build" / "clip-core" / "out" / "root"


def _strongswan_elf_files(root: Path) -> list[str]:
    files = [CHARON, SWANCTL, *(f"usr/lib/{n}" for n in ("libstrongswan.so.0", "libcharon.so.0", "libvici.so.0"))]
    return files + sorted(f"{PLUGINS}/{p.name}" for p in (root / PLUGINS).glob("libstrongswan-*.so"))


def test_every_strongswan_elf_file_passes_the_image_checks(root):
    """PIE, full RELRO, stack protector, every NEEDED library found in the slot (elfcheck's own rules)."""
    files = _strongswan_elf_files(root)
    assert len(files) == 5 + len(CLIENT_PLUGINS)
    for path in files:
        checked, failures = elfcheck.check_file(root, path)
        assert failures == [], path
        assert checked is not None and checked.kind == ("pie-executable" if path in (CHARON, SWANCTL)
                                                        else "shared-library"), path


@pytest.mark.parametrize("program", [CHARON, SWANCTL])
def test_charon_and_swanctl_are_hardened_pies_on_musl(root, program):
    header = run(["readelf", "-h", root / program]).stdout
    dynamic = run(["readelf", "-d", root / program]).stdout
    segments = run(["readelf", "-lW", root / program]).stdout
    assert "DYN (Position-Independent Executable file)" in header
    assert "BIND_NOW" in dynamic and "PIE" in dynamic and "GNU_RELRO" in segments
    assert "[Requesting program interpreter: /lib/ld-musl-x86_64.so.1]" in segments
    assert "RPATH" not in dynamic and "RUNPATH" not in dynamic  # the libraries are in /usr/lib
    assert "__stack_chk_fail" in run(["readelf", "--dyn-syms", "-W", root / program]).stdout
    for library in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic):
        assert (root / "usr" / "lib" / library).exists(), library
    # PT_GNU_STACK's size, which musl takes as the default stack of every thread (128 KiB otherwise).
    stack = next(line.split() for line in segments.splitlines() if line.split()[:1] == ["GNU_STACK"])
    assert int(stack[5], 16) == THREAD_STACK and stack[6] == "RW"


def _in_root(root: Path, scratch: Path, script: str) -> str:
    """Run a busybox shell script on the ROOT's files (read-only) under bubblewrap, with no network but a
    loopback of its own (a new network namespace), a private /run (charon's PID file and vici socket), as
    root in the namespaces: charon needs CAP_NET_ADMIN for its netlink sockets there."""
    (scratch / "run.sh").write_text(script)
    # strongswan.conf for the test: the package's, plus charon's log on stderr (it logs to syslog otherwise).
    (scratch / "strongswan.conf").write_text("include /etc/strongswan.conf\n"
                                              "charon { filelog { stderr { default = 1 } } }\n")
    binds = [a for d in ("usr", "lib", "bin", "etc") for a in ("--ro-bind", root / d, f"/{d}")]
    result = run(["bwrap", *binds, "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/run", "--tmpfs", "/tmp",
                  "--ro-bind", scratch, "/t", "--setenv", "STRONGSWAN_CONF", "/t/strongswan.conf",
                  "--unshare-all", "--die-with-parent", "/bin/busybox", "sh", "/t/run.sh"], timeout=60)
    return result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_charon_starts_loads_openssl_and_answers_swanctl(root, tmp_path):
    out = _in_root(root, tmp_path, """
/usr/libexec/ipsec/charon --version
/usr/libexec/ipsec/charon 2> /tmp/charon.log &
i=0
while [ ! -S /run/charon.vici ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
/usr/sbin/swanctl --version
/usr/sbin/swanctl --stats
/usr/sbin/swanctl --list-algs
kill $! && wait
cat /tmp/charon.log
""")
    assert "Linux strongSwan 5.9.8" in out
    assert re.search(r"strongSwan swanctl 5\.9\.8", out), out
    loaded = re.search(r"loaded plugins: (.+)", out)
    assert loaded, out
    assert set(loaded.group(1).split()) == CLIENT_PLUGINS | {"charon"}
    # IKE's algorithms come from OpenSSL: CLIP's proposal, aes256gcm16-prfsha384-ecp384.
    assert re.search(r"AES_GCM_16\[openssl\]", out) and re.search(r"PRF_HMAC_SHA2_384\[openssl\]", out), out
    assert re.search(r"ECP_384\[openssl\]", out), out
    assert "unmet dependency" not in out and "failed to load" not in out, out
