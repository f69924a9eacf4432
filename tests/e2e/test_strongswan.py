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
CLIENT_PLUGINS = {"random", "nonce", "kdf", "x509", "revocation", "constraints", "pubkey", "pkcs1", "pkcs8", "pem",
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


# --- IKEv2 between the gateway's and the client's charon -----------------------------------------------------

@pytest.fixture(scope="module")
def gateway_root(e2e_project, client_build) -> Path:
    e2e_project.build("gateway")
    return e2e_project.workdir / "steps" / "gateway" / "build" / "clip-core" / "out" / "root"


def _pki(out: Path) -> None:
    """A P-384 CA, the gateway's and the client's certificates, and two CRLs with an authorityKeyIdentifier
    (strongSwan finds a CRL by its issuer's key identifier): one empty, one revoking the client."""
    def ssl(*args: str) -> None:
        run(["openssl", *args], cwd=out)
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-subj", "/C=FR/O=CLIP/CN=Test CA", "-days", "2")
    for name in ("gateway", "client"):
        ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/C=FR/O=CLIP/CN={name}")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2")
    (out / "ca.cnf").write_text("[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\ncrlnumber = crlnumber\n"
                                "default_md = sha384\ndefault_crl_days = 2\ncrl_extensions = ext\n"
                                "[ext]\nauthorityKeyIdentifier = keyid:always\n")
    (out / "index.txt").write_text("")
    (out / "crlnumber").write_text("01\n")
    ssl("ca", "-config", "ca.cnf", "-gencrl", "-keyfile", "ca.key", "-cert", "ca.pem", "-out", "good.crl")
    ssl("ca", "-config", "ca.cnf", "-revoke", "client.pem", "-keyfile", "ca.key", "-cert", "ca.pem")
    ssl("ca", "-config", "ca.cnf", "-gencrl", "-keyfile", "ca.key", "-cert", "ca.pem", "-out", "revoked.crl")


def _swanctl_dir(root: Path, pki: Path, target: Path, me: str, site: str) -> None:
    shutil.copytree(root / "etc" / "swanctl", target)
    for keep in target.rglob(".keep*"):
        keep.unlink()
    shutil.copy(pki / f"{me}.pem", target / "x509")
    shutil.copy(pki / f"{me}.key", target / "ecdsa")
    shutil.copy(pki / "ca.pem", target / "x509ca")
    (target / "conf.d" / "site.conf").write_text(site)


# Host side: two network namespaces joined by a veth pair, each charon under bubblewrap on its species' ROOT
# (the package's templates, plus the site file and credentials a machine's provisioning would add).
IKE_SCRIPT = r"""
set -u
gw=clipgw$$ cl=clipcl$$
trap 'touch $T/stop; sleep 1; ip netns del $gw; ip netns del $cl' EXIT
ip netns add $gw && ip netns add $cl
ip link add v$$g netns $gw type veth peer name v$$c netns $cl
ip -n $gw addr add 192.0.2.1/24 dev v$$g && ip -n $cl addr add 192.0.2.2/24 dev v$$c
for n in $gw $cl; do ip -n $n link set lo up; done
ip -n $gw link set v$$g up && ip -n $cl link set v$$c up
box() {  # ROOT swanctl-dir script
    bwrap --ro-bind $1/usr /usr --ro-bind $1/lib /lib --ro-bind $1/bin /bin --ro-bind $1/etc /etc \
        --bind $2 /etc/swanctl --dev /dev --proc /proc --tmpfs /run --tmpfs /tmp --bind $T /t \
        --setenv STRONGSWAN_CONF /t/strongswan.conf --unshare-ipc --unshare-pid --unshare-uts \
        --die-with-parent /bin/busybox sh /t/$3
}
ip netns exec $gw bash -c "$(declare -f box); T=$T; box $GW_ROOT $T/gw gw.sh" > $T/gw.out 2>&1 &
i=0; while [ ! -e $T/gw-ready ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip netns exec $cl bash -c "$(declare -f box); T=$T; box $CL_ROOT $T/cl cl.sh" > $T/first.out 2>&1
cp $T/revoked.crl $T/gw/x509crl/ca.crl && touch $T/reload
i=0; while [ -e $T/reload ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip netns exec $cl bash -c "$(declare -f box); T=$T; box $CL_ROOT $T/cl cl.sh" > $T/second.out 2>&1
"""
GW_SCRIPT = """/usr/libexec/ipsec/charon 2> /t/gw.log &
i=0; while [ ! -S /run/charon.vici ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
/usr/sbin/swanctl --load-all > /t/gw-load.log 2>&1
touch /t/gw-ready
while [ ! -e /t/stop ]; do
    [ -e /t/reload ] && /usr/sbin/swanctl --load-creds --clear > /t/gw-reload.log 2>&1 && rm /t/reload
    sleep 0.1
done
kill $! && wait
"""
CL_SCRIPT = """/usr/libexec/ipsec/charon 2> /dev/null &
i=0; while [ ! -S /run/charon.vici ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
/usr/sbin/swanctl --load-all > /dev/null
/usr/sbin/swanctl --initiate --ike clip --timeout 15
/usr/sbin/swanctl --list-sas
kill $! && wait
"""


@pytest.mark.skipif(shutil.which("bwrap") is None or shutil.which("ip") is None, reason="needs bubblewrap, ip")
def test_the_gateway_authenticates_the_client_and_refuses_it_once_revoked(root, gateway_root, tmp_path):
    """The species' templates as shipped: IKEv2 with aes256gcm16-prfsha384-ecp384, certificates both ways, the
    client gets a virtual IP from the gateway's pool, the gateway checks the client against its CRL (strict);
    once the CRL revokes the client, the gateway refuses it. Only the IKE_SA is asserted: installing the
    CHILD_SA's ESP state needs the running kernel's XFRM algorithms (the VM's, not necessarily the host's)."""
    pki, work = tmp_path / "pki", tmp_path / "t"
    pki.mkdir()
    work.mkdir()
    _pki(pki)
    shutil.copy(pki / "revoked.crl", work)
    _swanctl_dir(gateway_root, pki, work / "gw", "gateway", "")
    shutil.copy(pki / "good.crl", work / "gw" / "x509crl" / "ca.crl")
    _swanctl_dir(root, pki, work / "cl", "client", 'connections { clip { remote_addrs = 192.0.2.1\n'
                 '    remote { id = "C=FR, O=CLIP, CN=gateway" } } }\n')
    (work / "strongswan.conf").write_text("include /etc/strongswan.conf\n"
                                          "charon { filelog { stderr { default = 1 } } }\n")
    (work / "gw.sh").write_text(GW_SCRIPT)
    (work / "cl.sh").write_text(CL_SCRIPT)
    run(["bash", "-c", IKE_SCRIPT], env={"T": str(work), "GW_ROOT": str(gateway_root), "CL_ROOT": str(root)},
        timeout=120)
    first, second = (work / "first.out").read_text(), (work / "second.out").read_text()
    gateway = (work / "gw.log").read_text()
    assert "selected proposal: IKE:AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384" in first, first
    assert "IKE_SA clip[1] established" in first and "installing new virtual IP 10.254.0.1" in first, first
    assert 'checking certificate status of "C=FR, O=CLIP, CN=client"' in gateway
    assert "certificate status is good" in gateway
    assert "certificate was revoked" in gateway, gateway
    assert "received AUTHENTICATION_FAILED notify error" in second and "established" not in second, second
